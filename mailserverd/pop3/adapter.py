"""The Twisted side of POP3: a Protocol that connects a transport to a POP3Session.

Nothing here decides anything about POP3; it moves bytes between the
transport and :class:`~mailserverd.pop3.session.POP3Session` and implements
the session's :class:`~mailserverd.pop3.session.SessionSink`.
"""

from __future__ import annotations

from typing import Iterator

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from mailserverd.pop3.maildrop import maildrop_locks
from mailserverd.pop3.session import POP3Session


@implementer(IPullProducer)
class ChunkProducer:
    """Writes an iterator's chunks to a transport, one each time the transport asks.

    ``done`` fires with None when the iterator is exhausted or the transport
    stops the producer (connection lost), and errbacks if the iterator raises.
    Registered as a pull producer, so a slow reader holds at most one chunk
    in the transport's buffer at a time.
    """

    def __init__(self, transport, chunks: Iterator[bytes]):
        self._transport = transport
        self._chunks = chunks
        self.done: Deferred = Deferred()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted's name)
        if self.done.called:
            return
        try:
            chunk = next(self._chunks, None)
        except Exception:
            self._transport.unregisterProducer()
            self.done.errback()
            return
        if chunk is None:
            self._transport.unregisterProducer()
            self.done.callback(None)
            return
        self._transport.write(chunk)

    def stopProducing(self) -> None:  # noqa: N802 (Twisted's name)
        if not self.done.called:
            self.done.callback(None)


class POP3Protocol(Protocol):
    """One POP3 connection: owns a POP3Session and is its SessionSink.

    ``implicit_tls`` is True on a pop3s listener, where the transport is
    already TLS before the first byte (RFC 8314 §3).
    """

    def __init__(self, ctx, implicit_tls: bool):
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.session: POP3Session | None = None

    # -- Protocol ------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        # RETR/TOP send the status line and the body in separate writes: with
        # Nagle's algorithm the body waits for the client's delayed ACK (~40 ms).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        peer = self.transport.getPeer()
        self.session = POP3Session(
            self.ctx, self, client_ip=getattr(peer, "host", str(peer)), tls_active=self.implicit_tls
        )
        self.session.start()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.session.data_received(data)

    def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted's name)
        if self.session is not None:
            self.session.connection_lost()

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: see :meth:`POP3Session.shut_down`."""
        if self.session is not None:
            self.session.shut_down(force)

    # -- SessionSink -----------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def send_stream(self, chunks: Iterator[bytes]) -> Deferred:
        producer = ChunkProducer(self.transport, chunks)
        self.transport.registerProducer(producer, False)
        return producer.done

    def start_tls(self) -> None:
        self.transport.startTLS(self.ctx.tls.server_creator())

    def close(self) -> None:
        self.transport.loseConnection()

    def pause_input(self) -> None:
        self.transport.pauseProducing()

    def resume_input(self) -> None:
        self.transport.resumeProducing()


class POP3Factory(Factory):
    """Builds a POP3Protocol for each connection on one listener."""

    def __init__(self, ctx, listener):
        self.ctx = ctx
        self.listener = listener

    def buildProtocol(self, addr) -> POP3Protocol:  # noqa: N802 (Twisted's name)
        protocol = POP3Protocol(self.ctx, bool(self.listener.implicit_tls))
        protocol.factory = self
        return protocol


def build_factory(ctx, listener) -> POP3Factory:
    """The protocol factory for a ``pop3`` or ``pop3s`` listener.

    ``ctx`` is the ServerContext; ``listener`` needs ``.implicit_tls`` (True
    for pop3s, whose TLS wrapping the service adds around this factory).
    Side effect: makes the server's one maildrop lock registry on ``ctx`` if
    it is not there yet, so that every POP3 listener built from ``ctx``
    shares it (a user's pop3 and pop3s sessions exclude each other).
    """
    maildrop_locks(ctx)
    return POP3Factory(ctx, listener)
