"""STATUS (RFC 3501 §6.3.10, RFC 9051 §6.3.11) and the STATUS response LIST-STATUS reuses.

Items: MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN (RFC 3501), DELETED
and SIZE (RFC 9051 §6.3.11; SIZE is also RFC 8438 STATUS=SIZE),
HIGHESTMODSEQ (RFC 7162 §3.1.6), APPENDLIMIT (RFC 7889 §4). Every value but
DELETED comes from the store's mailbox counters, so STATUS never scans a
mailbox unless DELETED is asked for (RECENT reads the keys of the
unclaimed messages only).
"""

from __future__ import annotations

from typing import Callable

from mailserverd.imap import responses
from mailserverd.imap.commands import condstore
from mailserverd.imap.objectid import mailbox_objectid
from mailserverd.imap.commands.imap4rev2 import reject_obsolete_status_items
from mailserverd.imap.commands.mailbox_names import encode_name, read_mailbox_name
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion
from mailserverd.store.types import MailboxInfo

__all__ = ["run", "read_status_items", "status_response", "STATUS_ITEMS"]


def _deleted_count(session, info: MailboxInfo) -> int:
    """RFC 9051 §6.3.11 DELETED: messages with \\Deleted (the one item that reads messages)."""
    messages = session.ctx.store.list_messages(session.user, info.mailbox_id)
    return sum(1 for message in messages if "\\Deleted" in message.flags)


def _deleted_storage(session, info: MailboxInfo) -> int:
    """RFC 9208 §4.2.3 DELETED-STORAGE: what EXPUNGE would free, as the sum of the
    RFC822.SIZE of the \\Deleted messages, in the STORAGE resource's units of
    1024 octets (§5.1), rounded down like GETQUOTA's usage."""
    messages = session.ctx.store.list_messages(session.user, info.mailbox_id)
    return sum(message.size for message in messages if "\\Deleted" in message.flags) // 1024


def _recent_count(session, info: MailboxInfo) -> int:
    """RFC 3501 §6.3.10 RECENT, as Dovecot counts it: for the selected mailbox
    this session's recent messages; for another, those no session has claimed
    yet (STATUS claims none, RFC 3501 §6.3.10). A key scan of just those."""
    selected = session.selected
    if selected is not None and selected.mailbox_id == info.mailbox_id:
        return selected.recent.count_in(selected.uids)
    if info.first_recent_uid >= info.uidnext:
        return 0  # the common case: nothing new since the last SELECT
    if info.first_recent_uid <= 1:
        return info.messages  # never selected: every message is new
    return session.ctx.store.count_messages_from(session.user, info.mailbox_id, info.first_recent_uid)


#: Item name -> its value for a mailbox (session, info) -> int, or None for NIL.
STATUS_ITEMS: dict[str, Callable] = {
    "MESSAGES": lambda session, info: info.messages,
    "RECENT": _recent_count,
    "UIDNEXT": lambda session, info: info.uidnext,
    "UIDVALIDITY": lambda session, info: info.uidvalidity,
    "UNSEEN": lambda session, info: info.unseen,
    "DELETED": _deleted_count,
    "DELETED-STORAGE": _deleted_storage,
    "SIZE": lambda session, info: info.size,  # RFC 8438 §3: octets, as RFC822.SIZE counts them
    "HIGHESTMODSEQ": lambda session, info: info.highestmodseq,  # RFC 7162 §3.1.6
    # RFC 7889 §4: the largest APPEND this mailbox takes (the same for every mailbox).
    "APPENDLIMIT": lambda session, info: session.limits.message_size_max,
    "MAILBOXID": lambda session, info: mailbox_objectid(info),  # RFC 8474 §4.3: "(" id ")"
}


def _status_item(args: ArgCursor) -> str:
    name = args.atom().decode("ascii").upper()
    if name not in STATUS_ITEMS:
        raise ParseError("Unknown STATUS item")
    return name


def read_status_items(args: ArgCursor, session=None) -> list[str]:
    """Read ``"(" status-att *(SP status-att) ")"`` (RFC 3501 §9).

    Returns the upper-cased item names in order, each once. Raises
    ParseError for an empty list or an unknown item, and, given the
    ``session``, for RECENT after ``ENABLE IMAP4rev2`` (RFC 9051 §9).
    """
    items = args.parenthesized(_status_item)
    if not items:
        raise ParseError("STATUS needs at least one item")
    if session is not None:
        reject_obsolete_status_items(session, items)
    return list(dict.fromkeys(items))


def status_response(session, info: MailboxInfo, items: list[str]) -> bytes:
    """``* STATUS name (ITEM value ...)`` for ``info`` (RFC 9051 §7.3.2)."""
    values = []
    for item in items:
        value = STATUS_ITEMS[item](session, info)
        if isinstance(value, bytes):
            values.append(item.encode("ascii") + b" (" + value + b")")
            continue
        values.append(b"%s %s" % (item.encode("ascii"), b"NIL" if value is None else b"%d" % value))
    return responses.untagged(b"STATUS " + encode_name(session, info.name)
                              + b" (" + b" ".join(values) + b")")


def run(session, command) -> Completion:
    """``STATUS SP mailbox SP "(" status-att *(SP status-att) ")"``.

    Sends one STATUS response; raises ParseError (BAD) for bad syntax,
    NotFound (``NO [NONEXISTENT]``) for a missing mailbox. Allowed on the
    selected mailbox too (RFC 9051 §6.3.11 only advises clients against it).
    """
    args = command.args
    args.expect_sp()
    name = read_mailbox_name(session, args)
    args.expect_sp()
    items = read_status_items(args, session)
    args.expect_end()
    info = session.ctx.store.get_mailbox(session.user, name)
    if "HIGHESTMODSEQ" in items:
        condstore.enable_condstore(session)  # RFC 7162 §3.1: a CONDSTORE-enabling command
    session.send(status_response(session, info, items))
    return Completion("STATUS completed")
