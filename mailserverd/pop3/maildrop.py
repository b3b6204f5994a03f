"""The POP3 maildrop: a session's snapshot of INBOX, its exclusive lock, and opening it at login.

RFC 1939 §5: once authenticated, the server acquires an exclusive-access
lock on the maildrop, so that two POP3 sessions never delete from or number
the same messages at once. :class:`MaildropLocks` is that lock; one instance
serves every POP3 listener of the server (pop3 on 110 and pop3s on 995), found
through :func:`maildrop_locks`. IMAP sessions do not take it: only POP3's
fixed message numbering needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from mailserverd.pop3 import replies
from mailserverd.pop3.replies import Reply
from mailserverd.store.errors import Expunged, NotFound, StoreError
from mailserverd.store.types import MessageInfo

if TYPE_CHECKING:  # pragma: no cover
    from mailserverd.pop3.session import POP3Session

#: Attribute of the ServerContext that holds the server's one MaildropLocks.
_LOCKS_ATTRIBUTE = "pop3_maildrop_locks"


@dataclass
class Maildrop:
    """The user's INBOX as snapshotted at login (RFC 1939 §5).

    Message numbers are 1-based positions in ``messages`` and stay fixed for
    the session; mail arriving later is seen by the next session. ``deleted``
    holds the numbers marked by DELE; nothing is removed before QUIT.
    """

    user: str
    mailbox_id: int
    uidvalidity: int
    messages: tuple[MessageInfo, ...]
    deleted: set[int] = field(default_factory=set)

    def live(self) -> Iterator[tuple[int, MessageInfo]]:
        """(number, message) of every message not marked deleted, in order."""
        for index, message in enumerate(self.messages):
            if index + 1 not in self.deleted:
                yield index + 1, message

    def summary(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted."""
        count = octets = 0
        for _, message in self.live():
            count += 1
            octets += message.size
        return count, octets

    def unique_id(self, message: MessageInfo) -> bytes:
        """RFC 1939 §7 UIDL: stable across sessions, 1-70 octets in 0x21-0x7E."""
        return b"%d.%d" % (self.uidvalidity, message.uid)


class MaildropLocks:
    """Which POP3 session holds each user's maildrop (RFC 1939 §5, RFC 2449 §8.1.2 IN-USE).

    In memory, on the reactor thread: the server is one process, so a dict is
    the whole lock. An owner is any object (the session); only the owner can
    release its lock.
    """

    def __init__(self) -> None:
        self._owners: dict[str, object] = {}

    def acquire(self, user: str, owner: object) -> bool:
        """Lock ``user``'s maildrop for ``owner``; False if another owner holds it."""
        holder = self._owners.setdefault(user, owner)
        return holder is owner

    def release(self, user: str, owner: object) -> None:
        """Unlock ``user``'s maildrop if ``owner`` holds it; otherwise do nothing."""
        if self._owners.get(user) is owner:
            del self._owners[user]

    def holder(self, user: str) -> object | None:
        """The owner holding ``user``'s maildrop, or None."""
        return self._owners.get(user)


def maildrop_locks(ctx) -> MaildropLocks:
    """The server's one MaildropLocks, kept on the ServerContext ``ctx`` (made on first use).

    Every POP3 listener is built from the same context, so pop3 and pop3s
    sessions of one user exclude each other.
    """
    locks = getattr(ctx, _LOCKS_ATTRIBUTE, None)
    if locks is None:
        locks = MaildropLocks()
        setattr(ctx, _LOCKS_ATTRIBUTE, locks)
    return locks


def reply_for_store_error(error: StoreError) -> Reply:
    """The reply for a store error (Dovecot-style closed set, mapped at the edge)."""
    if error.temporary:
        return replies.TEMPORARY_FAILURE
    if isinstance(error, (NotFound, Expunged)):
        return replies.MESSAGE_GONE
    return replies.PERMANENT_FAILURE


def open_maildrop(session: "POP3Session", user: str) -> Reply:
    """Authenticated as ``user``: lock and snapshot INBOX, enter TRANSACTION (RFC 1939 §5).

    Returns the reply to the PASS or AUTH that succeeded: the maildrop
    summary, ``-ERR [IN-USE]`` if another session holds the lock (the session
    stays in AUTHORIZATION, RFC 2449 §8.1.2), ``-ERR [SYS/TEMP]`` if the account
    has ``sessions_per_account_max`` sessions open, or a store error reply (the
    lock is released again, also if the store raises something unexpected).
    Side effects: the lock, ``session.enter_transaction``.
    """
    if session.closed:
        return replies.OK_PLAIN  # nobody to tell; enter no state for a dead connection
    guard = session.ctx.abuse
    if guard is not None and not guard.session_opened(user, session, session.client_ip, "pop3"):
        return replies.TOO_MANY_SESSIONS
    locks = maildrop_locks(session.ctx)
    if not locks.acquire(user, session):
        if guard is not None:
            guard.session_closed(user, session)
        return replies.MAILDROP_IN_USE
    try:
        return _snapshot_inbox(session, user)
    finally:
        if session.maildrop is None:  # not entered: free the lock and the count
            locks.release(user, session)
            if guard is not None:
                guard.session_closed(user, session)


def _snapshot_inbox(session: "POP3Session", user: str) -> Reply:
    """Read INBOX's message list into the session's maildrop; a reply for store errors."""
    store = session.ctx.store
    try:
        mailbox = store.get_mailbox(user, "INBOX")
        messages = tuple(store.list_messages(user, mailbox.mailbox_id))
    except NotFound:
        return replies.PERMANENT_FAILURE  # an account always has an INBOX: a broken account
    except StoreError as error:
        return reply_for_store_error(error)
    maildrop = Maildrop(user, mailbox.mailbox_id, mailbox.uidvalidity, messages)
    session.enter_transaction(maildrop)
    return replies.maildrop_summary(*maildrop.summary())
