"""IDLE (RFC 2177; RFC 9051 §6.3.13): the server pushes mailbox changes until
the client says DONE.

While idling, the session's one way of reporting changes,
:meth:`ImapSession.report_mailbox_changes` (a read of the change log after the
last reported MODSEQ: new messages as EXISTS, expunged ones as EXPUNGE or
VANISHED, flag changes as untagged FETCH FLAGS), runs when the store says the
user's mail changed (:meth:`LMDBStore.watch_changes`, called once the write is
committed: SMTP deliveries, POP3, other IMAP sessions of this process), and
every ``imap_idle_poll_interval`` seconds on ``ctx.clock`` for changes other
processes (the CLI) made. Any line but ``DONE`` ends the IDLE with a tagged BAD. The session's autologout timer
(``imap_idle_timeout``, at least 30 minutes, RFC 9051 §5.4) keeps running, so an
IDLE that is never ended is closed with ``* BYE`` like any idle connection
(RFC 2177 §3: clients re-issue IDLE at least every 29 minutes).

A poll costs one short read transaction; the push makes the poll a fallback,
so 5,000 idling sessions cost 1,000 reads a second at the default, not 5,000.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserverd.errors import MailError
from mailserverd.imap import responses
from mailserverd.imap.parser import ParseError
from mailserverd.imap.responses import Completion
from mailserverd.store.errors import StoreError

log = Logger(namespace="mailserverd.imap")


def run(session, command) -> Deferred:
    """``IDLE``: send ``+ idling``, report changes until the client sends ``DONE``.

    Returns a Deferred that fires with the tagged OK after DONE, or fails
    with ParseError (tagged BAD) for any other line. Changes made before the
    IDLE are reported first (RFC 2177 §3 allows them at any time).
    """
    command.args.expect_end()
    return _Idle(session).start()


class _Idle:
    """One IDLE command: the poll timer and the wait for DONE."""

    def __init__(self, session):
        self._session = session
        self._done: Deferred = Deferred()
        self._timer = None
        self._keepalive = None
        self._unwatch = None

    def start(self) -> Deferred:
        session = self._session
        if session.selected is not None:
            self._watch()
            session.report_mailbox_changes()
        session.send(responses.continuation("idling"))
        session.read_next_line(self._line)
        self._schedule()
        self._schedule_keepalive()
        return self._done

    def _line(self, line: bytes) -> None:
        """The client's line: DONE ends the IDLE (RFC 2177 §3), anything else is BAD."""
        self._stop()
        if line.upper() == b"DONE":
            self._done.callback(Completion("IDLE terminated"))
        else:
            self._done.errback(ParseError("Expected DONE"))

    def _watch(self) -> None:
        """Be poked by the store after each committed change of the user's mail
        (before the first report, so no commit falls between the two)."""
        watch = getattr(self._session.ctx.store, "watch_changes", None)
        if watch is None:
            return  # a store without push: the poll alone
        try:
            self._unwatch = watch(self._session.user, self._poke)
        except StoreError:
            pass  # the account is gone; the poll finds out

    def _poke(self) -> None:
        """The user's mail changed: report at the next reactor turn (a burst of
        commits in one turn makes one report)."""
        if self._timer is not None and self._timer.getTime() <= self._session.ctx.clock.seconds():
            return  # a report is already due
        self._cancel_poll()
        self._timer = self._session.ctx.clock.callLater(0, self._poll)

    def _schedule(self) -> None:
        if self._session.selected is not None:
            interval = self._session.limits.imap_idle_poll_interval
            self._timer = self._session.ctx.clock.callLater(interval, self._poll)

    def _cancel_poll(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule_keepalive(self) -> None:
        interval = self._session.limits.imap_idle_notify_interval
        self._keepalive = self._session.ctx.clock.callLater(interval, self._still_here)

    def _still_here(self) -> None:
        """Send ``* OK Still here`` now and then (Dovecot's imap_idle_notify_interval).

        Client quirk: a NAT box or firewall forgets a connection that is
        silent for minutes, and Outlook and iOS then wait on a dead IDLE.
        RFC 9051 §7.1 lets an untagged OK carry just text at any time.
        """
        self._keepalive = None
        if self._session.closed or self._done.called:
            self._stop()
            return
        self._session.send(responses.untagged(b"OK Still here"))
        self._schedule_keepalive()

    def _stop(self) -> None:
        for timer in (self._timer, self._keepalive):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._keepalive = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _poll(self) -> None:
        """Report what changed in the selected mailbox since the last look."""
        self._timer = None
        session = self._session
        if session.closed or self._done.called or session.selected is None:
            self._stop()
            return
        try:
            session.report_mailbox_changes()
        except (StoreError, MailError) as error:
            # The mailbox was deleted or the store is failing: keep the IDLE
            # (DONE must still work) and try again at the next tick.
            log.info("idle-poll-failed user={user} error={error}",
                     user=session.user, error=type(error).__name__)
        self._schedule()
