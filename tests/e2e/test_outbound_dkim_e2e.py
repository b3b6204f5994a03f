"""DKIM signing end to end: keys made with ``mailserverd dkim generate``, their
records published in the test DNS server as the command printed them, mail
submitted to a second mailserverd, and the delivered message's signatures
checked by dkimpy against the published keys (and by the peer's own checks)."""

from __future__ import annotations

import json
import uuid

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import wait_for
from outbound import ALICE, BOB_REMOTE, DEADLINE, inbox, peer_daemon, publish_mx, sender_daemon, submit

pytestmark = pytest.mark.e2e


def authored_by_alice(subject: str) -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: <{BOB_REMOTE}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\nMIME-Version: 1.0\r\n\r\n"
            "Signed on the way out.\r\n.leading dot\r\n").encode()


def publish(dns_server, printed: str) -> str:
    """Publish the zone line ``dkim generate`` printed; return its owner name."""
    [line] = [line for line in printed.splitlines() if " IN TXT " in line]
    name, _, strings = line.partition(" IN TXT ")
    dns_server.add(name, "TXT", strings)
    return name


def key_from_test_dns(dns_server):
    """dkimpy's ``dnsfunc``, asking the test DNS server over UDP."""
    host, port = dns_server.address.split(":")

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        answer = dns.query.udp(dns.message.make_query(name.decode(), "TXT"), host, port=int(port), timeout=timeout)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)
        return None
    return lookup


def test_a_submitted_message_is_delivered_with_rsa_and_ed25519_signatures_that_verify(tmp_path, dns_server):
    publish_mx(dns_server, "remote.test")
    b = peer_daemon(tmp_path, dns_server)
    b.start()
    a = sender_daemon(tmp_path, dns_server, b.ports["smtp"])
    refused = a.cli("dkim", "generate", "remote.test", check=False)
    assert refused.returncode == 1 and "not a local domain" in refused.stderr
    names = [publish(dns_server, a.cli("dkim", "generate", "example.test", "--selector", selector,
                                       "--algorithm", algorithm).stdout)
             for selector, algorithm in (("rsa1", "rsa"), ("ed1", "ed25519"))]
    assert names == ["rsa1._domainkey.example.test.", "ed1._domainkey.example.test."]
    listed = json.loads(a.cli("dkim", "list", "--json").stdout)
    assert [(k["selector"], k["algorithm"], k["bits"]) for k in listed] == [("ed1", "ed25519", 256),
                                                                           ("rsa1", "rsa", 2048)]
    assert "rsa1  rsa-sha256  2048 bits  rsa1._domainkey.example.test" in a.cli("dkim", "list").stdout
    a.start()
    sent = authored_by_alice("signed")
    submit(a, [BOB_REMOTE], sent)
    [got] = wait_for(lambda: inbox(b, BOB_REMOTE), timeout=DEADLINE, what="the signed message at the peer")
    assert got.endswith(sent)
    signatures = [line for line in got.split(b"\r\n") if line.startswith(b"DKIM-Signature:")]
    assert len(signatures) == 2
    lookup = key_from_test_dns(dns_server)
    verifier = dkim.DKIM(got)
    algorithms = set()
    for index in range(2):
        assert verifier.verify(idx=index, dnsfunc=lookup), f"signature {index} does not verify"
        assert verifier.domain == b"example.test"
        algorithms.add(verifier.signature_fields[b"a"])
    assert algorithms == {b"rsa-sha256", b"ed25519-sha256"}
    # The peer's own inbound checks say the same (RFC 8601 Authentication-Results).
    results = got[:got.index(b"\r\n\r\n")].decode()
    assert results.count("dkim=pass") == 2 and "header.d=example.test" in results
    assert not verifier.verify(idx=0, dnsfunc=lambda name, timeout=5: None)  # no key: no pass
    a.stop()
    b.stop()
