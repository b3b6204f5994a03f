"""The IMAP session: per-connection state machine, sans-I/O.

Bytes come in through :meth:`ImapSession.data_received`; everything the session
does to the connection goes through its :class:`SessionOutput` (write bytes,
start TLS, close), so the same core runs under the Twisted adapter and in
transcript tests. Store calls and password checks may return Deferreds; while
one is pending the session takes no further command from its input, so
replies always come in command order (RFC 3501 §5.5 allows no more).

States follow RFC 3501 §3: not authenticated -> authenticated <-> selected ->
logout. Limits come from ``ctx.config.limits`` (imap_line_max,
imap_literal_max, imap_bad_commands_max, imap_idle_timeout,
imap_unauth_timeout).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd.errors import MailError, fresh
from mailserverd.imap import responses
from mailserverd.imap.commands import (
    Command,
    CommandSpec,
    State,
    lookup,
)
from mailserverd.imap.parser import (
    ArgCursor,
    CommandReader,
    ContinuationNeeded,
    FramedCommand,
    LineTooLong,
    LiteralRefused,
    ParseError,
    SequenceSet,
    read_command_name,
    read_tag,
)
from mailserverd.imap.commands.append import appendlimit_capability
from mailserverd.imap.commands.authenticate import auth_capabilities
from mailserverd.imap.commands.condstore import unsolicited_fetch
from mailserverd.imap.commands.expunge import report_expunged
from mailserverd.imap.commands import recent
from mailserverd.imap.commands.recent import RecentUids
from mailserverd.imap.responses import Completion
from mailserverd.store.errors import StoreError

log = Logger(namespace="mailserverd.imap")

#: The BYE text of a session ended because the server stops.
SHUTDOWN_BYE = "Server shutting down"

#: What the server implements, in every state (RFC 3501 §6.1.1, RFC 9051 §6.1.1).
#: Only finished extensions are listed: IMAP4rev2 (9051), UTF8=ACCEPT (6855),
#: LITERAL+ (7888; never with LITERAL-, which §5 forbids beside it), SASL-IR (4959), ID (2971), ENABLE (5161), IDLE (2177),
#: NAMESPACE (2342), UNSELECT (3691), UIDPLUS (4315), MOVE (6851), CHILDREN (3348),
#: LIST-EXTENDED (5258), LIST-STATUS (5819), SPECIAL-USE and CREATE-SPECIAL-USE
#: (6154), STATUS=SIZE (8438), ESEARCH (4731), SEARCHRES (5182), MULTIAPPEND
#: (3502), CONDSTORE and QRESYNC (7162), SORT, SORT=DISPLAY (5256, 5957), THREAD
#: (5256), QUOTA and QUOTA=RES-STORAGE (9208), PREVIEW (8970), SAVEDATE (8514), OBJECTID (8474),
#: COMPRESS=DEFLATE (4978), BINARY (3516); APPENDLIMIT=n (7889)
#: and AUTH=... are added per session.
BASE_CAPABILITIES = (
    "IMAP4rev1", "IMAP4rev2", "UTF8=ACCEPT", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
    "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS",
    "SPECIAL-USE", "CREATE-SPECIAL-USE", "STATUS=SIZE", "ESEARCH", "SEARCHRES", "MULTIAPPEND",
    "CONDSTORE", "QRESYNC", "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES", "QUOTA", "QUOTA=RES-STORAGE", "PREVIEW", "SAVEDATE", "OBJECTID",
    "COMPRESS=DEFLATE", "BINARY",
)


class SessionOutput(Protocol):
    """What the session does to its connection (implemented by the adapter)."""

    def write(self, data: bytes) -> None:
        """Send bytes to the client, in order."""

    def start_tls(self) -> None:
        """Begin the server side of a TLS handshake; earlier writes go out in clear first."""

    def close(self) -> None:
        """Close the connection once written bytes are sent."""

    def start_compression(self, pending: bytes) -> None:
        """COMPRESS DEFLATE (RFC 4978 §3): compress later writes, inflate all input
        from ``pending`` on (bytes received but not yet read as commands)."""

    def wait_writable(self) -> "Deferred[None] | None":
        """None when more may be written now; else a Deferred that fires when the
        client has read enough (the connection's send buffer drained)."""


@dataclass
class SelectedMailbox:
    """The selected mailbox as this session sees it (RFC 3501 §2.3.1.2).

    ``uids[seq - 1]`` is the UID of message sequence number ``seq``: the map
    only changes when the session reports it (EXISTS, EXPUNGE), never behind
    the client's back.
    """

    mailbox_id: int
    name: str
    readonly: bool
    uidvalidity: int
    uidnext: int
    uids: list[int] = field(default_factory=list)
    #: The saved search result ``$`` (RFC 9051 §6.4.4.1): UIDs, some perhaps expunged since.
    saved_search_uids: tuple[int, ...] = ()
    #: The mailbox's MODSEQ up to which changes were reported to the client
    #: (RFC 7162 §3.1.2.1); the change log is read from here on.
    highestmodseq: int = 0
    #: UIDs expunged elsewhere whose EXPUNGE had to wait (RFC 3501 §7.4.1): still in ``uids``.
    pending_expunged: set[int] = field(default_factory=set)
    #: uid -> MODSEQ of flag changes this session's own responses already showed
    #: (STORE, FETCH setting \Seen), so that they are not reported twice.
    flags_shown: dict[int, int] = field(default_factory=dict)
    #: UIDs recent in this session (RFC 3501 §2.3.2), and the claim still out (commands/recent.py).
    recent: RecentUids = field(default_factory=RecentUids)
    claiming: Deferred | None = None

    def __len__(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        """The sequence number of ``uid``, or ``None`` if it is not in the map."""
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def resolve_seqs(self, seqset: SequenceSet) -> list[tuple[int, int]]:
        """``(seq, uid)`` of each message a sequence-number set names, in order.

        Raises ParseError (tagged BAD) for a number above the message count,
        including ``*`` in an empty mailbox (RFC 3501 §9 seq-number).
        """
        if seqset.saved:
            return self._saved()
        count = len(self.uids)
        wanted: set[int] = set()
        for low, high in seqset.bounds(count):
            if low < 1 or high > count:
                raise ParseError("Invalid message sequence number")
            wanted.update(range(low, high + 1))
        return [(seq, self.uids[seq - 1]) for seq in sorted(wanted)]

    def resolve_uids(self, seqset: SequenceSet) -> list[tuple[int, int]]:
        """``(seq, uid)`` of each message a UID set names, in order.

        UIDs not in the mailbox are ignored (RFC 3501 §6.4.8); ``*`` is the
        last UID, or UIDNEXT in an empty mailbox (RFC 3501 §9), so ``n:*``
        always includes the last message.
        """
        if seqset.saved:
            return self._saved()
        star = self.uids[-1] if self.uids else self.uidnext
        indexes: set[int] = set()
        for low, high in seqset.bounds(star):
            start = bisect.bisect_left(self.uids, low)
            stop = bisect.bisect_right(self.uids, high)
            indexes.update(range(start, stop))
        return [(index + 1, self.uids[index]) for index in sorted(indexes)]


    def note_flags_shown(self, info) -> None:
        """Record that a FETCH response already told the client ``info``'s flags and MODSEQ."""
        if info.modseq > self.flags_shown.get(info.uid, 0):
            self.flags_shown[info.uid] = info.modseq

    def _saved(self) -> list[tuple[int, int]]:
        """``(seq, uid)`` of the saved result's messages still in the mailbox."""
        found = ((self.seq_of(uid), uid) for uid in sorted(self.saved_search_uids))
        return [(seq, uid) for seq, uid in found if seq is not None]


class ImapSession:
    """One IMAP connection's protocol state.

    Takes the server context, the output, the client's IP and whether TLS is
    already on (implicit TLS). Call :meth:`start` once, then
    :meth:`data_received` with each chunk and :meth:`connection_lost` at the
    end. Handlers use the attributes ``ctx``, ``state``, ``user``,
    ``selected``, ``tls_active``, ``compression_active``, ``client_ip`` and the
    methods documented below; nothing else. The adapter also uses
    :meth:`wants_input`, ``input_wanted`` and :meth:`end` (COMPRESS's inflation).
    """

    def __init__(self, ctx: Any, output: SessionOutput, *, client_ip: str, tls_active: bool):
        self.ctx = ctx
        self.output = output
        self.client_ip = client_ip
        self.tls_active = tls_active
        self.limits = ctx.config.limits
        self.hostname = ctx.config.server.hostname
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.selected: SelectedMailbox | None = None
        #: Extensions the client turned on with ENABLE (RFC 5161), upper-case.
        self.enabled: set[str] = set()
        self.reader = CommandReader(self.limits.imap_line_max, self._literal_allowed)
        self.closed = False
        self._busy = False
        self._pumping = False
        self._bad_commands = 0
        self._tls_after_reply = False
        self._compress_after_reply = False
        #: COMPRESS DEFLATE is on (RFC 4978).
        self.compression_active = False
        #: Called (by no argument) when the session takes input again after a
        #: command that waited; the adapter feeds it held-back inflated input.
        self.input_wanted: Callable[[], None] | None = None
        self._close_after_reply = False
        self._idle_timer = None
        self._unauth_timer = None
        self._line_reader: Callable[[bytes], None] | None = None
        self._shutting_down = False

    # ------------------------------------------------------------------
    # connection events

    def start(self) -> None:
        """Send the greeting and start the timers (RFC 3501 §7.1.1)."""
        clock = self.ctx.clock
        self._idle_timer = clock.callLater(self.limits.imap_idle_timeout, self._timed_out)
        self._unauth_timer = clock.callLater(self.limits.imap_unauth_timeout, self._timed_out)
        caps = " ".join(self.capabilities())
        self.send(responses.untagged_status("OK", f"{self.hostname} ready", f"CAPABILITY {caps}"))

    def data_received(self, data: bytes) -> None:
        """Take bytes from the client and run every whole command they complete."""
        if self.closed:
            return
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.reset(self.limits.imap_idle_timeout)
        self.reader.feed(data)
        self._pump()

    def connection_lost(self) -> None:
        """The connection is gone: stop the timers, drop any later output."""
        self.closed = True
        self.state = State.LOGOUT
        self._cancel_timers()
        self._end_login()

    # ------------------------------------------------------------------
    # what handlers use

    def send(self, data: bytes) -> None:
        """Write response bytes (nothing after the connection is closed)."""
        if not self.closed:
            self.output.write(data)

    def capabilities(self) -> list[str]:
        """The capabilities that work now (RFC 3501 §6.1.1, §6.2.3)."""
        caps = list(BASE_CAPABILITIES) + [appendlimit_capability(self.limits)]
        caps += auth_capabilities(self)
        if not self.tls_active and self.state is State.NOT_AUTHENTICATED:
            caps.append("STARTTLS")
            if not self.login_allowed():
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
        return caps

    @property
    def utf8_names(self) -> bool:
        """Mailbox names go as UTF-8, not modified UTF-7 (RFC 9051 §5.1; RFC 6855 §3)."""
        return "IMAP4REV2" in self.enabled or "UTF8=ACCEPT" in self.enabled

    def login_allowed(self) -> bool:
        """Whether passwords may be sent now: over TLS, or if plaintext is allowed."""
        return self.tls_active or self.ctx.config.auth.allow_plaintext

    def start_tls_after_reply(self) -> None:
        """STARTTLS: after the tagged OK, drop buffered input and start TLS (RFC 3501 §6.2.1)."""
        self._tls_after_reply = True

    def compress_after_reply(self) -> None:
        """COMPRESS: after the tagged OK, compress both ways (RFC 4978 §3)."""
        self._compress_after_reply = True

    def wants_input(self) -> bool:
        """Whether input given now is read at once: not while input is being
        read, nor while a command waits (unless it waits for a line)."""
        return (not self.closed and not self._pumping
                and (not self._busy or self._line_reader is not None))

    def close_after_reply(self) -> None:
        """LOGOUT: close once the tagged reply is written (RFC 3501 §6.1.3)."""
        self._close_after_reply = True

    def logged_in(self, user: str) -> None:
        """Enter the authenticated state as ``user`` (canonical address).

        Raises (a fresh) :data:`~mailserverd.imap.responses.TOO_MANY_SESSIONS`
        instead when the account has ``sessions_per_account_max`` sessions
        open; the session stays unauthenticated.
        """
        guard = self.ctx.abuse
        if guard is not None and not guard.session_opened(user, self, self.client_ip, "imap"):
            raise fresh(responses.TOO_MANY_SESSIONS)
        self.user = user
        self.state = State.AUTHENTICATED
        if self._unauth_timer is not None and self._unauth_timer.active():
            self._unauth_timer.cancel()
        self._unauth_timer = None

    def read_next_line(self, reader: Callable[[bytes], None]) -> None:
        """Give the next input line (without its line end) to ``reader``
        instead of running it as a command.

        For a running command that reads lines which are not commands:
        AUTHENTICATE's SASL responses (RFC 9051 §6.2.2) and IDLE's DONE
        (RFC 2177). The claim is for one line; the command stays running (no
        other command is taken) until its handler's Deferred fires. No
        literal is accepted in a claimed line (none of these lines has one):
        a line that ends in a literal marker is given to ``reader`` as it is,
        and its literal's bytes are never read as a command. An over-long
        line closes the connection as for a command.
        """
        self._line_reader = reader
        if not self._pumping:
            self._pump()  # the line may already be here
            self._notify_input_wanted()

    def select(self, mailbox: SelectedMailbox) -> None:
        """Enter the selected state with ``mailbox``."""
        self.selected = mailbox
        self.state = State.SELECTED

    def deselect(self) -> None:
        """Leave the selected state (a SELECT that fails also does, RFC 3501 §6.3.1)."""
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def report_mailbox_changes(self, expunges_allowed: bool = True) -> None:
        """Tell the client what changed in the selected mailbox since it was last told.

        Reads the store's change log after the MODSEQ last reported (so
        other sessions', SMTP delivery's and POP3's changes alike) and sends,
        in this order: the expunges (``* n EXPUNGE``, highest first, or ``*
        VANISHED uids`` once QRESYNC is on, RFC 7162 §3.2.10.2), ``* n
        EXISTS`` for new messages (RFC 3501 §7.3.1; then ``* n RECENT``,
        perhaps once their claim is written: commands/recent.py), and ``* n FETCH (FLAGS
        ...)`` for flag changes of messages the client knows (RFC 3501
        §7.4.2; UID and MODSEQ as :func:`condstore.unsolicited_fetch` says).

        With ``expunges_allowed`` False (a command using sequence numbers is
        running, RFC 3501 §7.4.1, RFC 9051 §7.5.1) expunges are held back,
        the messages keep their numbers, and they are reported at the next
        call that allows them. Raises a StoreError if the mailbox is gone.
        """
        mailbox = self.selected
        if mailbox is None:
            return
        changes = self.ctx.store.changes_since(self.user, mailbox.mailbox_id, mailbox.highestmodseq)
        gone = mailbox.pending_expunged | {uid for uid in changes.vanished
                                          if mailbox.seq_of(uid) is not None}
        if expunges_allowed:
            mailbox.pending_expunged = set()
            report_expunged(self, gone)
        else:
            mailbox.pending_expunged = gone
        known_last = mailbox.uids[-1] if mailbox.uids else 0
        added = [info.uid for info in changes.changed if info.uid > known_last]
        if added:
            mailbox.uids.extend(added)
            mailbox.uidnext = max(mailbox.uidnext, added[-1] + 1)
            self.send(responses.untagged(b"%d EXISTS" % len(mailbox.uids)))
            recent.note_new_messages(self, mailbox, added)  # then * n RECENT (RFC 3501 §7.3.2)
        shown = mailbox.flags_shown
        for info in changes.changed:
            if info.uid > known_last or info.uid in gone or shown.get(info.uid, 0) >= info.modseq:
                continue
            seq = mailbox.seq_of(info.uid)
            if seq is not None:
                self.send(unsolicited_fetch(self, seq, info))
        shown.clear()
        mailbox.highestmodseq = max(mailbox.highestmodseq, changes.highestmodseq)

    # ------------------------------------------------------------------
    # input processing

    def _literal_allowed(self, first_line: bytes, size: int, total: int) -> bool:
        """Literal policy: imap_literal_max per command; before login, no more than a line.

        Nothing a client sends before authenticating needs a long literal
        (LOGIN's two strings), so an unauthenticated peer cannot make us
        buffer megabytes. APPEND's messages are bounded by message_size_max
        each (RFC 7889 APPENDLIMIT) and imap_append_bytes_max together
        (RFC 3502 MULTIAPPEND). A line claimed by :meth:`read_next_line`
        takes no literal.
        """
        if self._line_reader is not None:
            return False
        if self.state is not State.NOT_AUTHENTICATED and _is_append(first_line):
            return (size <= self.limits.message_size_max
                    and total <= self.limits.imap_append_bytes_max)
        limit = self.limits.imap_literal_max
        if self.state is State.NOT_AUTHENTICATED:
            limit = min(limit, self.limits.imap_line_max)
        return total <= limit

    def _pump(self) -> None:
        """Run framed input until a command waits, input runs out, or we close."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self.closed and (not self._busy or self._line_reader is not None):
                event = self.reader.next_event()
                if event is None:
                    break
                if self._line_reader is not None and not isinstance(event, LineTooLong):
                    self._claimed_line(event)
                elif isinstance(event, FramedCommand):
                    self._execute(event)
                elif isinstance(event, ContinuationNeeded):
                    self.send(responses.continuation("Ready for literal data"))
                elif isinstance(event, LiteralRefused):
                    self._literal_refused(event)
                elif isinstance(event, LineTooLong):
                    self.send(responses.untagged_status("BAD", "Command line too long", responses.TOOBIG))
                    self._close("Too long command line")
        finally:
            self._pumping = False

    def _claimed_line(self, event: FramedCommand | LiteralRefused) -> None:
        """Hand a line to the reader :meth:`read_next_line` registered.

        The literal policy refuses every literal while a line is claimed, so
        the event is a one-line command or a refused literal (whose first
        line is the whole line; its bytes, if sent without waiting, close the
        connection as for a command).
        """
        reader, self._line_reader = self._line_reader, None
        if isinstance(event, LiteralRefused):
            reader(event.first_line)
            if event.client_did_not_wait:
                self._close("Literal sent without waiting for continuation")
            return
        reader(event.segments[0])

    def _literal_refused(self, event: LiteralRefused) -> None:
        """Answer a refused literal; close if the client sent it without waiting.

        APPEND's message over the limits gets ``NO [TOOBIG]`` (RFC 7889 §4,
        RFC 4469 §4.2): the command is fine, the message too big.
        """
        try:
            tag = read_tag(ArgCursor((event.first_line,)))
        except ParseError:
            tag = b"*"
        too_big_message = _is_append(event.first_line)
        if too_big_message:
            self.send(responses.tagged(tag, "NO", "Message too big", responses.TOOBIG))
        else:
            self.send(responses.tagged(tag, "BAD", "Literal too big", responses.TOOBIG))
        if event.client_did_not_wait:
            # Its bytes are already here, and may be anything; never run them.
            self._close("Literal sent without waiting for continuation")
            return
        if not too_big_message:
            self._count_bad()

    def _execute(self, framed: FramedCommand) -> None:
        """Parse the command head, check the table and state, run the handler."""
        if framed.segments == (b"",):
            return  # an empty line is not a command; ignore it
        cursor = ArgCursor(framed.segments)
        try:
            tag = read_tag(cursor)
        except ParseError:
            self._reply_bad(b"*", "Missing or invalid tag")
            return
        try:
            name = read_command_name(cursor)
        except ParseError:
            self._reply_bad(tag, "Missing or invalid command name")
            return
        guard = self.ctx.abuse
        if guard is not None and not guard.command_allowed(self.client_ip, "imap"):
            error = responses.TOO_MANY_COMMANDS
            self.send(responses.tagged(tag, error.code, error.text, error.enhanced))
            return
        spec = lookup(name)
        if spec is None:
            self._reply_bad(tag, "Unknown command")
            return
        if self.state not in spec.states:
            self._reply_bad(tag, self._wrong_state_text(spec))
            return
        self._run(spec, Command(tag, name, cursor))

    def _wrong_state_text(self, spec: CommandSpec) -> str:
        if self.state is State.NOT_AUTHENTICATED:
            return "Log in first"
        if self.state is State.AUTHENTICATED and spec.states == frozenset({State.SELECTED}):
            return "No mailbox selected"
        return f"{spec.name} is not allowed in this state"

    def _run(self, spec: CommandSpec, command: Command) -> None:
        """Call the handler; a Deferred result holds further input until it fires."""
        self._busy = True
        try:
            result = spec.run(self, command)
        except Exception:  # each kind is sorted out in _fail
            self._fail(Failure(), command)
            return
        if isinstance(result, Deferred):
            result.addCallbacks(self._succeed, self._fail,
                                callbackArgs=(command,), errbackArgs=(command,))
            return
        self._succeed(result, command)

    def _succeed(self, completion: Completion | None, command: Command) -> None:
        if self._wait_before_reply(self._succeed, completion, command):
            return
        completion = completion or Completion(f"{command.name} completed")
        self.send(responses.tagged(command.tag, "OK", completion.text, completion.code))
        self._command_done()

    def _fail(self, failure: Failure, command: Command) -> None:
        """Answer a failed command: BAD for syntax, its own reply for a MailError,
        the mapped reply for a store error, a generic temporary NO for a bug."""
        if self._wait_before_reply(self._fail, failure, command):
            return
        error = failure.value
        if isinstance(error, ParseError):
            self._reply_bad(command.tag, str(error))
        else:
            if isinstance(error, StoreError):
                error = responses.store_error_reply(error)
            elif not isinstance(error, MailError):
                log.failure("imap command {command} failed", failure, command=command.name)
                error = responses.INTERNAL_ERROR
            self.send(responses.tagged(command.tag, error.code, error.text, error.enhanced or None))
            if error.code == "BAD":
                self._count_bad()
        self._command_done()

    def _wait_before_reply(self, reply: Callable, *args) -> bool:
        """Whether the tagged reply must wait for a \\Recent claim to answer
        (its ``* n RECENT`` goes first); ``reply(*args)`` then runs later."""
        waiting = recent.reply_wait(self)
        if waiting is None:
            return False
        waiting.addBoth(lambda _: reply(*args))
        return True

    def _command_done(self) -> None:
        """After a tagged reply: STARTTLS/LOGOUT follow-ups, then the next command."""
        self._busy = False
        if self._tls_after_reply:
            self._tls_after_reply = False
            # RFC 3501 §6.2.1 / CVE-2011-0411: what the client sent after the
            # STARTTLS line was sent in clear; it is never read as a command.
            self.reader.discard_buffered()
            self.tls_active = True
            if not self.closed:
                self.output.start_tls()
        if self._compress_after_reply:
            self._compress_after_reply = False
            # RFC 4978 §3: compression starts right after the tagged OK's CRLF,
            # both ways; what the client pipelined behind COMPRESS is compressed.
            self.compression_active = True
            if not self.closed:
                self.output.start_compression(self.reader.take_buffered())
        if self._close_after_reply:
            self._close(None)
            return
        if self._shutting_down:
            self._close(SHUTDOWN_BYE)
            return
        if not self._pumping:
            self._pump()
            self._notify_input_wanted()

    def _notify_input_wanted(self) -> None:
        """Tell the adapter input is read again (it may be holding some back)."""
        if self.input_wanted is not None and self.wants_input():
            self.input_wanted()

    def _reply_bad(self, tag: bytes, text: str) -> None:
        self.send(responses.tagged(tag, "BAD", text) if tag != b"*"
                  else responses.untagged_status("BAD", text))
        self._count_bad()

    def _count_bad(self) -> None:
        """Count a rejected command; at imap_bad_commands_max, say BYE and close."""
        self._bad_commands += 1
        if self._bad_commands >= self.limits.imap_bad_commands_max:
            self._close("Too many invalid commands")

    # ------------------------------------------------------------------
    # ending

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: ``* BYE`` and close (RFC 9051 §7.1.5).

        At once when no command runs or the running one waits for the
        client (IDLE's DONE, an AUTHENTICATE response); else after the
        running command's tagged reply, so that it completes. ``force``
        closes at once in every case (the shutdown timeout passed).
        """
        self._shutting_down = True
        if force or not self._busy or self._line_reader is not None:
            self._close(SHUTDOWN_BYE)

    def end(self, bye_text: str) -> None:
        """End the session at once with ``* BYE bye_text`` (for the adapter, when
        the connection's input cannot be read on: corrupt compressed data)."""
        self._close(bye_text)

    def _timed_out(self) -> None:
        """An idle or unauthenticated timer fired (RFC 3501 §5.4 autologout)."""
        self._idle_timer = self._unauth_timer = None
        self._close("Autologout; idle for too long")

    def _close(self, bye_text: str | None) -> None:
        """Send ``* BYE bye_text`` (unless None: LOGOUT sent its own) and close."""
        if self.closed:
            return
        if bye_text is not None:
            self.send(responses.untagged_status("BYE", bye_text))
        self._cancel_timers()
        self.state = State.LOGOUT
        self.selected = None
        self.closed = True
        self._end_login()
        self.output.close()

    def _end_login(self) -> None:
        """No longer count as one of the user's sessions (idempotent)."""
        if self.user is not None and self.ctx.abuse is not None:
            self.ctx.abuse.session_closed(self.user, self)

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._unauth_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._unauth_timer = None


def _is_append(first_line: bytes) -> bool:
    """Whether a command's first line is an APPEND (its literals are messages)."""
    cursor = ArgCursor((first_line,))
    try:
        read_tag(cursor)
        return read_command_name(cursor) == "APPEND"
    except ParseError:
        return False
