"""COMPRESS=DEFLATE (RFC 4978): the streams, the command, and the adapter over StringTransport.

The client side is zlib with raw DEFLATE, as real clients do it. The adapter
is driven as Twisted drives it (``dataReceived``, the transport pausing the
output producer); what is checked is the bytes the client would read.
"""

from __future__ import annotations

import zlib

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from imap_fakes import PASSWORD, USER
from imap_real_store import PASSWORD as STORE_PASSWORD, open_store
from mailserverd.imap.adapter import build_factory
from mailserverd.imap.compression import CompressionError, Deflater, Inflater
from session_fakes import FakeAuthenticator, make_context
from test_imap_adapter import TLSStringTransport, connect

LOGIN = b'L LOGIN %s "%s"\r\n' % (USER.encode(), PASSWORD.encode())
OK_LINE = b"C OK DEFLATE active\r\n"


class DeflateClient:
    """The client's end: compresses what it sends, inflates what the server wrote."""

    def __init__(self, protocol, transport):
        self.protocol, self.transport = protocol, transport
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.decompressor = zlib.decompressobj(-15)

    def packet(self, data: bytes) -> bytes:
        return self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(self.packet(data))

    def read(self) -> bytes:
        """Everything the server wrote since the last read, inflated."""
        data = self.transport.value()
        self.transport.clear()
        return self.decompressor.decompress(data)


def connect_with(ctx):
    """The adapter of an implicit-TLS listener over ``ctx``, connected to a StringTransport."""
    listener = SimpleNamespace(kind="imaps", implicit_tls=True)
    protocol = build_factory(ctx, listener).buildProtocol(None)
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def compressed_session(**limits) -> DeflateClient:
    """An implicit-TLS connection, logged in, after ``C COMPRESS DEFLATE`` was answered."""
    protocol, transport = connect(kind="imaps", implicit_tls=True, **limits)
    protocol.dataReceived(LOGIN)
    assert b"L OK" in transport.value()
    transport.clear()
    protocol.dataReceived(b"C COMPRESS DEFLATE\r\n")
    assert transport.value() == OK_LINE  # RFC 4978 §3: the OK itself is not compressed
    transport.clear()
    return DeflateClient(protocol, transport)


# --- the streams ----------------------------------------------------------

def test_deflater_output_inflates_completely_after_each_call():
    deflater, client = Deflater(1), zlib.decompressobj(-15)
    for data in (b"* 1 EXISTS\r\n", b"a OK done\r\n" * 100, b""):
        assert client.decompress(deflater.compress(data)) == data


