"""The POP3 Twisted adapter over StringTransport: greeting, producer-driven RETR, STLS, close."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mailserverd.pop3.adapter import ChunkProducer, build_factory
from mailserverd.pop3.commands import BODY_CHUNK_SIZE

from pop3_fakes import HOSTNAME, FakeAuthenticator, FakeMailStore, make_ctx

ALICE = "alice@example.test"


class TLSStringTransport(StringTransport):
    """StringTransport that records startTLS (StringTransport has none)."""

    def __init__(self):
        super().__init__(peerAddress=IPv4Address("TCP", "198.51.100.4", 40000))
        self.tls_started_with = None
        self.tls_started_after = b""

    def startTLS(self, creator):  # noqa: N802 (Twisted's name)
        self.tls_started_with = creator
        self.tls_started_after = self.value()


def connect(kind="pop3", implicit_tls=False, store=None):
    store = store or FakeMailStore()
    store.messages.setdefault(ALICE, [])
    ctx = make_ctx(store, FakeAuthenticator({ALICE: "pw"}))
    factory = build_factory(ctx, SimpleNamespace(kind=kind, implicit_tls=implicit_tls))
    protocol = factory.buildProtocol(None)
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, ctx


def take(transport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


def drain_producer(transport) -> int:
    """Pull the registered producer dry, as a transport with an empty buffer would."""
    pulls = 0
    while transport.producer is not None:
        transport.producer.resumeProducing()
        pulls += 1
    return pulls


def test_greeting_and_peer_ip():
    protocol, transport, _ = connect()
    assert take(transport) == f"+OK {HOSTNAME} POP3 server ready\r\n".encode()
    assert protocol.session.client_ip == "198.51.100.4"
    assert protocol.session.tls_active is False


def test_pop3s_listener_is_tls_from_the_start():
    protocol, transport, _ = connect(kind="pop3s", implicit_tls=True)
    take(transport)
    protocol.dataReceived(b"CAPA\r\n")
    capa = take(transport)
    assert b"\r\nUSER\r\n" in capa and b"STLS" not in capa


def test_stls_starts_tls_after_ok_and_drops_pipelined_bytes():
    protocol, transport, ctx = connect()
    take(transport)
    protocol.dataReceived(b"STLS\r\nCAPA\r\n")
    assert transport.tls_started_with == "tls-creator"
    assert transport.tls_started_after == b"+OK begin TLS negotiation\r\n"  # +OK went out first
    assert take(transport) == b"+OK begin TLS negotiation\r\n"  # the CAPA was discarded
    protocol.dataReceived(b"USER alice@example.test\r\nPASS pw\r\n")
    assert take(transport) == b"+OK send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n"


def test_retr_large_message_through_pull_producer():
    store = FakeMailStore()
    raw = b"Subject: big\r\n\r\n" + (b".dot line\r\n" + b"y" * 1000 + b"\r\n") * 300
    store.add_message(ALICE, raw)
    protocol, transport, _ = connect(kind="pop3s", implicit_tls=True, store=store)
    take(transport)
    protocol.dataReceived(b"USER alice@example.test\r\nPASS pw\r\nRETR 1\r\nQUIT\r\n")
    assert isinstance(transport.producer, ChunkProducer)
    assert transport.streaming is False
    assert transport.producerState == "paused"  # no reading while the body is out
    assert take(transport).endswith(b"+OK %d octets\r\n" % len(raw))
    pulls = drain_producer(transport)
    assert pulls > len(raw) // BODY_CHUNK_SIZE  # sent in several writes
    out = take(transport)
    expected = raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert out == expected + f"+OK {HOSTNAME} POP3 server signing off\r\n".encode()
    assert transport.disconnecting
    assert transport.producerState == "producing"  # reading resumed once idle


def test_connection_lost_mid_stream():
    store = FakeMailStore()
    store.add_message(ALICE, b"x" * (3 * BODY_CHUNK_SIZE))
    protocol, transport, ctx = connect(kind="pop3s", implicit_tls=True, store=store)
    protocol.dataReceived(b"USER alice@example.test\r\nPASS pw\r\nRETR 1\r\n")
    producer = transport.producer
    producer.resumeProducing()
    producer.stopProducing()  # what a transport does on disconnect
    protocol.connectionLost(None)
    assert producer.done.called
    assert protocol.session.closed
    assert ctx.clock.getDelayedCalls() == []


def test_quit_closes_transport():
    protocol, transport, _ = connect()
    take(transport)
    protocol.dataReceived(b"QUIT\r\n")
    assert take(transport) == f"+OK {HOSTNAME} POP3 server signing off\r\n".encode()
    assert transport.disconnecting


def test_idle_timeout_closes_transport():
    protocol, transport, ctx = connect()
    ctx.clock.advance(ctx.config.limits.pop3_idle_timeout)
    assert transport.disconnecting


def test_pop3_and_pop3s_listeners_share_the_maildrop_lock():
    store = FakeMailStore()
    store.messages[ALICE] = []
    ctx = make_ctx(store, FakeAuthenticator({ALICE: "pw"}))
    connections = []
    for kind, implicit_tls in (("pop3s", True), ("pop3", False)):
        factory = build_factory(ctx, SimpleNamespace(kind=kind, implicit_tls=implicit_tls))
        protocol = factory.buildProtocol(None)
        transport = TLSStringTransport()
        protocol.makeConnection(transport)
        take(transport)
        connections.append((protocol, transport))
    (first, first_transport), (second, second_transport) = connections
    first.dataReceived(b"USER alice@example.test\r\nPASS pw\r\n")
    second.dataReceived(b"STLS\r\n")
    second.dataReceived(b"USER alice@example.test\r\nPASS pw\r\n")
    assert take(second_transport).endswith(b"-ERR [IN-USE] maildrop already in use by another session\r\n")
    first.connectionLost(None)  # a dropped connection releases the lock
    second.dataReceived(b"USER alice@example.test\r\nPASS pw\r\n")
    assert take(second_transport) == b"+OK send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n"
