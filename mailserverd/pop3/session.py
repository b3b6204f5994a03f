"""The POP3 session: a sans-I/O state machine, bytes in, replies out through a sink.

One :class:`POP3Session` per connection. The adapter feeds it received bytes
(:meth:`POP3Session.data_received`) and implements :class:`SessionSink`, the
only way the session acts on the world: send bytes, stream a body, start TLS,
close, pause or resume reading. Tests drive it with a recording sink and a
``Clock``.

Rules enforced here, in one place:

- Commands run one at a time, in the order received (RFC 2449 §6.6
  PIPELINING): while a command waits on a Deferred or its body is being
  streamed, later input stays buffered and reading is paused.
- A command line longer than ``limits.pop3_line_max`` is answered ``-ERR`` and
  skipped up to its line end; input is never buffered without bound.
- ``limits.pop3_bad_commands_max`` unknown, malformed or out-of-state commands
  close the connection.
- ``limits.pop3_idle_timeout`` of silence closes the connection without a
  reply and without entering UPDATE (RFC 1939 §3).
- After STLS's +OK, bytes already received are discarded and the state is
  reset (RFC 2595 §4; the CVE-2011-0411 class of injection).
- A line may be claimed by the command before it (:meth:`POP3Session.read_next_line`,
  the client responses of an AUTH exchange); it is read through the same
  line limit and is not looked up as a command.
- The maildrop lock taken at login (:mod:`mailserverd.pop3.maildrop`) is
  released when the session ends: after QUIT's UPDATE, or when the
  connection closes or drops (once a running UPDATE has finished).
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd.errors import MailError
from mailserverd.pop3 import replies
from mailserverd.pop3.commands import (
    COMMANDS,
    THEN_CLOSE,
    THEN_STARTTLS,
    CommandSyntaxError,
    HandlerResult,
    Outcome,
    State,
    split_arguments,
)
from mailserverd.pop3.maildrop import Maildrop, maildrop_locks
from mailserverd.pop3.replies import Challenge, Reply

#: What reads a line claimed by :meth:`POP3Session.read_next_line`.
LineReader = Callable[[bytes], HandlerResult]

log = Logger(namespace="mailserverd.pop3")


class SessionSink(Protocol):
    """What a session needs from its connection (implemented by the adapter)."""

    def send(self, data: bytes) -> None:
        """Write ``data`` to the client, in order after everything sent before."""

    def send_stream(self, chunks: Iterator[bytes]) -> Deferred:
        """Write each chunk as the transport can take it; fire (with None) once all are
        written, or once the connection is gone. Errors raised by ``chunks`` errback."""

    def start_tls(self) -> None:
        """Begin the server side of a TLS handshake after what was sent so far."""

    def close(self) -> None:
        """Close the connection once what was sent so far has been written."""

    def pause_input(self) -> None:
        """Stop delivering received bytes until :meth:`resume_input`."""

    def resume_input(self) -> None:
        """Deliver received bytes again."""


class POP3Session:
    """Per-connection POP3 state (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595),
    AUTH (RFC 5034) and UTF8 (RFC 6856).

    ``ctx`` is the :class:`~mailserverd.context.ServerContext`; ``tls_active``
    says whether the connection is already under TLS (pop3s). Call
    :meth:`start` once, then :meth:`data_received` for each received chunk and
    :meth:`connection_lost` once at the end. Handlers in
    :mod:`mailserverd.pop3.commands` read and change ``state``,
    ``pending_user``, ``utf8_mode`` and ``maildrop``.
    """

    def __init__(self, ctx, sink: SessionSink, *, client_ip: str, tls_active: bool):
        self.ctx = ctx
        self.client_ip = client_ip
        self.tls_active = tls_active
        self.state = State.AUTHORIZATION
        self.pending_user: str | None = None  # name from USER, awaiting PASS
        self.maildrop: Maildrop | None = None
        self.utf8_mode = False  # RFC 6856 UTF8 given
        self.closed = False
        self._sink = sink
        self._limits = ctx.config.limits
        self._input = bytearray()
        self._discarding = False  # skipping the rest of an over-long line
        self._line_reader: LineReader | None = None  # claims the next line (AUTH exchange)
        self._busy = False  # a command (or its body) has not finished
        self._in_loop = False
        self._input_paused = False
        self._bad_commands = 0
        self._idle_call = None
        self._end_reason = "client closed"
        self._lost = False
        self._shutting_down = False

    # -- contract with the adapter --------------------------------------

    def start(self) -> None:
        """Send the greeting (RFC 1939 §4) and start the idle timer."""
        self._send(replies.greeting(self.ctx.config.server.hostname))
        self._update_flow()

    def data_received(self, data: bytes) -> None:
        """Take received bytes; run every complete command line, in order, that can run now."""
        if self.closed:
            return
        self._input += data
        self._process_input()

    def connection_lost(self) -> None:
        """The connection is gone: stop timers, forget the maildrop's marks, log the connection.

        A connection dropped before QUIT removes nothing (RFC 1939 §6).
        """
        if self._lost:
            return
        self._lost = True
        self.closed = True
        self._cancel_idle_timer()
        self._input.clear()
        self._line_reader = None
        if not (self._busy and self.state is State.UPDATE):
            self._release_maildrop()  # else when UPDATE finishes (_command_finished)
        log.info(
            "connection protocol=pop3 peer={peer} tls={tls} user={user} end={end}",
            peer=self.client_ip,
            tls=self.tls_active,
            user=self.maildrop.user if self.maildrop else "-",
            end=self._end_reason,
        )

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: ``-ERR [SYS/TEMP]`` and close, without UPDATE
        (RFC 1939 §6: nothing marked is removed).

        At once when no command runs; else once it has finished (a running
        QUIT's UPDATE completes, a body being sent is sent whole). ``force``
        closes at once in every case (the shutdown timeout passed).
        """
        self._shutting_down = True
        if force or not self._busy:
            self._end_shut_down()

    def _end_shut_down(self) -> None:
        if not self.closed:
            self._send(replies.SHUTTING_DOWN)
            self._close("shutdown")

    def plaintext_allowed(self) -> bool:
        """Whether USER/PASS may be used now: under TLS, or if the config allows plaintext."""
        return self.tls_active or self.ctx.config.auth.allow_plaintext

    def enter_transaction(self, maildrop: Maildrop) -> None:
        """Authenticated: the maildrop is locked in for the session (RFC 1939 §5)."""
        self.maildrop = maildrop
        self.state = State.TRANSACTION

    def read_next_line(self, reader: LineReader) -> None:
        """Give the next complete input line to ``reader`` instead of the command table.

        For a command that asks the client something (AUTH's challenges). The
        line comes through the line limit like a command; ``reader`` returns a
        handler result, which is answered like a command's. An over-long line
        is answered ``-ERR`` and ends the claim, so the exchange is abandoned.
        """
        self._line_reader = reader

    # -- input ---------------------------------------------------------------

    def _process_input(self) -> None:
        """Run complete lines until none is left, one waits, or the session closes."""
        self._in_loop = True
        try:
            while not self._busy and not self.closed:
                line = self._next_line()
                if line is None:
                    break
                self._execute(line)
        finally:
            self._in_loop = False
        self._update_flow()

    def _next_line(self) -> bytes | None:
        """The next complete command line without its line end, or None if none is complete."""
        line_max = self._limits.pop3_line_max
        while not self.closed:
            end = self._input.find(b"\n")
            if end < 0:
                # +1: the CR of the CRLF may have arrived without its LF.
                if self._discarding:
                    self._input.clear()
                elif len(self._input) > line_max + 1:
                    self._input.clear()
                    self._discarding = True
                    self._line_reader = None
                    self._bad_command(replies.LINE_TOO_LONG)
                return None
            line = bytes(self._input[:end])
            del self._input[:end + 1]
            if self._discarding:
                self._discarding = False  # the over-long line ends here; resynchronised
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > line_max:
                self._line_reader = None
                self._bad_command(replies.LINE_TOO_LONG)
                continue
            return line
        return None

    # -- commands ------------------------------------------------------------

    def _execute(self, line: bytes) -> None:
        """Hand the line to the reader that claimed it, or run it as a command."""
        reader, self._line_reader = self._line_reader, None
        if reader is not None:
            self._run(lambda: reader(line), syntax="")
            return
        if b"\0" in line:
            # No POP3 argument may hold NUL (RFC 1939 §3: printable ASCII; RFC 6856 §2.2: UTF-8
            # text); refused before any handler could pass one on to a password check.
            self._bad_command(replies.NUL_IN_COMMAND)
            return
        guard = self.ctx.abuse
        if guard is not None and not guard.command_allowed(self.client_ip, "pop3"):
            self._send(replies.TOO_MANY_COMMANDS)
            return
        keyword, _, rest = line.partition(b" ")
        spec = COMMANDS.get(keyword.upper())  # RFC 1939 §3: keywords are case-insensitive
        if spec is None:
            self._bad_command(replies.UNKNOWN_COMMAND)
            return
        if self.state not in spec.states:
            self._bad_command(replies.BAD_STATE)
            return
        self._run(lambda: spec.handler(self, split_arguments(spec, rest)), spec.syntax)

    def _run(self, call: Callable[[], HandlerResult], syntax: str) -> None:
        """Run a handler (``call``) and answer its result, now or when its Deferred fires.

        ``syntax`` is the command's syntax for the reply to a CommandSyntaxError
        (``""`` for a line reader, which must not raise one).
        """
        try:
            result = call()
        except CommandSyntaxError:
            if not syntax:
                result = self._unexpected(Failure())
            else:
                self._bad_command(replies.syntax_error(syntax))
                return
        except MailError as error:
            result = replies.from_error(error)
        except Exception:
            result = self._unexpected(Failure())
        if isinstance(result, Deferred):
            self._busy = True
            result.addErrback(self._unexpected)
            result.addCallback(self._command_finished)
        else:
            self._deliver(result)

    def _command_finished(self, result: Reply | Outcome) -> None:
        """A waiting command's result arrived: answer it and go on with buffered input."""
        self._busy = False
        if self.closed:
            if self._lost:
                self._release_maildrop()  # the UPDATE the connection dropped during is over
            return
        self._deliver(result)
        self._continue()

    def _deliver(self, result: Reply | Outcome) -> None:
        """Send a handler's reply, start its body stream, then close or start TLS if asked."""
        outcome = result if isinstance(result, Outcome) else Outcome(result)
        self._send(outcome.reply)
        if outcome.body is not None:
            self._busy = True
            d = self._sink.send_stream(outcome.body)
            d.addCallbacks(self._body_sent, self._body_failed)
        if outcome.then == THEN_STARTTLS:
            self._start_tls()
        elif outcome.then == THEN_CLOSE:
            self._close("quit")

    def _body_sent(self, _: object) -> None:
        self._busy = False
        self._continue()

    def _body_failed(self, failure: Failure) -> None:
        # Part of a multi-line reply is out: no reply can follow safely, so hang up.
        log.failure("pop3 body stream failed peer={peer}", failure, peer=self.client_ip)
        self._busy = False
        self._close("internal error")

    def _continue(self) -> None:
        """Resume input processing unless the loop that started the command is still running."""
        if self._shutting_down:
            self._end_shut_down()
        elif not self._in_loop and not self.closed:
            self._process_input()

    def _unexpected(self, failure: Failure) -> Reply | Outcome:
        """An exception nobody expected: log it with its traceback, answer [SYS/TEMP].

        The connection survives, except in UPDATE (QUIT), which always ends it.
        """
        log.failure("pop3 command failed peer={peer}", failure, peer=self.client_ip)
        if self.state is State.UPDATE:
            return Outcome(replies.TEMPORARY_FAILURE, then=THEN_CLOSE)
        return replies.TEMPORARY_FAILURE

    def _bad_command(self, reply: Reply) -> None:
        """Answer a bad command; the last one allowed closes the connection."""
        self._bad_commands += 1
        if self._bad_commands >= self._limits.pop3_bad_commands_max:
            self._send(replies.TOO_MANY_BAD_COMMANDS)
            self._close("too many bad commands")
        else:
            self._send(reply)

    # -- connection actions ------------------------------------------------

    def _send(self, reply: Reply | Challenge) -> None:
        self._sink.send(reply.to_bytes())

    def _release_maildrop(self) -> None:
        """Give up the maildrop lock, if this session holds one (idempotent)."""
        if self.maildrop is not None:
            maildrop_locks(self.ctx).release(self.maildrop.user, self)
            if self.ctx.abuse is not None:
                self.ctx.abuse.session_closed(self.maildrop.user, self)

    def _start_tls(self) -> None:
        """RFC 2595 §4: TLS starts right after the +OK; anything pipelined behind
        STLS arrived in plaintext and is thrown away, and the state is reset."""
        self._input.clear()
        self._discarding = False
        self._line_reader = None
        self.pending_user = None
        self.utf8_mode = False
        self.state = State.AUTHORIZATION
        self.tls_active = True
        self._sink.start_tls()

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._end_reason = reason
        self._input.clear()
        self._line_reader = None
        self._release_maildrop()  # RFC 1939 §6: QUIT's UPDATE is over, or it never began
        self._cancel_idle_timer()
        if self._input_paused:
            # Let the transport see the peer's close (or RST) while it finishes writing.
            self._input_paused = False
            self._sink.resume_input()
        self._sink.close()

    # -- flow control and idle timer --------------------------------------

    def _update_flow(self) -> None:
        """Pause reading while a command runs; (re)arm the idle timer while waiting for one."""
        self._cancel_idle_timer()
        if self.closed:
            return
        if self._busy:
            if not self._input_paused:
                self._input_paused = True
                self._sink.pause_input()
            return
        if self._input_paused:
            self._input_paused = False
            self._sink.resume_input()
        self._idle_call = self.ctx.clock.callLater(self._limits.pop3_idle_timeout, self._idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None

    def _idle_timeout(self) -> None:
        # RFC 1939 §3: close without a response and without entering UPDATE.
        self._idle_call = None
        self._close("idle timeout")
