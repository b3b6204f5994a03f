"""End to end: FETCH BINARY / BINARY.SIZE (RFC 3516), EMAILID / THREADID (RFC 8474),
PREVIEW (RFC 8970) and SAVEDATE (RFC 8514) through Python's imaplib against the
real daemon, over implicit TLS."""

from __future__ import annotations

import base64
import imaplib
import re

import pytest

from clients import make_message, smtp_send

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
BINARY_DATA = bytes(range(256))
MESSAGE = (b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: parts\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes("Grüße aus   Köln\n".encode("utf-8")).replace(b"\n", b"\r\n") +
           b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(BINARY_DATA).replace(b"\n", b"\r\n") +
           b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
           b"begin 644 x\r\n--XX--\r\n")


def connect(daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    client.login(ALICE, daemon.users[ALICE])
    return client


def fetch(client, message_set: str, items: str):
    """FETCH through imaplib; returns (status, flattened response bytes)."""
    typ, data = client.fetch(message_set, items)
    flat = b""
    for entry in data:
        if isinstance(entry, tuple):
            flat += entry[0] + b"<<" + entry[1] + b">>"
        elif entry is not None:
            flat += entry
    return typ, flat


def test_fetch_extension_items(daemon):
    client = connect(daemon)
    try:
        assert client.append("INBOX", None, None, MESSAGE)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"

        typ, data = fetch(client, "1", "(BINARY.PEEK[1] BINARY.SIZE[1])")
        text = "Grüße aus   Köln\r\n".encode("utf-8")
        assert typ == "OK"
        assert b"<<" + text + b">>" in data
        assert b"BINARY.SIZE[1] %d" % len(text) in data

        # NUL in the decoded data: a literal8 (RFC 3516 §4.3), which imaplib reads too.
        typ, data = fetch(client, "1", "(BINARY.PEEK[2])")
        assert typ == "OK" and b"BINARY[2] ~{256}<<" + BINARY_DATA + b">>" in data

        typ, data = fetch(client, "1", "(BINARY.PEEK[2]<250.100>)")
        assert typ == "OK" and b"BINARY[2]<250> {6}<<" + BINARY_DATA[250:] + b">>" in data

        typ, data = client.fetch("1", "(BINARY.PEEK[3])")
        assert typ == "NO" and data[-1].startswith(b"[UNKNOWN-CTE]"), data

        typ, data = fetch(client, "1", "(PREVIEW SAVEDATE THREADID EMAILID)")
        assert typ == "OK"
        preview = "Grüße aus Köln".encode("utf-8")
        assert b"<<" + preview + b">>" in data
        assert b"SAVEDATE NIL THREADID NIL EMAILID (M" in data
        emailid = re.search(rb"EMAILID \((M[0-9a-f]+)\)", data).group(1)

        # RFC 8474 §5.1: a copy keeps the EMAILID.
        assert client.copy("1", "Archive")[0] == "OK"
        assert client.select("Archive")[0] == "OK"
        typ, data = fetch(client, "1", "(EMAILID PREVIEW (LAZY))")
        assert typ == "OK" and b"EMAILID (" + emailid + b")" in data

        # BINARY without .PEEK sets \Seen, durably.
        typ, data = fetch(client, "1", "(BINARY[1])")
        assert typ == "OK" and b"\\Seen" in data
    finally:
        client.logout()

    again = connect(daemon)
    try:
        assert again.select("Archive", readonly=True)[0] == "OK"
        typ, data = fetch(again, "1", "(FLAGS)")
        assert typ == "OK" and b"\\Seen" in data
        with pytest.raises(imaplib.IMAP4.error, match=r"BAD"):
            again.fetch("1", "(BINARY[HEADER])")
        assert again.noop()[0] == "OK"  # the session survives bad input
    finally:
        again.logout()


def test_objectid_mailboxid_and_emailid_search(daemon):
    """RFC 8474: MAILBOXID from CREATE, SELECT and STATUS agree; SEARCH EMAILID finds the message."""
    smtp_send(daemon, make_message("objectid"))
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    try:
        client.login("alice@example.test", daemon.users["alice@example.test"])
        typ, data = client.create("Projects")
        created = re.search(rb"MAILBOXID \((F[0-9a-f-]+)\)", data[0] or b"")
        assert typ == "OK" and created, data
        typ, data = client.status("Projects", "(MAILBOXID)")
        assert created.group(1) in data[0]
        client.select("INBOX")
        typ, data = client.fetch("1", "(EMAILID)")
        emailid = re.search(rb"EMAILID \((M[0-9a-f]+)\)", data[0]).group(1)
        typ, data = client.uid("SEARCH", "EMAILID", emailid.decode())
        assert data[0].split() == [b"1"]
        typ, data = client.uid("SEARCH", "THREADID", "T1")
        assert data[0] == b""
    finally:
        client.logout()
