"""The SMTP server session, sans I/O: bytes in, actions out.

:class:`SMTPSession` holds one connection's state. The adapter feeds it
whatever the transport delivers (:meth:`SMTPSession.data_received`) and carries
out the :class:`Send`/:class:`StartTLS`/:class:`Close`/:class:`Wait` actions it
returns, in order. It never touches a socket, a reactor or a clock.

Pipelining (RFC 2920): input is buffered and executed one command at a time.
When a command must wait (a recipient lookup or the store's commit after DATA)
the session returns a :class:`Wait` and reads nothing more until the Deferred
fires; so replies always leave in command order, and the mail text after a
DATA is never read as commands.

Framing rules enforced here, not in the handlers:

- command lines end with CRLF and are at most ``smtp_line_max`` octets
  (RFC 5321 §4.5.3.1.4); a longer line gets one 500 and the session resyncs
  at its end, a flood without any LF is cut off (421);
- after STARTTLS every byte already received is dropped (RFC 3207 §4.2,
  the CVE-2011-0411 class);
- the mail text is read by :class:`MessageReader` (dot-unstuffing as a stream,
  only CRLF.CRLF ends it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd.delivery.local import ClientInfo, DeliveryResult
from mailserverd.smtp import replies
from mailserverd.smtp.commands import (
    COMMANDS,
    HandlerResult,
    Phase,
    is_bad_command_reply,
    reply_for_error,
)
from mailserverd.smtp.framing import ChunkReader, MessageReader
from mailserverd.smtp.params import Transaction
from mailserverd.smtp.replies import Reply

log = Logger(namespace="mailserverd.smtp")


# --- actions the adapter carries out


@dataclass(frozen=True)
class Send:
    """Write ``data`` to the client."""

    data: bytes


@dataclass(frozen=True)
class StartTLS:
    """Start TLS on the transport now (after the preceding 220 was written)."""


@dataclass(frozen=True)
class Close:
    """Close the connection after everything before it was written."""


@dataclass(frozen=True)
class Wait:
    """Feed nothing until ``deferred`` fires; it fires (never fails) with the
    next list of actions, which may end with another Wait."""

    deferred: "Deferred[list[Action]]"


Action = Union[Send, StartTLS, Close, Wait]


# --- collaborators


class RecipientDelivery(Protocol):
    """The narrow delivery interface the session needs (LocalDelivery implements it)."""

    def check_recipient(self, address: str, remote_allowed: bool = False, size: int = 0
                        ) -> "list[str] | Deferred[list[str]]":
        """Local users ``address`` reaches ([] = none); raises MailError to refuse it."""

    def sender_allowed(self, user: str, sender: str) -> bool:
        """Whether authenticated ``user`` may use ``sender`` as its reverse-path."""

    def deliver(self, sender: str, recipients: list[str], users: list[str], raw: bytes,
                client: ClientInfo, envelope: Transaction | None = None) -> "Deferred[DeliveryResult]":
        """Fires after the message is durable (local users stored, other
        domains queued); fails with MailError. ``envelope`` carries the DSN
        and body parameters."""


#: Listener kinds that serve mail clients: AUTH offered and required before MAIL
#: (RFC 6409 §4.3 submission, RFC 8314 §3.3 implicit-TLS submission).
SUBMISSION_KINDS = frozenset({"submission", "smtps"})


@dataclass(frozen=True)
class ListenerPolicy:
    """What one listener allows.

    ``kind`` is the listener kind (smtp, submission, smtps);
    ``starttls_available`` says whether a TLS context exists for STARTTLS;
    ``auth_offered``/``auth_required``: the MX (port 25) neither offers nor
    needs AUTH and accepts local recipients only; submission and smtps
    require AUTH before MAIL. ``allow_plaintext`` is ``auth.allow_plaintext``.
    """

    kind: str
    starttls_available: bool = True
    auth_offered: bool = False
    auth_required: bool = False
    allow_plaintext: bool = False

    @classmethod
    def for_listener(cls, listener: Any, tls_available: bool,
                     allow_plaintext: bool = False) -> "ListenerPolicy":
        """The policy for a ``ListenerConfig``; STARTTLS only where TLS is not implicit."""
        submission = listener.kind in SUBMISSION_KINDS
        return cls(kind=listener.kind,
                   starttls_available=tls_available and not listener.implicit_tls,
                   auth_offered=submission, auth_required=submission,
                   allow_plaintext=allow_plaintext)


@dataclass(frozen=True)
class Peer:
    """The client's address as the transport reports it."""

    ip: str
    port: int = 0


