"""Client-side helpers for the end-to-end tests: send with smtplib, read with imaplib and poplib."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import socket
import uuid
import zlib


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


def smtp_send(daemon, message: bytes, rcpt: str | list[str] = "alice@example.test", kind: str = "smtp",
              login: str = "") -> None:
    """Send ``message`` to ``rcpt`` (one address or a list) over STARTTLS (smtps: implicit TLS).

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
        refused = client.sendmail(sender, [rcpt] if isinstance(rcpt, str) else list(rcpt), message)
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


# An IMAP response line that ends in a literal (or literal8, RFC 3516) marker.
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\}\Z")


class RawImap:
    """A wire-level IMAP client, for what imaplib cannot say (or would not parse).

    Connects to the implicit-TLS port, or with ``plain`` to the STARTTLS port
    without TLS (:meth:`start_tls` wraps the socket later); reads the greeting
    into ``greeting``.  Responses are returned whole, literals included
    (``{n}\\r\\n`` and the n bytes kept in place), without the final CRLF.
    """

    def __init__(self, daemon, *, plain: bool = False, timeout: float = 30):
        self.daemon = daemon
        sock = socket.create_connection(("127.0.0.1", daemon.ports["imap" if plain else "imaps"]),
                                        timeout=timeout)
        self.sock = sock if plain else daemon.ssl_context().wrap_socket(sock, server_hostname="localhost")
        self.buffer = b""
        self.compressor = self.decompressor = None
        self.greeting = self.read_line()
        assert self.greeting.startswith(b"* OK "), self.greeting

    def start_compression(self, pipelined: bytes = b"") -> None:
        """``COMPRESS DEFLATE``, then raw DEFLATE both ways (RFC 4978 §3).

        ``pipelined`` (commands) goes compressed in the same packet as the
        COMPRESS line. Nothing may be buffered before: all responses are read.
        """
        assert self.buffer == b"" and self.compressor is None, self.buffer
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.sock.sendall(b"Z COMPRESS DEFLATE\r\n" + (self.compress(pipelined) if pipelined else b""))
        ok = self.read_line()  # uncompressed; what follows it is compressed
        assert ok == b"Z OK DEFLATE active", ok
        self.decompressor = zlib.decompressobj(-15)
        self.buffer = self.decompressor.decompress(self.buffer)

    def compress(self, data: bytes) -> bytes:
        """``data`` as the compressed stream carries it (flushed); as it is without compression."""
        if self.compressor is None:
            return data
        return self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.compress(data))

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError(f"closed by the server; buffered {self.buffer[-300:]!r}")
        if self.decompressor is not None:
            chunk = self.decompressor.decompress(chunk)
        self.buffer += chunk

    def read_line(self) -> bytes:
        """One line, without its CRLF."""
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_response(self) -> bytes:
        """One response: a line, and each literal it announces with the line after it."""
        response = self.read_line()
        while (marker := _LITERAL_AT_END.search(response)) is not None:
            size = int(marker.group(1))
            while len(self.buffer) < size:
                self._fill()
            response += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]
            response += self.read_line()
        return response

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Responses up to and including the tagged reply of ``tag``."""
        responses = []
        while True:
            responses.append(self.read_response())
            if responses[-1].startswith(tag + b" "):
                return responses

    def command(self, tag: bytes, line: bytes) -> list[bytes]:
        """Send ``tag SP line CRLF``; the responses up to and including its tagged reply."""
        self.send(tag + b" " + line + b"\r\n")
        return self.until_tagged(tag)

    def login(self, user: str = "alice@example.test") -> None:
        password = self.daemon.users[user]
        reply = self.command(b"L", b'LOGIN %s "%s"' % (user.encode(), password.encode()))
        assert reply[-1].startswith(b"L OK"), reply

    def start_tls(self) -> None:
        """Wrap the plain socket in TLS (after the server's STARTTLS OK).

        Nothing may be buffered: what the server sent in clear is all read.
        """
        assert self.buffer == b"", self.buffer
        self.sock = self.daemon.ssl_context().wrap_socket(self.sock, server_hostname="localhost")

    def read_to_end(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        data, self.buffer = self.buffer, b""
        while chunk := self.sock.recv(1 << 16):
            data += self.decompressor.decompress(chunk) if self.decompressor else chunk
        return data

    def close(self) -> None:
        self.sock.close()
