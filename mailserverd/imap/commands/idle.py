"""IDLE (RFC 2177; RFC 9051 §6.3.13): the server pushes mailbox changes until
the client says DONE.

While idling, the selected mailbox is polled on ``ctx.clock`` every
:data:`POLL_INTERVAL` seconds with the session's one way of reporting changes,
:meth:`ImapSession.report_mailbox_changes`: a read of the change log after the
last reported MODSEQ, which finds nothing cheaply when nothing changed, else
reports new messages (EXISTS), expunged ones (EXPUNGE or VANISHED) and flag
changes (untagged FETCH FLAGS). Any line
but ``DONE`` ends the IDLE with a tagged BAD. The session's autologout timer
(``imap_idle_timeout``, at least 30 minutes, RFC 9051 §5.4) keeps running, so an
IDLE that is never ended is closed with ``* BYE`` like any idle connection
(RFC 2177 §3: clients re-issue IDLE at least every 29 minutes).

Polling costs one short read transaction per idling session per interval. The
change log could instead notify: the store's writer knows each committed
record's (user_id, mailbox_id); a per-process registry of idling sessions by
mailbox_id, called from the writer's commit callback on the reactor thread,
would make IDLE push at commit time and poll only for changes other processes
(the CLI) made.
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

#: Seconds between two looks at the selected mailbox while idling.
POLL_INTERVAL = 1.0


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

    def start(self) -> Deferred:
        session = self._session
        if session.selected is not None:
            session.report_mailbox_changes()
        session.send(responses.continuation("idling"))
        session.read_next_line(self._line)
        self._schedule()
        return self._done

    def _line(self, line: bytes) -> None:
        """The client's line: DONE ends the IDLE (RFC 2177 §3), anything else is BAD."""
        self._stop()
        if line.upper() == b"DONE":
            self._done.callback(Completion("IDLE terminated"))
        else:
            self._done.errback(ParseError("Expected DONE"))

    def _schedule(self) -> None:
        if self._session.selected is not None:
            self._timer = self._session.ctx.clock.callLater(POLL_INTERVAL, self._poll)

    def _stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _poll(self) -> None:
        """Report what changed in the selected mailbox since the last look."""
        self._timer = None
        session = self._session
        if session.closed or self._done.called or session.selected is None:
            return
        try:
            session.report_mailbox_changes()
        except (StoreError, MailError) as error:
            # The mailbox was deleted or the store is failing: keep the IDLE
            # (DONE must still work) and try again at the next tick.
            log.info("idle-poll-failed user={user} error={error}",
                     user=session.user, error=type(error).__name__)
        self._schedule()