# --- the session


class SMTPSession:
    """One SMTP server connection, sans I/O.

    Takes the listener's :class:`ListenerPolicy`, a :class:`RecipientDelivery`,
    the ``Limits``, our ``hostname``, the client's :class:`Peer` and whether TLS
    is already active (implicit TLS). Call :meth:`greeting` once, then
    :meth:`data_received` for each chunk; :meth:`timed_out` when the adapter's
    idle timer fires, :meth:`connection_lost` when the transport is gone.
    Every method returns the actions to carry out, in order.

    The attributes below the first comment are what command handlers
    (:mod:`mailserverd.smtp.commands`) read and change.
    """

    def __init__(self, policy: ListenerPolicy, delivery: RecipientDelivery, limits: Any,
                 hostname: str, peer: Peer, tls_active: bool = False,
                 authenticator: Any = None, guard: Any = None):
        # read and changed by command handlers
        self.policy = policy
        self.delivery = delivery
        self.authenticator = authenticator
        #: The server's :class:`~mailserverd.abuse.AbuseGuard`, or None (no abuse limits).
        self.guard = guard
        self.authenticated_user = ""
        self.auth_failures = 0
        #: What the adapter knows of the TLS connection, for Received: ("" when none).
        self.describe_tls: Callable[[], str] = lambda: ""
        self.limits = limits
        self.hostname = hostname
        self.peer = peer
        self.tls_active = tls_active
        self.phase = Phase.GREETED
        self.helo_name: str | None = None
        self.esmtp = False
        self.transaction: Transaction | None = None
        # framing and counters
        self.closed = False
        self.commands = 0
        self.bad_commands = 0
        self.messages_accepted = 0
        self._input = bytearray()
        self._discarding = 0  # bytes dropped of an over-long command line (0: not discarding)
        self._reader: MessageReader | ChunkReader | None = None
        self._reader_done: Callable[[], HandlerResult] | None = None
        self._line_reader: Callable[[bytes], HandlerResult] | None = None
        self._waiting = False
        self._after_reply: list[str] = []  # "data", "tls", "close": flow changes after the reply
        self._shutting_down = False

    # --- what handlers call

    def greet(self, name: str, esmtp: bool) -> None:
        """Record HELO/EHLO; any transaction is dropped (RFC 5321 §4.1.4)."""
        self.helo_name = name
        self.esmtp = esmtp
        self.transaction = None
        self.phase = Phase.READY

    def begin_transaction(self, transaction: Transaction) -> None:
        """MAIL was accepted: start collecting recipients."""
        self.transaction = transaction
        self.phase = Phase.MAIL

    def reset_transaction(self) -> None:
        """RSET: drop the transaction; keep HELO/EHLO (RFC 5321 §4.1.1.5)."""
        self.transaction = None
        self.phase = Phase.READY if self.helo_name is not None else Phase.GREETED

    def end_transaction(self) -> None:
        """The transaction ended (its message was read): back to READY (RFC 5321 §4.1.1.4)."""
        self.transaction = None
        self.phase = Phase.READY

    def read_next_line(self, handler: Callable[[bytes], HandlerResult]) -> None:
        """Give the next line (without CRLF) to ``handler`` instead of running it
        as a command (a SASL response, RFC 4954 §4)."""
        self._line_reader = handler

    def read_chunk(self, reader: ChunkReader, then: Callable[[], HandlerResult]) -> None:
        """Read a BDAT chunk with ``reader`` now; when it is complete, reply with ``then()``."""
        self._reader = reader
        self._reader_done = then

    def deliver(self, transaction: Transaction, message: bytes) -> "Deferred[Reply]":
        """Hand a complete message to delivery; fires with the 250 after it is durable."""
        client = ClientInfo(helo=self.helo_name or "", ip=self.peer.ip,
                            protocol=self._with_protocol(),
                            tls=self.describe_tls() if self.tls_active else "",
                            authenticated_user=self.authenticated_user)
        outcome = maybeDeferred(self.delivery.deliver, transaction.sender,
                                list(transaction.recipients), list(transaction.users),
                                message, client, envelope=transaction)
        return outcome.addCallback(self._accepted)

    def starttls_offered(self) -> bool:
        """Whether STARTTLS is available now (RFC 3207 §4.2: never once TLS is on)."""
        return self.policy.starttls_available and not self.tls_active

    def begin_data(self) -> None:
        """After this reply (354), read the mail text."""
        self._after_reply.append("data")

    def begin_tls(self) -> None:
        """After this reply (220), drop buffered input, start TLS and reset."""
        self._after_reply.append("tls")

    def close_after_reply(self) -> None:
        """After this reply, close the connection."""
        self._after_reply.append("close")

    # --- what the adapter calls

    def greeting(self) -> list[Action]:
        """The 220 greeting (RFC 5321 §4.3.1)."""
        return [Send(replies.greeting(self.hostname).render())]

    def data_received(self, data: bytes) -> list[Action]:
        """Buffer ``data`` and run every complete command (or mail text) in it."""
        if self.closed:
            return []
        self._input += data
        if self._waiting:
            if len(self._input) > self._held_input_max():
                # A client pipelining far beyond one transaction (RFC 2920 §3.1
                # groups end at DATA): refuse to buffer it without bound.
                return self._close_now(replies.S421_TOO_MANY_COMMANDS, reply_now=False)
            return []
        return self._run()

    def shut_down(self, force: bool = False) -> list[Action]:
        """The server is stopping: 421 and close (RFC 5321 §3.8).

        At once between commands; while a command waits (a delivery being
        made durable) or mail text is being read, after that command's
        reply, so that a message whose DATA has begun can still be accepted.
        ``force`` closes at once in every case (the shutdown timeout passed).
        """
        self._shutting_down = True
        if self.closed:
            return []
        if force:
            return self._close_now(replies.S421_SHUTTING_DOWN)
        return [] if self._waiting else self._run()

    def timed_out(self) -> list[Action]:
        """The idle (or DATA) timer fired: 421 4.4.2 and close (RFC 5321 §4.5.3.2)."""
        if self.closed:
            return []
        return self._close_now(replies.S421_IDLE_TIMEOUT)

    def connection_lost(self) -> None:
        """The transport is gone: ignore everything from now on."""
        self.closed = True
        self._input.clear()
        self._reader = None
        self._line_reader = None
        self._end_login()

    def _end_login(self) -> None:
        """No longer count as one of the authenticated user's sessions (idempotent)."""
        if self.authenticated_user and self.guard is not None:
            self.guard.session_closed(self.authenticated_user, self)

    @property
    def waiting(self) -> bool:
        """True while a command waits; the adapter should pause reading and the idle timer."""
        return self._waiting

    @property
    def in_data(self) -> bool:
        """True while mail text is being read (the adapter uses the DATA timeout)."""
        return self._reader is not None

    # --- internals

    def _held_input_max(self) -> int:
        """Bytes we hold while a command waits: one full pipelined group
        (RSET, MAIL, every RCPT, DATA, QUIT) of maximal lines."""
        return (self.limits.smtp_recipients_max + 4) * self.limits.smtp_line_max

    def _close_now(self, reply: Reply, reply_now: bool = True) -> list[Action]:
        self.closed = True
        self._input.clear()
        self._reader = None
        self._line_reader = None
        return ([Send(reply.render())] if reply_now else []) + [Close()]

    def _run(self) -> list[Action]:
        """Run buffered input until it runs out, a command waits or the session closes."""
        actions: list[Action] = []
        while not self.closed and not self._waiting and (
                self._input or (self._reader is not None and self._reader.done)):  # BDAT 0
            if self._shutting_down and self._reader is None:
                break
            if self._reader is not None:
                actions += self._read_text()
            else:
                line = self._next_line(actions)
                if line is None:
                    break
                if line and self._line_reader is not None:
                    actions += self._run_line_reader(line)
                elif line:
                    actions += self._run_command(line)
        if self._shutting_down and not (self.closed or self._waiting or self._reader is not None):
            actions += self._close_now(replies.S421_SHUTTING_DOWN)
        return actions

    def _next_line(self, actions: list[Action]) -> bytes | None:
        """Take one command line (LF-terminated) off the input; ``None`` when it
        is incomplete, ``b""`` when a line was dropped (input remains to be run).

        Over-long lines are dropped here with their 500 reply appended to
        ``actions`` (RFC 5321 §4.5.3.1.4); input with no LF at all is dropped
        as it comes, and cut off (421) past ``smtp_text_line_max`` octets.
        """
        line_max = self.limits.smtp_line_max
        lf = self._input.find(b"\n")
        if self._discarding:
            if lf < 0:
                self._discarding += len(self._input)
                self._input.clear()
                if self._discarding > self.limits.smtp_text_line_max:
                    actions += self._close_now(replies.S421_LINE_FLOOD)
                return None
            del self._input[:lf + 1]
            self._discarding = 0
            self._line_reader = None  # RFC 4954 §4: a reply other than 334 ends an exchange
            actions += self._answer(replies.S500_LINE_TOO_LONG)
            return b""
        if lf < 0:
            if len(self._input) > line_max:
                self._discarding = len(self._input)
                self._input.clear()
            return None
        line = bytes(self._input[:lf + 1])
        del self._input[:lf + 1]
        if len(line) > line_max:
            self._line_reader = None  # RFC 4954 §4: a reply other than 334 ends an exchange
            actions += self._answer(replies.S500_LINE_TOO_LONG)
            return b""
        return line

    def _run_command(self, line: bytes) -> list[Action]:
        """Look the verb up in the table, check the phase, run the handler."""
        self.commands += 1
        if self.commands > self.limits.smtp_commands_max:
            return self._close_now(replies.S421_TOO_MANY_COMMANDS)
        if self.guard is not None and not self.guard.command_allowed(self.peer.ip, "smtp"):
            return self._close_now(replies.S421_COMMAND_RATE)
        if not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\0" in line:
            return self._answer(replies.S500_BAD_LINE)  # RFC 5321 §2.3.8
        verb, _, arg = line[:-2].partition(b" ")
        command = COMMANDS.get(verb.upper())
        if command is None:
            return self._answer(replies.S500_UNKNOWN_COMMAND)
        if self.phase not in command.phases:
            return self._answer(command.sequence_reply(self.phase))
        return self._handle(lambda: command.handler(self, arg), verb)

    def _run_line_reader(self, line: bytes) -> list[Action]:
        """A line a handler asked for (read_next_line): no verb, same framing rules."""
        self.commands += 1
        handler, self._line_reader = self._line_reader, None
        if not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\0" in line:
            return self._answer(replies.S500_BAD_LINE)  # RFC 5321 §2.3.8
        return self._handle(lambda: handler(line[:-2]), b"AUTH")

    def _handle(self, run: Callable[[], HandlerResult], verb: bytes) -> list[Action]:
        """Run a handler; answer its reply now, wait for its Deferred, or (None) later."""
        try:
            outcome = run()
        except Exception as error:  # mapped or logged in _error_reply
            self._after_reply.clear()  # a failed command changes no flow
            self._reader = self._reader_done = None
            return self._answer(self._error_reply(Failure(error), verb))
        if outcome is None:
            return []
        if isinstance(outcome, Deferred):
            return self._wait_for(outcome, verb)
        return self._answer(outcome)

    def _error_reply(self, failure: Failure, verb: bytes) -> Reply:
        """The reply an expected error carries; an unexpected one is logged, then 451."""
        known = reply_for_error(failure.value)
        if known is not None:
            return known
        log.failure("command-error command={verb} peer={peer}", failure,
                    verb=verb.decode("ascii", "replace"), peer=self.peer.ip)
        return replies.S451_LOCAL_ERROR

    def _wait_for(self, deferred: Deferred, verb: bytes) -> list[Action]:
        """Answer with ``deferred``'s outcome: now if it has one already, else
        stop reading (a :class:`Wait`) until it fires, then answer and go on."""
        early: list[Any] = []
        pending = False

        def settle(outcome: Any) -> list[Action] | None:
            if not pending:
                early.append(outcome)
                return None
            self._waiting = False
            if self.closed:
                return []
            return self._answer(self._outcome_reply(outcome, verb)) + self._run()

        deferred.addBoth(settle)
        if early:
            return self._answer(self._outcome_reply(early[0], verb))
        pending = True
        self._waiting = True

        def last_resort(failure: Failure) -> list[Action]:
            log.failure("session-error peer={peer}", failure, peer=self.peer.ip)
            return self._close_now(replies.S451_LOCAL_ERROR)

        return [Wait(deferred.addErrback(last_resort))]

    def _outcome_reply(self, outcome: Any, verb: bytes) -> Reply:
        return self._error_reply(outcome, verb) if isinstance(outcome, Failure) else outcome

    def _answer(self, reply: Reply) -> list[Action]:
        """Send ``reply``, count a bad command, then carry out requested flow changes."""
        if is_bad_command_reply(reply):
            self.bad_commands += 1
            if self.bad_commands > self.limits.smtp_bad_commands_max:
                self._after_reply.clear()
                return self._close_now(replies.S421_TOO_MANY_ERRORS)
        actions: list[Action] = [Send(reply.render())]
        changes, self._after_reply = self._after_reply, []
        for change in changes:
            if change == "data":
                reader = MessageReader(self.limits.message_size_max, self.limits.smtp_text_line_max)
                self.read_chunk(reader, lambda: self._data_complete(reader))
            elif change == "tls":
                actions += self._start_tls()
            elif change == "close":
                self.closed = True
                self._input.clear()
                actions.append(Close())
        return actions

    def _start_tls(self) -> list[Action]:
        """RFC 3207 §4.2: discard what the client sent after STARTTLS; forget
        everything learnt before TLS (HELO, ESMTP, transaction)."""
        self._input.clear()
        self.tls_active = True
        self._end_login()
        self.authenticated_user = ""
        self._line_reader = None
        self.helo_name = None
        self.esmtp = False
        self.transaction = None
        self.phase = Phase.GREETED
        return [StartTLS()]

    def _read_text(self) -> list[Action]:
        """Feed buffered input to the current reader (DATA text or a BDAT chunk);
        when it is complete, reply with what its completion gives."""
        reader = self._reader
        consumed = reader.feed(bytes(self._input))
        del self._input[:consumed]
        if not reader.done:
            return []
        done, self._reader, self._reader_done = self._reader_done, None, None
        return self._handle(done, b"DATA" if isinstance(reader, MessageReader) else b"BDAT")

    def _data_complete(self, reader: MessageReader) -> HandlerResult:
        """The DATA text ended: the transaction ends; deliver unless it was refused."""
        transaction = self.transaction
        self.end_transaction()
        if reader.rejection is not None:
            return reader.rejection
        return self.deliver(transaction, reader.message())

    def _accepted(self, result: DeliveryResult) -> Reply:
        self.messages_accepted += 1
        return replies.queued(result.queue_id)

    def _with_protocol(self) -> str:
        """RFC 3848 ``with`` keyword for Received: (ESMTP, ESMTPS, ESMTPA, ESMTPSA)."""
        if not self.esmtp:
            return "SMTP"
        return "ESMTP" + ("S" if self.tls_active else "") + ("A" if self.authenticated_user else "")
