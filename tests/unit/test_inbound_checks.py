"""InboundChecks end to end against the test DNS server: SPF, DKIM, DMARC, DNSBL, score.

Each test publishes records, runs ``InboundChecks.check`` on the reactor
(pytest-twisted) and reads the verdict: the Authentication-Results and
X-Spam-* fields on top of the message, the action and the reply.
"""

from __future__ import annotations

import base64
import re
import threading

import dkim as dkimpy
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.internet.defer import gatherResults

from mailserverd.delivery import spf as spf_module
from mailserverd.delivery.checks import Envelope, InboundChecks, InboundSettings

AUTHSERV = "mx.ours.test"
CLIENT = "192.0.2.10"
OTHER_CLIENT = "198.51.100.7"


@pytest.fixture
def server(dns_server):
    return dns_server


def make_checks(server, **overrides) -> InboundChecks:
    """Checks against ``server``, without a DNS cache: tests change records between
    lookups (the cache has its own tests in test_inbound_dns.py)."""
    overrides.setdefault("dns_cache_entries", 0)
    settings = InboundSettings(AUTHSERV, ("127.0.0.1", server.port), 3.0, **overrides)
    return InboundChecks(settings)


@pytest.fixture
def checks(server):
    running = make_checks(server)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def message(from_="alice@example.test", subject="Lunch on Friday", extra=b"", body=b"See you there.\r\n"):
    return (f"From: Alice <{from_}>\r\nTo: bob@ours.test\r\nSubject: {subject}\r\n"
            "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n").encode() \
        + extra + b"\r\n" + body


def envelope(mail_from="alice@example.test", client=CLIENT, helo="mail.example.test"):
    return Envelope(client, helo, mail_from, ("bob@ours.test",))


def auth_results(verdict) -> str:
    """The unfolded value of our Authentication-Results field (the first field)."""
    match = re.match(rb"Authentication-Results: (.*?)\r\n(?![ \t])", verdict.message, re.S)
    assert match, verdict.message[:300]
    return re.sub(r"\r\n[ \t]+", " ", match.group(1).decode())


