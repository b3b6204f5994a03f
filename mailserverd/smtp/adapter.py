"""The thin Twisted adapter of the SMTP server: transport and timers around :class:`SMTPSession`.

:func:`build_factory` is what the composition root calls for each SMTP
listener (smtp, submission, smtps). For smtps, service.py wraps the factory
in TLS and ``listener.implicit_tls`` tells the session that TLS is active.

The protocol only moves bytes and carries out the session's actions: it
writes replies, starts TLS, closes, and while the session waits for a
command's outcome it stops the idle timer (the wait is ours, not the
client's) and, once the client sends more meanwhile (pipelining), pauses the
transport, so that pipelined input stays bounded. Pausing only then spares
the two epoll changes per message of a client that waits for its reply.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd import tls
from mailserverd.smtp.session import (
    Action,
    Close,
    ListenerPolicy,
    Peer,
    Send,
    SMTPSession,
    StartTLS,
    Wait,
)

log = Logger(namespace="mailserverd.smtp")


class SMTPServerProtocol(Protocol):
    """One SMTP connection: feeds the transport's bytes to an :class:`SMTPSession`.

    ``ctx`` is the :class:`~mailserverd.context.ServerContext` (uses
    ``config.limits``, ``config.server.hostname``, ``delivery``, ``tls`` and
    ``clock``); ``listener`` the ``ListenerConfig`` (``kind``, ``implicit_tls``).
    """

    def __init__(self, ctx: Any, listener: Any, policy: ListenerPolicy):
        self.ctx = ctx
        self.listener = listener
        self.policy = policy
        self.session: SMTPSession | None = None
        self._timer: IDelayedCall | None = None
        self._lost = False
        self._paused = False

    # --- Twisted callbacks

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        address = self.transport.getPeer()
        peer = Peer(ip=str(getattr(address, "host", "")), port=int(getattr(address, "port", 0) or 0))
        self.session = SMTPSession(
            self.policy,
            self.ctx.delivery,
            self.ctx.config.limits,
            self.ctx.config.server.hostname,
            peer,
            tls_active=bool(self.listener.implicit_tls),
            authenticator=self.ctx.authenticator,
            guard=self.ctx.abuse,
        )
        self.session.describe_tls = lambda: tls.describe(self.transport)
        self._perform(self.session.greeting())

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._lost or self.session is None:
            return
        if self.session.waiting and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._perform(self.session.data_received(data))

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        self._lost = True
        self._stop_timer()
        session = self.session
        if session is None:
            return
        session.connection_lost()
        log.info(
            "connection protocol=smtp kind={kind} peer={peer} tls={tls} user={user} "
            "commands={commands} messages={messages}",
            kind=self.listener.kind, peer=session.peer.ip, tls="yes" if session.tls_active else "no",
            user=session.authenticated_user or "-",
            commands=session.commands, messages=session.messages_accepted,
        )

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: see :meth:`SMTPSession.shut_down`."""
        if not self._lost and self.session is not None:
            self._perform(self.session.shut_down(force))

    # --- carrying out actions

    def _perform(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order, then (re)arm the timer for what comes next."""
        for action in actions:
            if self._lost:
                return
            if isinstance(action, Send):
                self.transport.write(action.data)
            elif isinstance(action, StartTLS):
                # RFC 3207 §4.2: the 220 written above goes out in clear first.
                self.transport.startTLS(self.ctx.tls.server_creator())
            elif isinstance(action, Close):
                self._stop_timer()
                self.transport.loseConnection()
                return
            elif isinstance(action, Wait):
                self._stop_timer()
                action.deferred.addCallback(self._resume)
                return
        self._start_timer()

    def _resume(self, actions: list[Action]) -> None:
        """A waiting command finished: read again and carry out what followed."""
        if self._lost:
            return
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self._perform(actions)

    # --- idle and DATA timeouts (RFC 5321 §4.5.3.2)

    def _start_timer(self) -> None:
        self._stop_timer()
        if self.session is None or self.session.closed or self.session.waiting:
            return
        limits = self.ctx.config.limits
        seconds = limits.smtp_data_timeout if self.session.in_data else limits.smtp_idle_timeout
        self._timer = self.ctx.clock.callLater(seconds, self._timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if not self._lost and self.session is not None:
            log.info("timeout peer={peer}", peer=self.session.peer.ip)
            self._perform(self.session.timed_out())


class SMTPServerFactory(Factory):
    """Builds an :class:`SMTPServerProtocol` per connection for one listener."""

    noisy = False

    def __init__(self, ctx: Any, listener: Any):
        self.ctx = ctx
        self.listener = listener
        self.policy = ListenerPolicy.for_listener(listener, tls_available=ctx.tls is not None,
                                                  allow_plaintext=ctx.config.auth.allow_plaintext)

    def buildProtocol(self, addr: Any) -> SMTPServerProtocol:  # noqa: N802
        protocol = SMTPServerProtocol(self.ctx, self.listener, self.policy)
        protocol.factory = self
        return protocol


def build_factory(ctx: Any, listener: Any) -> SMTPServerFactory:
    """The protocol factory for one SMTP listener (kind smtp, submission or smtps).

    Takes the ServerContext and the ListenerConfig; the caller wraps it in TLS
    when ``listener.implicit_tls``. Binds nothing.
    """
    return SMTPServerFactory(ctx, listener)