def test_inflater_returns_at_most_a_step_and_keeps_the_rest():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressed = bomb.compress(b"\0" * (20 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(compressed) < 30_000
    inflater = Inflater(4096)
    inflater.feed(compressed)
    total = 0
    while inflater.pending:
        chunk = inflater.read()
        assert len(chunk) <= 4096
        total += len(chunk)
    assert total == 20 << 20


def test_inflater_refuses_corrupt_input():
    inflater = Inflater(4096)
    inflater.feed(b"\xff" * 64)
    with pytest.raises(CompressionError):
        inflater.read()


def test_inflater_refuses_data_after_the_end_of_the_stream():
    ender = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflater = Inflater(4096)
    inflater.feed(ender.compress(b"a NOOP\r\n") + ender.flush(zlib.Z_FINISH) + b"more")
    with pytest.raises(CompressionError):
        inflater.read()


# --- the command ----------------------------------------------------------

def test_commands_and_responses_are_compressed_after_the_ok():
    client = compressed_session()
    client.send(b"a NOOP\r\n")
    assert client.read() == b"a OK NOOP completed\r\n"
    client.send(b"b CAPABILITY\r\n")
    reply = client.read()
    assert b" COMPRESS=DEFLATE" in reply and reply.endswith(b"b OK Capability completed\r\n")


def test_commands_pipelined_behind_compress_are_inflated():
    """Unlike after STARTTLS, the bytes after the COMPRESS line are the client's next
    commands, compressed (RFC 4978 §3), and may arrive in the same packet."""
    protocol, transport = connect(kind="imaps", implicit_tls=True)
    protocol.dataReceived(LOGIN)
    transport.clear()
    client = DeflateClient(protocol, transport)
    protocol.dataReceived(b"C COMPRESS DEFLATE\r\n" + client.packet(b"a NOOP\r\nb NOOP\r\n"))
    assert transport.value().startswith(OK_LINE)
    assert client.decompressor.decompress(transport.value()[len(OK_LINE):]) == \
        b"a OK NOOP completed\r\nb OK NOOP completed\r\n"


def test_compress_twice_is_no_compressionactive():
    client = compressed_session()
    client.send(b"d COMPRESS DEFLATE\r\n")
    assert client.read() == b"d NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n"
    client.send(b"e NOOP\r\n")
    assert client.read() == b"e OK NOOP completed\r\n"


@pytest.mark.parametrize("line, reply", [
    (b"c COMPRESS FOO", b"c BAD Unknown compression mechanism"),
    (b"c COMPRESS", b"c BAD "),
    (b"c COMPRESS DEFLATE extra", b"c BAD "),
])
def test_bad_compress_commands_leave_compression_off(line, reply):
    protocol, transport = connect(kind="imaps", implicit_tls=True)
    protocol.dataReceived(LOGIN)
    transport.clear()
    protocol.dataReceived(line + b"\r\n")
    assert transport.value().startswith(reply)
    transport.clear()
    protocol.dataReceived(b"a NOOP\r\n")  # still in clear
    assert transport.value() == b"a OK NOOP completed\r\n"


def test_compress_before_login_is_refused():
    protocol, transport = connect(kind="imaps", implicit_tls=True)
    transport.clear()
    protocol.dataReceived(b"c COMPRESS DEFLATE\r\n")
    assert transport.value() == b"c BAD Log in first\r\n"


# --- bounds and failures ----------------------------------------------------

def test_a_decompression_bomb_is_inflated_only_as_far_as_the_session_reads():
    """20 MiB of one line, compressed to a few KiB: the line limit closes the
    connection after about a line's worth was inflated, not 20 MiB."""
    client = compressed_session(imap_line_max=1000, imap_inflate_step=4096)
    client.send(b"a NOOP " + b"x" * (20 << 20))
    reply = client.read()
    assert reply == b"* BAD [TOOBIG] Command line too long\r\n* BYE Too long command line\r\n"
    assert client.transport.disconnecting
    assert client.protocol._inflater.pending  # the rest was never inflated


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def replies_until(client: DeflateClient, done: bytes) -> bytes:
    """What the server wrote (inflated) until it ends with ``done``; a generous deadline."""
    seen = b""
    for _ in range(5000):
        seen += client.read()
        if seen.endswith(done):
            return seen
        await deferLater(reactor, 0.001, lambda: None)
    raise AssertionError(f"no {done!r} in {seen[-300:]!r}")


@pytest_twisted.ensureDeferred
async def test_input_waits_compressed_while_a_command_waits_on_the_store(store):
    """A command that waits holds the next ones (and the socket is not read):
    held input stays compressed, then runs in order once the command is done."""
    await store.append(USER, "INBOX", b"Subject: hi\r\n\r\nbody\r\n", ())
    protocol, transport = connect_with(make_context(store, FakeAuthenticator({USER: STORE_PASSWORD})))
    protocol.dataReceived(b'L LOGIN %s "%s"\r\nC COMPRESS DEFLATE\r\n'
                          % (USER.encode(), STORE_PASSWORD.encode()))
    transport.clear()
    client = DeflateClient(protocol, transport)
    client.send(b"s SELECT INBOX\r\n")
    await replies_until(client, b"s OK [READ-WRITE] Select completed\r\n")
    # FETCH BODY[TEXT] sets \Seen: a store write, answered on a later reactor turn.
    client.send(b"f FETCH 1 (BODY[TEXT])\r\n" + b"n NOOP\r\n" * 10000)
    assert transport.producerState == "paused"  # no more is read from the socket
    assert protocol._inflater.pending
    replies = await replies_until(client, b"n OK NOOP completed\r\n" * 10000)
    assert replies.index(b"f OK") < replies.index(b"n OK")
    assert transport.producerState == "producing"


def test_input_waits_while_the_client_does_not_read_its_output():
    client = compressed_session()
    output = client.protocol._output
    output.pauseProducing()  # what the transport does when its buffer is full
    client.send(b"n NOOP\r\n" * 20000)
    assert client.read() == b""  # nothing inflated, nothing run, nothing more read
    assert client.transport.producerState == "paused"
    output.resumeProducing()
    assert client.read().count(b"n OK NOOP completed\r\n") == 20000
    assert client.transport.producerState == "producing"


def test_corrupt_input_closes_only_that_connection_with_a_log_line():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        client = compressed_session()
        client.protocol.dataReceived(b"\xff" * 32)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert client.read() == b"* BYE Corrupt compressed data\r\n"
    assert client.transport.disconnecting
    logged = [e["log_format"] for e in events if e.get("log_namespace") == "mailserverd.imap"]
    assert any("corrupt input" in line for line in logged), logged
    client.protocol.dataReceived(client.packet(b"a NOOP\r\n"))  # nothing more is read
    assert client.transport.value() == b""
