"""Twisted adapter for the IMAP session: a thin Protocol around :class:`ImapSession`.

``build_factory(ctx, listener)`` is what :mod:`mailserverd.service` calls for
each ``imap``/``imaps`` listener (it wraps ``imaps`` in TLS itself, so the
session is told TLS is already on when ``listener.implicit_tls``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from mailserverd.imap.session import ImapSession

log = Logger(namespace="mailserverd.imap")


@implementer(IPushProducer)
class _TransportOutput:
    """The session's :class:`~mailserverd.imap.session.SessionOutput` over a transport.

    It is registered with the transport as a streaming producer: the transport
    pauses it when its send buffer fills (a client that does not read) and
    resumes it once the buffer drained. Long responses (FETCH) wait for
    :meth:`wait_writable` between messages, so a slow client costs a buffer's
    worth of memory, never the whole answer.
    """

    def __init__(self, protocol: "ImapServerProtocol"):
        self._protocol = protocol
        self._paused = False
        self._waiting: list[Deferred] = []

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def wait_writable(self) -> "Deferred[None] | None":
        """None when the client keeps up; else a Deferred fired once it has read."""
        if not self._paused:
            return None
        waiting: Deferred = Deferred()
        self._waiting.append(waiting)
        return waiting

    # IPushProducer, called by the transport
    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(None)

    def stopProducing(self) -> None:  # noqa: N802
        # The connection is gone: release waiters; the session ignores them (closed).
        self.resumeProducing()

    def start_tls(self) -> None:
        # RFC 3501 §6.2.1: the tagged OK was written before this call, so it
        # goes out in clear; Twisted starts TLS after what is already queued.
        self._protocol.transport.startTLS(self._protocol.ctx.tls.server_creator())

    def close(self) -> None:
        # A registered producer keeps the connection (and TLS) open until it is
        # unregistered: LOGOUT must close at once (RFC 9051 §6.1.3).
        self._protocol.transport.unregisterProducer()
        self._protocol.transport.loseConnection()


class ImapServerProtocol(Protocol):
    """Feeds received bytes to an :class:`ImapSession` and carries out its output."""

    def __init__(self, ctx: Any, listener: Any):
        self.ctx = ctx
        self.listener = listener
        self.session: ImapSession | None = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        peer = self.transport.getPeer()
        client_ip = getattr(peer, "host", "") or ""
        tls = bool(self.listener.implicit_tls)
        log.info("connection protocol=imap ip={ip} tls={tls} listener={kind}",
                 ip=client_ip, tls=tls, kind=self.listener.kind)
        output = _TransportOutput(self)
        self.transport.registerProducer(output, True)
        self.session = ImapSession(self.ctx, output, client_ip=client_ip, tls_active=tls)
        self.session.start()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.session.data_received(data)

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        if self.session is not None:
            self.session.connection_lost()


class ImapServerFactory(Factory):
    """Builds one :class:`ImapServerProtocol` per connection of a listener."""

    def __init__(self, ctx: Any, listener: Any):
        self.ctx = ctx
        self.listener = listener

    def buildProtocol(self, addr) -> ImapServerProtocol:  # noqa: N802
        protocol = ImapServerProtocol(self.ctx, self.listener)
        protocol.factory = self
        return protocol


def build_factory(ctx: Any, listener: Any) -> ImapServerFactory:
    """The protocol factory for one IMAP listener.

    Uses from ``ctx``: ``config.server.hostname``, ``config.auth.allow_plaintext``,
    ``config.limits.imap_*``, ``store`` (MailStore reads, ``store_flags``),
    ``authenticator.authenticate``, ``tls.server_creator()`` (STARTTLS) and
    ``clock.callLater`` (timeouts). From ``listener``: ``kind`` and ``implicit_tls``.
    """
    return ImapServerFactory(ctx, listener)
