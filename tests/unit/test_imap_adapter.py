"""The Twisted adapter over StringTransport: greeting, commands, STARTTLS, close, logging."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from mailserverd.imap.adapter import build_factory

from imap_fakes import PASSWORD, USER, FakeAuthenticator, FakeMailStore, make_ctx

from mailserverd.imap.session import BASE_CAPABILITIES  # noqa: E402
from mailserverd.limits import Limits as _Limits  # noqa: E402

#: The capabilities every session lists, and the AUTH= ones listed before login over TLS.
CAPS = " ".join(BASE_CAPABILITIES).encode() + b" APPENDLIMIT=%d" % _Limits().message_size_max
AUTH = b"AUTH=SCRAM-SHA-256 AUTH=PLAIN"


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS calls (it has no ITLSTransport of its own)."""

    def __init__(self):
        super().__init__(peerAddress=IPv4Address("TCP", "198.51.100.4", 40000))
        self.tls_started_with = []

    def startTLS(self, creator):  # noqa: N802 (Twisted's name)
        self.tls_started_with.append((creator, self.value()))


def connect(kind="imap", implicit_tls=False, **ctx_args):
    store = FakeMailStore()
    store.add_mailbox(USER, "INBOX")
    ctx = make_ctx(store, FakeAuthenticator({USER: PASSWORD}), **ctx_args)
    listener = SimpleNamespace(kind=kind, implicit_tls=implicit_tls)
    protocol = build_factory(ctx, listener).buildProtocol(None)
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_greeting_and_a_command():
    protocol, transport = connect()
    assert transport.value().startswith(b"* OK [CAPABILITY " + CAPS + b" STARTTLS LOGINDISABLED] ")
    transport.clear()
    protocol.dataReceived(b"a NOOP\r\n")
    assert transport.value() == b"a OK NOOP completed\r\n"


def test_starttls_writes_ok_in_clear_then_starts_tls_and_drops_pipelined_bytes():
    protocol, transport = connect()
    transport.clear()
    protocol.dataReceived(b"a STARTTLS\r\nb LOGIN x y\r\n")
    assert transport.tls_started_with == [("tls-creator", b"a OK Begin TLS negotiation now\r\n")]
    transport.clear()
    protocol.dataReceived(b"c CAPABILITY\r\n")
    assert transport.value() == b"* CAPABILITY " + CAPS + b" " + AUTH + b"\r\nc OK Capability completed\r\n"


def test_implicit_tls_listener_allows_login_at_once():
    protocol, transport = connect(kind="imaps", implicit_tls=True)
    assert b"STARTTLS" not in transport.value()
    transport.clear()
    protocol.dataReceived(b'a LOGIN alice@example.test "correct horse"\r\n')
    assert transport.value().startswith(b"a OK [CAPABILITY")


def test_logout_closes_the_transport():
    protocol, transport = connect()
    protocol.dataReceived(b"a LOGOUT\r\n")
    assert transport.disconnecting
    protocol.connectionLost(None)
    assert protocol.ctx.clock.getDelayedCalls() == []


def test_connection_lost_stops_the_timers():
    protocol, transport = connect()
    assert protocol.ctx.clock.getDelayedCalls()
    protocol.connectionLost(None)
    assert protocol.ctx.clock.getDelayedCalls() == []


def test_one_log_line_per_connection():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        connect(kind="imaps", implicit_tls=True)
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("log_namespace") == "mailserverd.imap"]
    assert len(mine) == 1
    assert mine[0]["log_format"].startswith("connection ")
    assert (mine[0]["ip"], mine[0]["tls"], mine[0]["kind"]) == ("198.51.100.4", True, "imaps")
