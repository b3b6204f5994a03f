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

from mailserverd.imap.compression import CompressionError, Deflater, Inflater
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
        self._deflater: Deflater | None = None

    @property
    def paused(self) -> bool:
        """Whether the transport asked for no more output (its buffer is full)."""
        return self._paused

    def write(self, data: bytes) -> None:
        if self._deflater is not None:
            # RFC 4978 §4: flushed per write, so the client never waits for
            # bytes kept in the compressor, and the transport (hence
            # wait_writable) sees all that was written.
            data = self._deflater.compress(data)
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
        self._protocol.inflate_held()

    def stopProducing(self) -> None:  # noqa: N802
        # The connection is gone: release waiters; the session ignores them (closed).
        self.resumeProducing()

    def start_tls(self) -> None:
        # RFC 3501 §6.2.1: the tagged OK was written before this call, so it
        # goes out in clear; Twisted starts TLS after what is already queued.
        self._protocol.transport.startTLS(self._protocol.ctx.tls.server_creator())

    def start_compression(self, pending: bytes) -> None:
        # RFC 4978 §3: the tagged OK was written before this call, uncompressed.
        self._deflater = Deflater(self._protocol.ctx.config.limits.imap_compress_level)
        self._protocol.start_inflating(pending)

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
        self._output: _TransportOutput | None = None
        self._inflater: Inflater | None = None
        self._inflating = False
        self._reading_paused = False

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        peer = self.transport.getPeer()
        client_ip = getattr(peer, "host", "") or ""
        tls = bool(self.listener.implicit_tls)
        log.info("connection protocol=imap ip={ip} tls={tls} listener={kind}",
                 ip=client_ip, tls=tls, kind=self.listener.kind)
        self._output = output = _TransportOutput(self)
        self.transport.registerProducer(output, True)
        self.session = ImapSession(self.ctx, output, client_ip=client_ip, tls_active=tls)
        self.session.input_wanted = self.inflate_held
        self.session.start()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._inflater is not None:
            self._inflater.feed(data)
        else:
            self.session.data_received(data)  # may run COMPRESS: then inflate the rest
        self.inflate_held()

    def start_inflating(self, pending: bytes) -> None:
        """From now on input is DEFLATE-compressed (RFC 4978), from ``pending`` on."""
        self._inflater = Inflater(self.ctx.config.limits.imap_inflate_step)
        self._inflater.feed(pending)
        log.info("compress protocol=imap mechanism=DEFLATE ip={ip} user={user}",
                 ip=self.session.client_ip, user=self.session.user)
        self.inflate_held()

    def inflate_held(self) -> None:
        """Give the session inflated input, one bounded step at a time, while it
        reads input at once and the client reads our output; hold the rest,
        compressed, and stop reading the socket meanwhile.

        So a decompression bomb costs one step of memory beyond what the
        session itself accepts (a line, a literal), never its inflated size.
        Corrupt input ends the session with a BYE and a log line.
        """
        inflater, session = self._inflater, self.session
        if inflater is None or self._inflating:
            return
        self._inflating = True
        try:
            while inflater.pending and session.wants_input() and not self._output.paused:
                session.data_received(inflater.read())
        except CompressionError as error:
            log.warn("compress protocol=imap ip={ip} corrupt input, closing: {error}",
                     ip=session.client_ip, error=str(error))
            session.end("Corrupt compressed data")
        finally:
            self._inflating = False
        self._hold_reading(inflater.pending and not session.closed)

    def _hold_reading(self, hold: bool) -> None:
        """Stop or restart reading from the socket (TCP's window then holds the client)."""
        if hold != self._reading_paused:
            self._reading_paused = hold
            if hold:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        if self.session is not None:
            self.session.connection_lost()

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: see :meth:`ImapSession.shut_down`."""
        if self.session is not None:
            self.session.shut_down(force)


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