def sign(raw: bytes, private_pem: bytes, domain=b"example.test", selector=b"sel") -> bytes:
    signature = dkimpy.sign(raw, selector, domain, private_pem,
                            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + raw


# --- SPF (RFC 7208), each result visible in Authentication-Results

@pytest.mark.parametrize("record, result", [
    ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
    ("v=spf1 ip4:203.0.113.0/24 -all", "fail"),
    ("v=spf1 ip4:203.0.113.0/24 ~all", "softfail"),
    ("v=spf1 ?all", "neutral"),
    ("v=spf1 ip4:192.0.2.0/24 bogus:x -all", "permerror"),
    ("v=spf1 a:mail.example.test -all", "pass"),
    ("v=spf1 include:spf.provider.test -all", "pass"),
])
@pytest_twisted.inlineCallbacks
def test_spf_results(server, checks, record, result):
    server.add("example.test", "TXT", f'"{record}"')
    server.add("mail.example.test", "A", CLIENT)
    server.add("spf.provider.test", "TXT", '"v=spf1 ip4:192.0.2.10 -all"')
    verdict = yield checks.check(message(), envelope())
    assert f"spf={result} smtp.mailfrom=alice@example.test" in auth_results(verdict)
    assert verdict.results["spf"] == result


@pytest_twisted.inlineCallbacks
def test_spf_none_without_record(server, checks):
    server.add("example.test", "A", "192.0.2.1")
    verdict = yield checks.check(message(), envelope())
    assert "spf=none smtp.mailfrom=alice@example.test" in auth_results(verdict)


@pytest_twisted.inlineCallbacks
def test_spf_temperror_on_servfail(server, checks):
    server.fail("example.test")
    verdict = yield checks.check(message(), envelope())
    assert "spf=temperror smtp.mailfrom=alice@example.test" in auth_results(verdict)
    assert verdict.action == "deliver"


@pytest_twisted.inlineCallbacks
def test_spf_helo_identity_and_null_reverse_path(server, checks):
    server.add("mail.example.test", "TXT", '"v=spf1 ip4:192.0.2.10 -all"')
    verdict = yield checks.check(message(), envelope(mail_from=""))
    text = auth_results(verdict)
    assert "spf=pass smtp.helo=mail.example.test" in text
    assert "smtp.mailfrom" not in text
    assert verdict.results["spf"] == "pass"   # RFC 7208 §2.4: postmaster@HELO


@pytest_twisted.inlineCallbacks
def test_address_literal_helo_is_spf_none(server, checks):
    verdict = yield checks.check(message(), envelope(helo="[192.0.2.10]"))
    assert 'spf=none smtp.helo="[192.0.2.10]"' in auth_results(verdict)


# --- DKIM (RFC 6376, 8301, 8463)

@pytest_twisted.inlineCallbacks
def test_dkim_pass_names_domain_selector_and_signature(server, checks, rsa_key):
    private, public = rsa_key
    server.add("sel._domainkey.example.test", "TXT", f'"v=DKIM1; k=rsa; p={public}"')
    signed = sign(message(), private)
    verdict = yield checks.check(signed, envelope())
    b_value = re.search(rb"\bb=([A-Za-z0-9+/]{12})", signed.replace(b"\r\n ", b"")).group(1).decode()
    assert f"dkim=pass header.d=example.test header.s=sel header.b={b_value}" in auth_results(verdict)
    assert verdict.results["dkim"] == ["pass"]
    assert verdict.message.endswith(signed)   # the received bytes are kept exactly


@pytest_twisted.inlineCallbacks
def test_dkim_modified_body_fails(server, checks, rsa_key):
    private, public = rsa_key
    server.add("sel._domainkey.example.test", "TXT", f'"v=DKIM1; k=rsa; p={public}"')
    tampered = sign(message(), private).replace(b"See you there.", b"See you THERE.")
    verdict = yield checks.check(tampered, envelope())
    assert "dkim=fail header.d=example.test header.s=sel" in auth_results(verdict)
    assert "DKIM_INVALID" in verdict.results["tests"]


@pytest_twisted.inlineCallbacks
def test_dkim_none_without_signature(server, checks):
    verdict = yield checks.check(message(), envelope())
    assert "dkim=none" in auth_results(verdict)


@pytest_twisted.inlineCallbacks
def test_dkim_missing_key_is_permerror_and_servfail_temperror(server, checks, rsa_key):
    private, _public = rsa_key
    signed = sign(message(), private)
    verdict = yield checks.check(signed, envelope())
    assert "dkim=permerror header.d=example.test" in auth_results(verdict)
    server.fail("sel._domainkey.example.test")
    verdict = yield checks.check(signed, envelope())
    assert "dkim=temperror header.d=example.test" in auth_results(verdict)


@pytest_twisted.inlineCallbacks
def test_dkim_one_result_per_signature(server, checks, rsa_key):
    private, public = rsa_key
    server.add("sel._domainkey.example.test", "TXT", f'"v=DKIM1; k=rsa; p={public}"')
    twice = sign(sign(message(), private, domain=b"nokey.test", selector=b"s2"), private)
    verdict = yield checks.check(twice, envelope())
    text = auth_results(verdict)
    assert "dkim=pass header.d=example.test header.s=sel" in text
    assert "dkim=permerror header.d=nokey.test header.s=s2" in text


@pytest_twisted.inlineCallbacks
def test_dkim_ed25519(server, checks):
    pytest.importorskip("nacl", reason="dkimpy needs pynacl for ed25519 (RFC 8463)")
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    server.add("ed._domainkey.example.test", "TXT", f'"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"')
    raw = message()
    signed = dkimpy.sign(raw, b"ed", b"example.test", base64.b64encode(seed),
                         signature_algorithm=b"ed25519-sha256") + raw
    verdict = yield checks.check(signed, envelope())
    assert "dkim=pass header.d=example.test header.s=ed" in auth_results(verdict)


@pytest_twisted.inlineCallbacks
def test_dkim_rsa_sha1_is_not_accepted(server, checks, rsa_key):
    private, public = rsa_key
    server.add("sel._domainkey.example.test", "TXT", f'"v=DKIM1; k=rsa; p={public}"')
    raw = message()
    signed = dkimpy.sign(raw, b"sel", b"example.test", private, signature_algorithm=b"rsa-sha1") + raw
    verdict = yield checks.check(signed, envelope())
    assert "dkim=policy header.d=example.test header.s=sel" in auth_results(verdict)  # RFC 8301 §3.1


@pytest_twisted.inlineCallbacks
def test_dkim_malformed_signature_is_permerror(server, checks):
    extra = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel\r\n"
    verdict = yield checks.check(extra + message(), envelope())
    assert "dkim=permerror header.d=example.test header.s=sel" in auth_results(verdict)


# --- DMARC (RFC 7489)

@pytest_twisted.inlineCallbacks
def test_dmarc_pass_via_aligned_spf(server, checks):
    server.add("bounces.example.test", "TXT", '"v=spf1 ip4:192.0.2.10 -all"')
    server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject"')
    verdict = yield checks.check(message(), envelope(mail_from="b@bounces.example.test"))
    assert "dmarc=pass header.from=example.test" in auth_results(verdict)
    assert verdict.action == "deliver"


@pytest_twisted.inlineCallbacks
def test_dmarc_pass_via_relaxed_dkim_on_a_subdomain(server, checks, rsa_key):
    private, public = rsa_key
    server.add("sel._domainkey.mail.example.test", "TXT", f'"v=DKIM1; k=rsa; p={public}"')
    server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject"')
    signed = sign(message(), private, domain=b"mail.example.test")
    # SPF fails for an unaligned envelope; the aligned DKIM signature carries DMARC.
    server.add("elsewhere.test", "TXT", '"v=spf1 -all"')
    verdict = yield checks.check(signed, envelope(mail_from="x@elsewhere.test"))
    text = auth_results(verdict)
    assert "spf=fail" in text and "dkim=pass header.d=mail.example.test" in text
    assert "dmarc=pass header.from=example.test" in text
    assert verdict.action == "deliver"


@pytest_twisted.inlineCallbacks
def test_dmarc_fail_with_p_reject_is_refused(server, checks):
    server.add("example.test", "TXT", '"v=spf1 ip4:203.0.113.0/24 -all"')
    server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject"')
    verdict = yield checks.check(message(), envelope())
    assert "dmarc=fail header.from=example.test" in auth_results(verdict)
    assert verdict.action == "reject"
    assert (verdict.reply.code, verdict.reply.enhanced) == ("550", "5.7.1")


@pytest_twisted.inlineCallbacks
def test_dmarc_reject_as_quarantine_when_configured(server):
    server.add("example.test", "TXT", '"v=spf1 -all"')
    server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject"')
    quarantining = make_checks(server, dmarc_reject_action="quarantine")
    quarantining.start()
    try:
        verdict = yield quarantining.check(message(), envelope())
    finally:
        quarantining.stop()
    assert (verdict.action, verdict.reply) == ("junk", None)


@pytest_twisted.inlineCallbacks
def test_dmarc_p_quarantine_goes_to_junk_and_p_none_is_delivered(server, checks):
    server.add("example.test", "TXT", '"v=spf1 -all"')
    server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=quarantine"')
    verdict = yield checks.check(message(), envelope())
    assert verdict.action == "junk"
    server.clear()
    server.add("example.test", "TXT", '"v=spf1 -all"')
    server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=none"')
    verdict = yield checks.check(message(), envelope())
    assert "dmarc=fail header.from=example.test" in auth_results(verdict)
    assert verdict.action == "deliver" and verdict.reply is None


@pytest_twisted.inlineCallbacks
def test_dmarc_none_without_record_and_org_domain_record_used(server, checks):
    verdict = yield checks.check(message(), envelope())
    assert "dmarc=none header.from=example.test" in auth_results(verdict)
    server.add("_dmarc.example.co.uk", "TXT", '"v=DMARC1; p=reject; sp=quarantine"')
    verdict = yield checks.check(message(from_="a@a.b.example.co.uk"), envelope(mail_from=""))
    assert "dmarc=fail header.from=a.b.example.co.uk" in auth_results(verdict)
    assert verdict.action == "junk"   # sp= applies to the subdomain


# --- forged results, DNSBL, thresholds

@pytest_twisted.inlineCallbacks
def test_forged_results_with_our_authserv_id_are_removed(server, checks):
    extra = (b"Authentication-Results: mx.ours.test; dmarc=pass header.from=example.test\r\n"
             b"Authentication-Results: relay.other.test; spf=pass\r\n")
    verdict = yield checks.check(message(extra=extra), envelope())
    assert verdict.message.count(b"Authentication-Results: mx.ours.test;") == 1
    assert b"dmarc=pass header.from=example.test" not in verdict.message
    assert b"Authentication-Results: relay.other.test; spf=pass\r\n" in verdict.message


@pytest_twisted.inlineCallbacks
def test_dnsbl_listing_adds_its_score(server):
    server.add("10.2.0.192.bl.test", "A", "127.0.0.2")
    server.add("10.2.0.192.other-bl.test", "A", "192.0.2.1")   # not 127.0.0.x: no listing
    listing = make_checks(server, dnsbl_zones=("bl.test", "other-bl.test", "clean-bl.test"),
                          junk_threshold=5.0, reject_threshold=20.0)
    listing.start()
    try:
        listed = yield listing.check(message(), envelope())
        clean = yield listing.check(message(), envelope(client=OTHER_CLIENT))
    finally:
        listing.stop()
    assert listed.results["dnsbl"] == ["bl.test"]
    assert listed.score == 5.0 and listed.action == "junk"
    assert b"X-Spam-Score: 5.0\r\n" in listed.message
    assert b"X-Spam-Status: Yes, score=5.0 required=5.0 tests=DNSBL_LISTED:bl.test\r\n" in listed.message
    assert (clean.score, clean.action) == (0.0, "deliver")
    assert b"X-Spam-Status: No, score=0.0 required=5.0 tests=none\r\n" in clean.message


@pytest_twisted.inlineCallbacks
def test_reject_threshold_refuses_with_550(server):
    server.add("10.2.0.192.bl.test", "A", "127.0.0.4")
    strict = make_checks(server, dnsbl_zones=("bl.test",), junk_threshold=2.0, reject_threshold=6.0)
    strict.start()
    try:
        verdict = yield strict.check(message(subject="CHEAP PILLS ONLINE TODAY"), envelope())
    finally:
        strict.stop()
    assert verdict.score == 6.0
    assert verdict.action == "reject"
    assert (verdict.reply.code, verdict.reply.enhanced) == ("550", "5.7.1")


@pytest_twisted.inlineCallbacks
def test_message_is_byte_identical_below_our_fields(server, checks):
    raw = message()
    verdict = yield checks.check(raw, envelope())
    assert verdict.message.startswith(b"Authentication-Results: mx.ours.test;")
    head, _, rest = verdict.message.partition(b"X-Spam-Status: ")
    assert rest.split(b"\r\n", 1)[1] == raw


# --- off the reactor thread, in a bounded pool

@pytest_twisted.inlineCallbacks
def test_checks_run_in_a_bounded_pool_off_the_reactor_thread(server, monkeypatch):
    server.add("example.test", "TXT", '"v=spf1 ip4:192.0.2.0/24 -all"')
    threads: set[str] = set()
    active = [0, 0]           # now, most at once
    lock = threading.Lock()
    original = spf_module.check_identity

    def spying(*args):
        with lock:
            threads.add(threading.current_thread().name)
            active[0] += 1
            active[1] = max(active)
        try:
            return original(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(spf_module, "check_identity", spying)
    pooled = make_checks(server, pool_size=2)
    assert pooled._pool.max == 2
    pooled.start()
    try:
        verdicts = yield gatherResults(
            [pooled.check(message(), envelope()) for _ in range(8)])
    finally:
        pooled.stop()
    assert [v.results["spf"] for v in verdicts] == ["pass"] * 8
    assert threading.main_thread().name not in threads
    assert threads and len(threads) <= 2
    assert 1 <= active[1] <= 2


@pytest_twisted.inlineCallbacks
def test_a_broken_check_is_logged_and_the_message_delivered(server, monkeypatch):
    def broken(*args):
        raise RuntimeError("bug in a check")

    monkeypatch.setattr(spf_module, "check_identity", broken)
    failing = make_checks(server)
    failing.start()
    try:
        verdict = yield failing.check(message(), envelope())
    finally:
        failing.stop()
    assert verdict.action == "deliver"
    assert "spf=temperror smtp.mailfrom=alice@example.test" in auth_results(verdict)
