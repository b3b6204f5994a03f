"""Client-side helpers for the end-to-end tests: send with smtplib, read with imaplib and poplib."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import uuid


def make_message(subject: str, body_lines: int = 40) -> bytes:
    """A message with CRLF line ends, a unique Message-ID and dot-leading lines."""
    lines = [
        b"From: Sender <sender@remote.test>",
        b"To: alice@example.test",
        b"Subject: " + subject.encode(),
        b"Message-ID: <" + uuid.uuid4().hex.encode() + b"@remote.test>",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        b"",
    ]
    for i in range(body_lines):
        lines.append(b"line %d: caf\xc3\xa9" % i)
    lines += [b".", b"..two dots", b".leading dot", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


def smtp_send(daemon, message: bytes, rcpt: str = "alice@example.test", kind: str = "smtp",
              login: str = "") -> None:
    """Send ``message`` to ``rcpt`` over STARTTLS (smtps: implicit TLS).

    The submission ports need AUTH: ``login`` names the account (default
    alice) and is also the envelope sender there; the MX sends as a remote
    sender without AUTH.
    """
    ctx = daemon.ssl_context()
    if kind == "smtps":
        client = smtplib.SMTP_SSL("127.0.0.1", daemon.ports[kind], context=ctx, timeout=30)
    else:
        client = smtplib.SMTP("127.0.0.1", daemon.ports[kind], timeout=30)
        client.starttls(context=ctx)
    with client:
        client.ehlo("client.remote.test")
        sender = "sender@remote.test"
        if kind in ("submission", "smtps"):
            sender = login or "alice@example.test"
            client.login(sender, daemon.users[sender])
        refused = client.sendmail(sender, [rcpt], message)
        assert refused == {}


def stored_tail(fetched: bytes, sent: bytes) -> None:
    """The stored message is the sent one with trace headers prepended (RFC 5321 §4.4)."""
    assert fetched.endswith(sent), (fetched[-200:], sent[-200:])
    added = fetched[: len(fetched) - len(sent)]
    assert added.startswith(b"Received: "), added[:200]


def imap_fetch_all(daemon, user: str, implicit: bool = False) -> list[bytes]:
    ctx = daemon.ssl_context()
    if implicit:
        client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=ctx, timeout=30)
    else:
        client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=30)
        client.starttls(ssl_context=ctx)
    try:
        client.login(user, daemon.users[user])
        typ, data = client.select("INBOX")
        assert typ == "OK"
        count = int(data[0])
        if count == 0:
            return []
        typ, data = client.fetch(f"1:{count}", "(BODY.PEEK[])")
        assert typ == "OK"
        return [part[1] for part in data if isinstance(part, tuple)]
    finally:
        client.logout()


def pop_login(daemon, user: str, implicit: bool = False) -> poplib.POP3:
    """A poplib client in TRANSACTION state, over 995 or over STLS on the plain port."""
    ctx = daemon.ssl_context()
    if implicit:
        client = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=ctx, timeout=60)
    else:
        client = poplib.POP3("127.0.0.1", daemon.ports["pop3"], timeout=60)
        client.stls(context=ctx)
    client.user(user)
    client.pass_(daemon.users[user])
    return client


def pop_fetch_all(daemon, user: str, implicit: bool = False) -> list[bytes]:
    client = pop_login(daemon, user, implicit)
    try:
        count, _size = client.stat()
        out = []
        for n in range(1, count + 1):
            _resp, lines, _octets = client.retr(n)
            out.append(b"\r\n".join(lines) + b"\r\n")
        return out
    finally:
        client.quit()
