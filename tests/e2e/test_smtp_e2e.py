"""SMTP receiving end to end: the real daemon, real TLS, smtplib and raw sockets.

Covers the listener policies (MX, submission, SMTPS), AUTH, the extensions
(CHUNKING, SMTPUTF8, DSN, LIMITS, SIZE), recipients (plus-addressing, quota,
relay), and the inbound pipeline's headers as they land in the mailbox.
"""

from __future__ import annotations

import base64
import imaplib
import smtplib
import socket
import ssl

import pytest

from clients import make_message

pytestmark = pytest.mark.e2e


def imap_messages(daemon, user: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every message in ``mailbox`` of ``user``, over IMAPS."""
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    try:
        client.login(user, daemon.users[user])
        typ, data = client.select(mailbox)
        assert typ == "OK", data
        count = int(data[0])
        found = []
        for number in range(1, count + 1):
            typ, parts = client.fetch(str(number), "(BODY.PEEK[])")
            found.append(parts[0][1])
        return found
    finally:
        client.logout()


def submission(daemon, tls: bool = True) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", daemon.ports["submission"], timeout=30)
    client.ehlo("laptop.example.test")
    if tls:
        client.starttls(context=daemon.ssl_context())
        client.ehlo("laptop.example.test")
    return client


def header_block(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


# --- submission: Thunderbird-like settings (587, STARTTLS, AUTH PLAIN)


def test_thunderbird_like_submission_reaches_inbox_with_auth_results(daemon):
    sent = make_message("from thunderbird")
    with submission(daemon) as client:
        assert "PLAIN" in client.esmtp_features["auth"].split()
        client.login("alice@example.test", daemon.users["alice@example.test"],
                     initial_response_ok=True)
        assert client.sendmail("alice@example.test", ["bob@example.test"], sent) == {}
    stored, = imap_messages(daemon, "bob@example.test")
    assert stored.endswith(sent)
    headers = header_block(stored).decode()
    assert headers.startswith("Received: from laptop.example.test")
    assert "with ESMTPSA id" in headers
    assert "(Authenticated sender: alice@example.test)" in headers
    assert "(using TLSv1.3 with cipher" in headers
    assert "Authentication-Results: mx.example.test;\r\n\tauth=pass smtp.auth=alice@example.test" \
        in headers


def test_submission_requires_auth_and_tls_for_auth(daemon):
    with submission(daemon, tls=False) as client:
        assert "auth" not in client.esmtp_features  # RFC 4954 §4: none before TLS here
        assert client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@example.test\0x").decode()) \
            == (538, b"5.7.11 Encryption required for requested authentication mechanism")
        assert client.docmd("MAIL", "FROM:<alice@example.test>") == (530, b"5.7.0 Authentication required")


def test_submission_checks_sender_and_queues_remote_recipients(daemon):
    with submission(daemon) as client:
        client.login("alice@example.test", daemon.users["alice@example.test"])
        assert client.docmd("MAIL", "FROM:<bob@example.test>")[0] == 553
        assert client.docmd("MAIL", "FROM:<alice+lists@example.test>")[0] == 250
        assert client.docmd("RCPT", "TO:<someone@elsewhere.test>") == (250, b"2.1.5 Recipient ok")
        assert client.docmd("RCPT", "TO:<bob@example.test>")[0] == 250


def test_wrong_password_is_535_then_421_after_the_limit(daemon):
    wrong = "PLAIN " + base64.b64encode(b"\0alice@example.test\0wrong").decode()
    with submission(daemon) as client:
        assert client.docmd("AUTH", wrong) == (535, b"5.7.8 Authentication credentials invalid")
        assert client.docmd("AUTH", wrong)[0] == 535
        assert client.docmd("AUTH", wrong)[0] == 421  # smtp_auth_failures_max = 3
    assert "login user='alice@example.test' ip=127.0.0.1 mechanism=PLAIN result=failed" in daemon.log()


def test_smtps_with_scram(daemon):
    context = daemon.ssl_context()
    with smtplib.SMTP_SSL("127.0.0.1", daemon.ports["smtps"], context=context, timeout=30) as client:
        client.ehlo("laptop.example.test")
        assert client.esmtp_features["auth"].split()[0] == "SCRAM-SHA-256"
        assert "STARTTLS" not in client.esmtp_features


# --- the MX


def test_mx_offers_no_auth_and_never_relays(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.starttls(context=daemon.ssl_context())
        client.ehlo("mta.remote.test")
        assert "auth" not in client.esmtp_features
        assert client.docmd("AUTH", "PLAIN")[0] == 503
        assert client.docmd("MAIL", "FROM:<x@remote.test>")[0] == 250
        assert client.docmd("RCPT", "TO:<victim@elsewhere.test>") == (550, b"5.7.1 Relay access denied")
        assert client.docmd("RCPT", "TO:<nobody@example.test>") == (550, b"5.1.1 No such user here")
        assert client.docmd("RCPT", "TO:<alice+news@example.test>")[0] == 250


def test_plus_address_is_delivered_to_the_user(daemon):
    sent = make_message("plus")
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mta.remote.test")
        assert client.sendmail("x@remote.test", ["alice+shop@example.test"], sent) == {}
    stored, = imap_messages(daemon, "alice@example.test")
    assert stored.endswith(sent)
    assert b"for <alice+shop@example.test>" in stored


def test_ehlo_lists_the_extensions(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mta.remote.test")
        for keyword in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                        "chunking", "dsn", "limits", "starttls"):
            assert keyword in client.esmtp_features, keyword
        assert client.esmtp_features["limits"] == "RCPTMAX=100"


def test_quota_full_is_452_per_recipient(daemon):
    daemon.cli("user", "add", "small@example.test", "--password-stdin", "--quota", "1000",
               stdin="small-secret-9\n")
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mta.remote.test")
        assert client.docmd("MAIL", "FROM:<x@remote.test> SIZE=5000")[0] == 250
        assert client.docmd("RCPT", "TO:<small@example.test>") == (452, b"4.2.2 Mailbox full")
        assert client.docmd("RCPT", "TO:<alice@example.test>")[0] == 250


def test_dsn_and_smtputf8_parameters(daemon):
    sent = ("From: Jöran <jöran@exämple.test>\r\nTo: alice@example.test\r\nSubject: grüße\r\n"
            "\r\nHej\r\n").encode("utf-8")
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mta.remote.test")
        client.command_encoding = "utf-8"
        assert client.docmd("MAIL", "FROM:<jöran@exämple.test>")[0] == 553  # no SMTPUTF8
        client.rset()
        refused = client.sendmail("jöran@exämple.test", ["alice@example.test"], sent,
                                  mail_options=["SMTPUTF8", "RET=HDRS", "ENVID=QQ+2B1"],
                                  rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;alice@example.test"])
        assert refused == {}
        assert client.docmd("MAIL", "FROM:<a@remote.test> RET=BOGUS")[0] == 501


# --- raw sockets: CHUNKING, smuggling, STARTTLS injection, floods


class Raw:
    """A line-oriented raw SMTP client over a plain socket."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[bytes]]:
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_bdat_chunks_arrive_byte_identical(daemon):
    sent = make_message("chunked", body_lines=400)
    raw = Raw(daemon.ports["smtp"])
    cut = len(sent) // 3
    raw.send(b"EHLO mta.remote.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    assert [raw.reply()[0] for _ in range(3)] == [250, 250, 250]
    raw.send(b"BDAT %d\r\n" % cut + sent[:cut] + b"BDAT %d LAST\r\n" % (len(sent) - cut) + sent[cut:])
    assert raw.reply()[1] == [b"250 2.0.0 %d octets received\r\n" % cut]
    code, lines = raw.reply()
    assert code == 250 and b"queued as" in lines[0]
    raw.send(b"QUIT\r\n")
    assert raw.reply()[0] == 221
    raw.close()
    stored, = imap_messages(daemon, "alice@example.test")
    assert stored.endswith(sent)


def test_smuggling_attempts_are_refused_and_never_split_a_message(daemon):
    raw = Raw(daemon.ports["smtp"])
    raw.send(b"EHLO mta.remote.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
             b"DATA\r\n")
    assert [raw.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    # "\n.\n" and "\r.\n" never end the data; the bare line ends refuse it.
    raw.send(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@remote.test>\r\n"
             b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n")
    assert raw.reply()[1] == [b"550 5.6.0 Message rejected: bare CR or LF in data\r\n"]
    raw.send(b"NOOP\r\n")
    assert raw.reply()[0] == 250
    raw.close()
    assert imap_messages(daemon, "alice@example.test") == []
    assert imap_messages(daemon, "bob@example.test") == []


def test_starttls_injection_is_discarded(daemon):
    raw = Raw(daemon.ports["smtp"])
    raw.send(b"EHLO mta.remote.test\r\n")
    raw.reply()
    raw.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
    assert raw.reply()[0] == 220
    tls = daemon.ssl_context().wrap_socket(raw.sock, server_hostname="localhost")
    tls.sendall(b"MAIL FROM:<x@remote.test>\r\n")
    reply = tls.recv(4096)
    assert reply.startswith(b"503 5.5.1"), reply  # state reset: EHLO needed again, injected MAIL gone
    tls.sendall(b"EHLO mta.remote.test\r\nMAIL FROM:<x@remote.test>\r\n")
    data = b""
    while b"Sender ok" not in data:
        chunk = tls.recv(4096)
        assert chunk
        data += chunk
    assert b"injected" not in data
    tls.close()


def send_until_refused(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may cut us off midway (that is the point)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_floods_and_bad_bytes_never_hurt_the_daemon(daemon):
    raw = Raw(daemon.ports["smtp"])
    raw.send(b"NOOP\0\r\n")
    assert raw.reply()[0] == 500
    send_until_refused(raw.sock, b"X" * (10 * 1024 * 1024) + b"\r\n")  # a 10 MB line
    try:
        assert raw.reply()[0] == 421
    except (ConnectionResetError, AssertionError):
        pass  # the 421 may be lost to the reset of a connection closed with unread data
    raw.close()
    raw = Raw(daemon.ports["smtp"])
    raw.send(b"EHLO mta.remote.test\r\n")
    raw.reply()
    raw.send(b"MAIL FROM:<x@remote.test> SIZE=999999999999\r\n")
    assert raw.reply()[0] == 552
    raw.send(b"MAIL FROM:<x@remote.test>\r\n")
    assert raw.reply()[0] == 250
    raw.send(b"".join(b"RCPT TO:<r%d@example.test>\r\n" % number for number in range(101)))
    codes = [raw.reply()[0] for _ in range(101)]
    assert codes == [550] * 101  # unknown users: refused, never counted towards RCPTMAX
    raw.send(b"RSET\r\nMAIL FROM:<x@remote.test>\r\n")
    assert [raw.reply()[0] for _ in range(2)] == [250, 250]
    raw.send(b"".join(b"RCPT TO:<alice+%d@example.test>\r\n" % number for number in range(101)))
    codes = [raw.reply()[0] for _ in range(101)]
    assert codes == [250] * 100 + [452]  # RFC 9422 RCPTMAX=100, then 452 4.5.3
    raw.send(b"QUIT\r\n")
    assert raw.reply()[0] == 221
    raw.close()
    assert daemon.proc.poll() is None


@pytest.mark.slow
def test_a_thousand_silent_connections_do_not_stop_service(tmp_path):
    from conftest import make_daemon

    daemon = make_daemon(tmp_path / "d", extra_config="connections_per_ip_max = 2000")
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("alice@example.test", "alice-secret-1")
    daemon.start()
    silent = []
    try:
        for _ in range(1000):
            silent.append(socket.create_connection(("127.0.0.1", daemon.ports["smtp"]), timeout=30))
        sent = make_message("while 1000 sit idle")
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=60) as client:
            client.ehlo("mta.remote.test")
            assert client.sendmail("x@remote.test", ["alice@example.test"], sent) == {}
        stored, = imap_messages(daemon, "alice@example.test")
        assert stored.endswith(sent)
    finally:
        for sock in silent:
            sock.close()
    assert daemon.proc.poll() is None
    daemon.stop()


# --- the inbound pipeline with a DNS server of the test's own


@pytest.fixture
def checked_daemon(tmp_path, dns_server):
    from conftest import make_daemon

    d = make_daemon(tmp_path / "d", dns=dns_server, extra_config="[inbound]\njunk_threshold = 3.0\n")
    d.cli("domain", "add", "example.test")
    d.add_user("alice@example.test", "alice-secret-1")
    d.start()
    yield d, dns_server
    d.stop()


def test_spf_and_dmarc_results_in_the_stored_message(checked_daemon):
    daemon, dns = checked_daemon
    dns.add("good.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    dns.add("_dmarc.good.test", "TXT", '"v=DMARC1; p=reject"')
    dns.add("bad.test", "TXT", '"v=spf1 -all"')
    dns.add("_dmarc.bad.test", "TXT", '"v=DMARC1; p=reject"')
    good = (b"From: a@good.test\r\nTo: alice@example.test\r\nSubject: hi\r\n"
            b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@good.test>\r\n\r\nhello\r\n")
    bad = good.replace(b"good.test", b"bad.test")
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mail.good.test")
        assert client.sendmail("a@good.test", ["alice@example.test"], good) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@bad.test", ["alice@example.test"], bad)
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.7.1")
    stored, = imap_messages(daemon, "alice@example.test")
    headers = header_block(stored).decode()
    assert "spf=pass smtp.mailfrom=a@good.test" in headers
    assert "dmarc=pass header.from=good.test" in headers
    assert "X-Spam-Status: No" in headers
    assert stored.endswith(good)


def test_spam_score_over_the_junk_threshold_goes_to_junk(checked_daemon):
    daemon, _dns = checked_daemon
    sloppy = b"To: alice@example.test\r\nSubject: no from, no date, no id\r\n\r\nbuy\r\n"
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mail.sloppy.test")
        assert client.sendmail("a@sloppy.test", ["alice@example.test"], sloppy) == {}
    assert imap_messages(daemon, "alice@example.test") == []
    junk, = imap_messages(daemon, "alice@example.test", "Junk")
    assert b"X-Spam-Status: Yes, score=3.5 required=3.0" in junk
    assert junk.endswith(sloppy)


def test_a_dkim_signed_message_verifies_through_the_daemon(checked_daemon):
    import dkim as dkimpy
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    daemon, dns = checked_daemon
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    dns.add("sel._domainkey.signed.test", "TXT", f'"v=DKIM1; k=rsa; p={public}"')
    dns.add("_dmarc.signed.test", "TXT", '"v=DMARC1; p=reject"')
    body = (b"From: a@signed.test\r\nTo: alice@example.test\r\nSubject: signed\r\n"
            b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <2@signed.test>\r\n\r\nsigned body\r\n")
    signed = dkimpy.sign(body, b"sel", b"signed.test", private) + body
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.ehlo("mail.signed.test")
        # No SPF record for the bounce domain: DMARC passes through the aligned DKIM signature.
        assert client.sendmail("bounce@signed.test", ["alice@example.test"], signed) == {}
    stored, = imap_messages(daemon, "alice@example.test")
    headers = header_block(stored).decode()
    assert "dkim=pass header.d=signed.test header.s=sel" in headers
    assert "dmarc=pass header.from=signed.test" in headers
    assert stored.endswith(signed)
