"""Connection limits shared by every listener: ``connections_max`` and ``connections_per_ip_max``.

Each listener's protocol factory is wrapped (inside TLS, so that the refusal
is readable on implicit-TLS ports) by a :class:`LimitedFactory` that counts
open connections in one :class:`ConnectionCounter`. A connection over a limit
gets its protocol's "try again later" line and is closed before the session
starts, as Postfix (421) and Dovecot (BYE) do.
"""

from __future__ import annotations

from collections import Counter

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

log = Logger(namespace="mailserverd.connections")

#: What each protocol says when it turns a connection away.
REFUSALS = {
    "smtp": b"421 4.7.0 Too many connections, try again later\r\n",  # RFC 5321 §3.8, RFC 3463
    "imap": b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",  # RFC 5530 §3
    "pop3": b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",  # RFC 3206 §4
}


class ConnectionCounter:
    """Open connections in total and per peer IP, against two limits."""

    def __init__(self, total_max: int, per_ip_max: int):
        self.total_max = total_max
        self.per_ip_max = per_ip_max
        self.total = 0
        self.by_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip`` if both limits allow it; say whether they did."""
        if self.total >= self.total_max or self.by_ip[ip] >= self.per_ip_max:
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


class _LimitedProtocol(ProtocolWrapper):
    admitted = False

    def makeConnection(self, transport):  # noqa: N802 (Twisted's name)
        ip = getattr(transport.getPeer(), "host", "")
        if self.factory.counter.admit(ip):
            self.admitted = True
            ProtocolWrapper.makeConnection(self, transport)
            return
        log.info("connection-refused protocol={protocol} peer={ip} reason=limit",
                 protocol=self.factory.protocol_name, ip=ip)
        # Bypass the wrapped protocol: it never starts.
        self.transport = transport
        transport.write(REFUSALS[self.factory.protocol_name])
        transport.loseConnection()

    def dataReceived(self, data):  # noqa: N802
        if self.admitted:
            ProtocolWrapper.dataReceived(self, data)

    def connectionLost(self, reason):  # noqa: N802
        if self.admitted:
            self.admitted = False
            self.factory.counter.release(getattr(self.transport.getPeer(), "host", ""))
            ProtocolWrapper.connectionLost(self, reason)


class LimitedFactory(WrappingFactory):
    """Wraps a listener's protocol factory with the shared connection limits."""

    protocol = _LimitedProtocol

    def __init__(self, wrapped, counter: ConnectionCounter, protocol_name: str):
        WrappingFactory.__init__(self, wrapped)
        self.counter = counter
        self.protocol_name = protocol_name
