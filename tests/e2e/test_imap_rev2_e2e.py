"""IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855) end to end against the real daemon over TLS:
Python's imaplib after ENABLE, and a raw TLS socket where imaplib cannot say it (literal8)."""

from __future__ import annotations

import imaplib
import re
import socket

import pytest

from clients import make_message, smtp_send

pytestmark = pytest.mark.e2e

USER = "alice@example.test"
UTF8_MESSAGE = ("From: Jörg <jörg@bücher.example>\r\nTo: alice@example.test\r\n"
                "Subject: Grüße aus Köln\r\n\r\nHallo\r\n").encode("utf-8")


def login(daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    client.login(USER, daemon.users[USER])
    return client


class RawClient:
    """A line-level IMAP client on a TLS socket, for what imaplib cannot send."""

    def __init__(self, daemon):
        raw = socket.create_connection(("127.0.0.1", daemon.ports["imaps"]), timeout=30)
        self.sock = daemon.ssl_context().wrap_socket(raw, server_hostname="localhost")
        self.buffer = b""
        self.read_until(rb"^\* OK .*\r\n")

    def read_until(self, pattern: bytes) -> bytes:
        regex = re.compile(pattern, re.M)
        while not regex.search(self.buffer):
            chunk = self.sock.recv(65536)
            assert chunk, self.buffer
            self.buffer += chunk
        end = regex.search(self.buffer).end()
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def command(self, tag: bytes, data: bytes) -> list[bytes]:
        self.sock.sendall(tag + b" " + data + b"\r\n")
        return self.read_until(rb"^" + tag + rb" (OK|NO|BAD).*\r\n").split(b"\r\n")[:-1]

    def close(self) -> None:
        self.sock.close()


def test_capability_and_enable_imap4rev2(daemon):
    client = login(daemon)
    try:
        assert "IMAP4REV2" in client.capabilities and "UTF8=ACCEPT" in client.capabilities
        assert "IMAP4REV1" in client.capabilities  # RFC 9051 §6.1.1: both, for old clients
        typ, data = client._simple_command("ENABLE", "IMAP4rev2")
        assert typ == "OK"
        assert client._untagged_response(typ, data, "ENABLED")[1] == [b"IMAP4rev2"]
        smtp_send(daemon, make_message("rev2 search"))
        assert client.select("INBOX")[0] == "OK"
        # RFC 9051 §6.4.4 (Appendix E item 4): SEARCH is answered with ESEARCH.
        typ, data = client._simple_command("SEARCH", "SUBJECT", '"rev2"')
        assert typ == "OK"
        assert client._untagged_response(typ, data, "ESEARCH")[1][0].endswith(b"ALL 1")
        # Appendix E item 12: no STATUS RECENT in IMAP4rev2.
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            client._simple_command("STATUS", "INBOX", "(MESSAGES RECENT)")
        assert client.noop()[0] == "OK"
    finally:
        client.logout()


def test_utf8_mailbox_names_with_imaplib_utf8_mode(daemon):
    client = login(daemon)
    rev1 = login(daemon)
    try:
        assert client.enable("UTF8=ACCEPT")[0] == "OK"  # imaplib then sends UTF-8
        assert client.create('"Entwürfe/Köln"')[0] == "OK"
        typ, data = client.list('""', '"Entw*"')
        assert typ == "OK"
        assert '(\\HasNoChildren) "/" "Entwürfe/Köln"'.encode("utf-8") in data
        typ, data = client.status('"Entwürfe/Köln"', "(MESSAGES UIDNEXT)")
        assert data == ['"Entwürfe/Köln" (MESSAGES 0 UIDNEXT 1)'.encode("utf-8")]
        # The same mailbox, to a client that did not enable UTF-8: modified UTF-7.
        typ, data = rev1.list('""', '"Entw*"')
        assert b'(\\HasNoChildren) "/" "Entw&APw-rfe/K&APY-ln"' in data
        smtp_send(daemon, make_message("to copy"))
        assert rev1.select("INBOX")[0] == "OK"
        assert rev1.copy("1", '"Entw&APw-rfe/K&APY-ln"')[0] == "OK"
        typ, data = client.status('"Entwürfe/Köln"', "(MESSAGES)")
        assert data == ['"Entwürfe/Köln" (MESSAGES 1)'.encode("utf-8")]
        assert client.delete('"Entwürfe/Köln"')[0] == "OK"
    finally:
        client.logout()
        rev1.logout()


def test_append_utf8_literal8_and_fetch_it_back(daemon):
    raw = RawClient(daemon)
    try:
        assert raw.command(b"a", b"LOGIN %s %s" % (USER.encode(), daemon.users[USER].encode()))[-1] \
            .startswith(b"a OK")
        # Without ENABLE UTF8=ACCEPT, 8-bit header fields are refused (RFC 6855 §4).
        lines = raw.command(b"b", b"APPEND INBOX {%d+}\r\n" % len(UTF8_MESSAGE) + UTF8_MESSAGE)
        assert lines[-1].startswith(b"b NO [CANNOT]")
        assert raw.command(b"c", b"ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
        lines = raw.command(b"d", b"APPEND INBOX (\\Flagged) UTF8 (~{%d+}\r\n" % len(UTF8_MESSAGE)
                            + UTF8_MESSAGE + b")")
        assert lines[-1].startswith(b"d OK [APPENDUID ")
    finally:
        raw.close()
    client = login(daemon)
    try:
        client.select("INBOX", readonly=True)
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == UTF8_MESSAGE
        assert b"\\Flagged" in data[0][0]
    finally:
        client.logout()
