"""\\Recent for IMAP4rev1 sessions (RFC 3501 §2.3.2), on the store's claim_recent.

A message is recent in exactly one session, as in Dovecot: the first session
that SELECTs its mailbox after it arrived, or the session that has the
mailbox selected when the message is first reported to it (EXISTS). The
store keeps the boundary (each mailbox's ``first_recent_uid``) and moves it
to UIDNEXT in :meth:`MailStore.claim_recent`, one durable write that returns
the UIDs it took, so two sessions never both get a message and a restart
makes no old mail recent again. Each session keeps what it took in its
:class:`RecentUids`.

- SELECT claims, and its ``* n RECENT`` counts what the claim returned.
- EXAMINE claims nothing (RFC 3501 §6.3.2): it shows as recent the messages
  no one has claimed yet, and leaves them recent for the next SELECT.
- ``* n EXISTS`` in a selected mailbox is followed by ``* n RECENT`` (RFC
  3501 §7.3.2) once the claim of the new messages has answered; the
  command's tagged reply waits for it (:func:`reply_wait`), so the RECENT
  always comes before the reply and never after.
- After ``ENABLE IMAP4rev2`` none of it: no claim, no RECENT, no \\Recent
  (RFC 9051 Appendix E item 12). Such a session leaves new messages recent
  for the next IMAP4rev1 session.
"""

from __future__ import annotations

import bisect

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserverd.imap import responses
from mailserverd.imap.commands import imap4rev2
from mailserverd.store.errors import StoreError

log = Logger(namespace="mailserverd.imap")

RECENT_FLAG = frozenset({"\\Recent"})
NONE = range(0)


class RecentUids:
    """The UIDs recent in one session's view of a mailbox, as sorted, disjoint ranges.

    Kept as ranges, not a set: one SELECT may claim a whole mailbox's UIDs.
    May hold UIDs of messages expunged since or not yet reported; only
    messages in the session's map count.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def add(self, uids: range) -> None:
        """Make ``uids`` (a step-1 range) recent; ranges that touch are merged."""
        if not uids:
            return
        start, stop = uids.start, uids.stop
        first = bisect.bisect_left(self._stops, start)  # the first range ending at or after start
        last = bisect.bisect_right(self._starts, stop)  # past the last range starting at or before stop
        if first < last:
            start = min(start, self._starts[first])
            stop = max(stop, self._stops[last - 1])
        self._starts[first:last] = [start]
        self._stops[first:last] = [stop]

    def copy(self) -> "RecentUids":
        """A copy that later changes to this one do not reach (for another thread)."""
        copied = RecentUids()
        copied._starts, copied._stops = list(self._starts), list(self._stops)
        return copied

    def __contains__(self, uid: int) -> bool:
        index = bisect.bisect_right(self._starts, uid) - 1
        return index >= 0 and uid < self._stops[index]

    def count_in(self, uids: list[int]) -> int:
        """How many of ``uids`` (sorted, as the session's map is) are recent."""
        return sum(bisect.bisect_left(uids, stop) - bisect.bisect_left(uids, start)
                   for start, stop in zip(self._starts, self._stops))


def tracks_recent(session) -> bool:
    """Whether this session gets \\Recent at all: not after ENABLE IMAP4rev2."""
    return imap4rev2.sends_recent(session)


def claim_for_select(session, info, readonly: bool) -> Deferred | range:
    """What SELECT or EXAMINE of the mailbox ``info`` makes recent in this session.

    SELECT: a Deferred that fires with the UIDs the store's claim took (no
    write when there is nothing to take, the common case of a mailbox
    selected again). EXAMINE: the unclaimed UIDs, taking none (RFC 3501
    §6.3.2). IMAP4rev2: none.
    """
    if not tracks_recent(session):
        return NONE
    unclaimed = range(info.first_recent_uid, info.uidnext)
    if readonly or not unclaimed:
        return unclaimed
    return session.ctx.store.claim_recent(session.user, info.mailbox_id)


def recent_response(mailbox) -> bytes:
    """``* n RECENT``: the messages in the session's map that are recent (RFC 3501 §7.3.2)."""
    return responses.untagged(b"%d RECENT" % mailbox.recent.count_in(mailbox.uids))


def flags_of(session, info) -> frozenset[str]:
    """The flags of message ``info`` as this session shows them: \\Recent added
    when it is recent here (RFC 3501 §2.3.2; never stored, never storable)."""
    mailbox = session.selected
    if mailbox is not None and info.uid in mailbox.recent:
        return info.flags | RECENT_FLAG
    return info.flags


def note_new_messages(session, mailbox, added: list[int]) -> None:
    """After ``* n EXISTS`` for the UIDs ``added``: make what is ours recent, send ``* n RECENT``.

    EXAMINE: the added messages no one has claimed, at once (one read).
    SELECT: a claim; its answer sends the RECENT, and until then
    :func:`reply_wait` holds the command's tagged reply. Raises StoreError
    (EXAMINE's read) if the mailbox is gone.
    """
    if not tracks_recent(session):
        return
    store = session.ctx.store
    if mailbox.readonly:
        info = store.get_mailbox_by_id(session.user, mailbox.mailbox_id)
        mailbox.recent.add(range(max(info.first_recent_uid, added[0]), added[-1] + 1))
        session.send(recent_response(mailbox))
        return
    claiming = store.claim_recent(session.user, mailbox.mailbox_id)
    mailbox.claiming = claiming

    def claimed(uids: range) -> None:
        if session.selected is mailbox and not session.closed:
            mailbox.recent.add(uids)
            session.send(recent_response(mailbox))

    def failed(failure) -> None:
        # The mailbox was deleted or the store is failing: the messages stay
        # unclaimed (recent for the next SELECT); nothing to tell the client.
        if failure.check(StoreError):
            log.info("recent-claim-failed user={user} error={error}",
                     user=session.user, error=type(failure.value).__name__)
        else:
            log.failure("recent claim of user {user} failed", failure, user=session.user)

    def settled(_) -> None:
        if mailbox.claiming is claiming:
            mailbox.claiming = None

    claiming.addCallbacks(claimed, failed).addBoth(settled)


def reply_wait(session) -> Deferred | None:
    """A Deferred to wait on before the tagged reply (a claim is still out), or None.

    Claims answer in the order they were made, so the latest one is enough.
    """
    mailbox = session.selected
    return None if mailbox is None else mailbox.claiming
