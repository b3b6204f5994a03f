"""Connection limits shared by every listener: ``connections_max``, ``connections_per_ip_max``
and the abuse guard's ``connections_per_ip_per_minute``.

Each listener's protocol factory is wrapped (inside TLS, so that the refusal
is readable on implicit-TLS ports) by a :class:`LimitedFactory` that counts
open connections in one :class:`ConnectionCounter`. A connection over a limit
gets its protocol's "try again later" line and is closed before the session
starts, as Postfix (421) and Dovecot (BYE) do.

The counter also knows every open connection, so that a stopping server can
end them all (:meth:`ConnectionCounter.drain`).

Every connection passes through here, so this is also where the metrics
count connections (accepted, open, refused) and TLS handshakes: implicit TLS
and STARTTLS/STLS both wrap the TLS layer around :class:`_LimitedProtocol`,
which therefore hears each ``handshakeCompleted`` and each handshake failure.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from mailserverd.metrics import Metrics
from mailserverd.tls import TLSError, negotiated_version

log = Logger(namespace="mailserverd.connections")

#: What each protocol says when it turns a connection away.
REFUSALS = {
    "smtp": b"421 4.7.0 Too many connections, try again later\r\n",  # RFC 5321 §3.8, RFC 3463
    "imap": b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",  # RFC 5530 §3
    "pop3": b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",  # RFC 3206 §4
    "http": b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n",  # RFC 9110 §15.6.4
}


class ConnectionCounter:
    """Open connections in total and per peer IP, against two limits.

    ``open`` holds the admitted connections' wrapping protocols; the limits
    may be changed at any time (a reload), and apply to new connections.
    """

    def __init__(self, total_max: int, per_ip_max: int):
        self.total_max = total_max
        self.per_ip_max = per_ip_max
        self.total = 0
        self.by_ip: Counter[str] = Counter()
        self.open: set["_LimitedProtocol"] = set()
        self._all_closed: list[Deferred] = []

    def refusing_limit(self, ip: str) -> str | None:
        """The name of the limit a new connection from ``ip`` would pass
        (``connections_max`` or ``connections_per_ip_max``), or None."""
        if self.total >= self.total_max:
            return "connections_max"
        if self.by_ip[ip] >= self.per_ip_max:
            return "connections_per_ip_max"
        return None

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip`` if both limits allow it; say whether they did."""
        if self.refusing_limit(ip) is not None:
            return False
        self.total += 1
        self.by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        """An admitted connection from ``ip`` closed."""
        self.total -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]
        if not self.open:
            waiting, self._all_closed = self._all_closed, []
            for deferred in waiting:
                deferred.callback(0)

    def drain(self, clock: Any, timeout: float) -> Deferred:
        """End every open connection; fire once all have closed, or at ``timeout``.

        Each connection is asked to shut down (its protocol says goodbye and
        closes once the command it is running has finished). ``timeout``
        seconds later the rest are shut down by force and the Deferred fires
        at once, without waiting for their close: a client that does not
        read could hold one open for ever. Fires with how many were forced.
        """
        if not self.open:
            return succeed(0)
        done: Deferred = Deferred()
        self._all_closed.append(done)

        def force() -> None:
            if done.called:
                return
            self._all_closed.remove(done)
            forced = list(self.open)
            for connection in forced:
                connection.shut_down(force=True)
            done.callback(len(forced))

        timer = clock.callLater(timeout, force)

        def cancel_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(cancel_timer)
        for connection in list(self.open):
            connection.shut_down(force=False)
        return done


@implementer(IHandshakeListener)
class _LimitedProtocol(ProtocolWrapper):
    admitted = False
    handshake_done = False

    def makeConnection(self, transport):  # noqa: N802 (Twisted's name)
        ip = getattr(transport.getPeer(), "host", "")
        factory = self.factory
        guard = factory.guard
        # The rate first: every attempt counts against it, also one the
        # concurrency limits refuse (as Postfix's anvil counts them).
        if guard is not None and not guard.connection_allowed(ip, factory.protocol_name):
            self._refuse(transport, "rate")
        elif factory.counter.admit(ip):
            self.admitted = True
            factory.counter.open.add(self)
            factory.metrics.connection_opened(factory.protocol_name, factory.listener)
            ProtocolWrapper.makeConnection(self, transport)
        else:
            limit = factory.counter.refusing_limit(ip)
            if guard is not None and limit == "connections_per_ip_max":
                # One client holding too many: the abuse line fail2ban reads.
                guard.refused(limit, factory.protocol_name, ip)
            else:  # the server full is no one client's doing: no ban
                log.info("connection-refused protocol={protocol} peer={ip} reason={limit}",
                         protocol=factory.protocol_name, ip=ip, limit=limit)
            self._refuse(transport, "limit")

    def _refuse(self, transport, reason: str) -> None:
        """Say the protocol's "try again later" and close; the wrapped protocol never starts."""
        self.factory.metrics.connection_refused(self.factory.protocol_name, reason)
        self.transport = transport
        transport.write(REFUSALS[self.factory.protocol_name])
        transport.loseConnection()

    def dataReceived(self, data):  # noqa: N802
        if self.admitted:
            ProtocolWrapper.dataReceived(self, data)

    def handshakeCompleted(self):  # noqa: N802 (IHandshakeListener)
        self.handshake_done = True
        self.factory.metrics.tls_handshake(self.factory.protocol_name, negotiated_version(self.transport))
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason):  # noqa: N802
        if self.admitted:
            self.admitted = False
            factory = self.factory
            factory.counter.open.discard(self)
            factory.counter.release(getattr(self.transport.getPeer(), "host", ""))
            factory.metrics.connection_closed(factory.protocol_name, factory.listener)
            if not self.handshake_done and reason.check(TLSError):
                factory.metrics.tls_handshake_failed(factory.protocol_name)
            ProtocolWrapper.connectionLost(self, reason)

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: the wrapped protocol's ``shut_down`` (mail
        protocols say goodbye), or a plain close for one without (HTTP)."""
        shut_down = getattr(self.wrappedProtocol, "shut_down", None)
        if shut_down is None:
            self.transport.loseConnection()
        else:
            shut_down(force)


class LimitedFactory(WrappingFactory):
    """Wraps a listener's protocol factory with the shared connection limits.

    ``protocol_name`` (smtp, imap, pop3) and ``listener`` (its kind, e.g.
    ``submission``) label what it reports to ``metrics``. ``guard``, the
    server's :class:`~mailserverd.abuse.AbuseGuard` (or None), limits the
    rate of new connections per client network.
    """

    protocol = _LimitedProtocol

    def __init__(self, wrapped, counter: ConnectionCounter, protocol_name: str,
                 listener: str = "", metrics: Metrics | None = None, guard: Any = None):
        WrappingFactory.__init__(self, wrapped)
        self.counter = counter
        self.guard = guard
        self.protocol_name = protocol_name
        self.listener = listener or protocol_name
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.listener_added(protocol_name, self.listener)
