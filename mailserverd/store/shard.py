"""A shard environment's records: reads, and the helpers every shard mutation uses.

Sub-databases (keys from :mod:`.keys`, values from :mod:`.records`):

- ``info``: ``schema``, ``shard``, ``seq`` (last change-log sequence number),
  ``next_mailbox_id``, ``uidvalidity`` (last one given)
- ``accounts``: user id -> AccountRecord (used bytes, mailbox count)
- ``mbnames``: (user id, name) -> mailbox id
- ``mailboxes``: (user id, mailbox id) -> MailboxRecord with its counters
- ``subscriptions``: (user id, name) -> ``b""`` (kept apart from mailboxes:
  RFC 9051 §6.3.9 says a subscription outlives its mailbox)
- ``messages``: (user id, mailbox id, uid) -> message record
- ``modseqs``: (user id, mailbox id, modseq, uid) -> ``b""``: what changed since N
- ``vanished``: (user id, mailbox id, modseq, uid) -> ``b""``: expunged UIDs (RFC 7162 §3.2.10)
- ``changes``: seq -> change record (the shard's change log)
- ``blobs`` (with each blob's facts), ``blobrefs``: see :mod:`.blobs`

MODSEQ values are change-log sequence numbers: each change record takes the
next ``seq``, the messages it touches get that MODSEQ and the mailbox's
HIGHESTMODSEQ becomes it, all in one transaction.
"""

from __future__ import annotations

import time
import unicodedata

from mailserverd.store import keys, records
from mailserverd.store.errors import Expunged, InvalidName, NotFound
from mailserverd.store.records import AccountRecord, MailboxRecord
from mailserverd.store.types import HIERARCHY_SEPARATOR, ChangeRecord, Changes, MailboxInfo, MessageInfo

SEQ_KEY = b"seq"
NEXT_MAILBOX_ID_KEY = b"next_mailbox_id"
UIDVALIDITY_KEY = b"uidvalidity"

INBOX = "INBOX"
SYSTEM_FLAGS = {flag.lower(): flag for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
SEEN = "\\Seen"
DELETED = "\\Deleted"
# Characters refused in mailbox names: controls, and LIST wildcards (RFC 9051 §6.3.9);
# C1 controls and the line and paragraph separators (RFC 9051 §5.1: Net-Unicode,
# RFC 5198 §2); and the invisible or direction-changing characters that let a
# name pass for another (zero-width space, BOM, bidi marks, embeddings,
# overrides and isolates).
_BAD_NAME_CHARS = (frozenset(chr(code) for code in (*range(0x20), *range(0x7f, 0xa0)))
                   | {"*", "%", "\u2028", "\u2029", "\u200b", "\ufeff", "\u061c", "\u200e", "\u200f"}
                   | frozenset(chr(code) for code in (*range(0x202a, 0x202f), *range(0x2066, 0x206a))))
# First characters of other namespaces by convention: "#" (RFC 9051 §5.1.2.1)
# and "~" for other users (RFC 2342 §5's examples). We have only the personal
# namespace (NAMESPACE says so), and a name must not pretend otherwise.
_OTHER_NAMESPACE_PREFIXES = ("#", "~")
# Hierarchy levels that read as paths climbing out of the mailbox tree.
_PATH_LEVELS = frozenset({".", ".."})


# ---------------------------------------------------------------- names and flags


def normalize_name(name: str, name_max: int) -> str:
    """A mailbox name as stored: INBOX upper-cased (RFC 9051 §5.1), checked.

    Raises InvalidName for an empty name or component, a ``.`` or ``..``
    component, a name starting with another namespace's prefix (``#``, ``~``),
    control, wildcard, invisible or bidi characters, a non-ASCII name that
    reads as INBOX, text that is not valid Unicode, or more than ``name_max``
    UTF-8 octets.
    """
    if not name:
        raise InvalidName("empty mailbox name")
    parts = name.split(HIERARCHY_SEPARATOR)
    if any(part == "" for part in parts):
        raise InvalidName("empty hierarchy level in mailbox name")
    if any(part in _PATH_LEVELS for part in parts):
        raise InvalidName("mailbox name has a . or .. hierarchy level")
    if name.startswith(_OTHER_NAMESPACE_PREFIXES):
        raise InvalidName("mailbox name starts with another namespace's prefix")
    if any(char in _BAD_NAME_CHARS for char in name):
        raise InvalidName("mailbox name contains a control, wildcard or invisible character")
    if parts[0].isascii():
        if parts[0].upper() == INBOX:  # case-insensitive in ASCII only: "ınbox" is not INBOX
            parts[0] = INBOX
    elif unicodedata.normalize("NFKC", parts[0]).casefold() == "inbox":
        raise InvalidName("mailbox name reads as INBOX but is not")
    name = HIERARCHY_SEPARATOR.join(parts)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("mailbox name is not valid Unicode") from None
    if len(encoded) > name_max:
        raise InvalidName(f"mailbox name longer than {name_max} octets")
    return name


def parents_of(name: str) -> list[str]:
    """Superior names of a hierarchical name, outermost first: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = name.split(HIERARCHY_SEPARATOR)
    return [HIERARCHY_SEPARATOR.join(parts[:n]) for n in range(1, len(parts))]


def normalize_flags(flags) -> frozenset[str]:
    """System flags in their canonical case; ``\\Recent`` dropped (never stored);
    keywords kept as given. Raises InvalidName for an empty or unknown ``\\`` flag."""
    result = set()
    for flag in flags:
        if not flag:
            raise InvalidName("empty flag")
        if flag.startswith("\\"):
            lowered = flag.lower()
            if lowered == "\\recent":
                continue
            if lowered not in SYSTEM_FLAGS:
                raise InvalidName(f"unknown system flag {flag}")
            flag = SYSTEM_FLAGS[lowered]
        result.add(flag)
    return frozenset(result)


# ---------------------------------------------------------------- reads


def get_account(txn, dbs, user_id: int) -> AccountRecord | None:
    data = txn.get(keys.account_key(user_id), db=dbs["accounts"])
    return None if data is None else records.decode_account(data)


def require_account(txn, dbs, user_id: int) -> AccountRecord:
    account = get_account(txn, dbs, user_id)
    if account is None:
        raise NotFound("no such user")
    return account


def mailbox_id_by_name(txn, dbs, user_id: int, name: str) -> int | None:
    data = txn.get(keys.name_key(user_id, name.encode("utf-8")), db=dbs["mbnames"])
    return None if data is None else keys.read_u64(data)


def get_mailbox(txn, dbs, user_id: int, mailbox_id: int) -> MailboxRecord | None:
    data = txn.get(keys.mailbox_key(user_id, mailbox_id), db=dbs["mailboxes"])
    return None if data is None else records.decode_mailbox(data)


def require_mailbox(txn, dbs, user_id: int, mailbox_id: int) -> MailboxRecord:
    mailbox = get_mailbox(txn, dbs, user_id, mailbox_id)
    if mailbox is None:
        raise NotFound("no such mailbox")
    return mailbox


def require_mailbox_named(txn, dbs, user_id: int, name: str, name_max: int) -> tuple[int, MailboxRecord]:
    """``(mailbox_id, record)`` of a mailbox by name. Raises NotFound or InvalidName."""
    name = normalize_name(name, name_max)
    mailbox_id = mailbox_id_by_name(txn, dbs, user_id, name)
    mailbox = None if mailbox_id is None else get_mailbox(txn, dbs, user_id, mailbox_id)
    if mailbox is None:
        raise NotFound("no such mailbox")
    return mailbox_id, mailbox


def is_subscribed(txn, dbs, user_id: int, name: str) -> bool:
    return txn.get(keys.name_key(user_id, name.encode("utf-8")), db=dbs["subscriptions"]) is not None


def mailbox_info(txn, dbs, user_id: int, mailbox_id: int, mailbox: MailboxRecord) -> MailboxInfo:
    return mailbox.info(mailbox_id, is_subscribed(txn, dbs, user_id, mailbox.name))


def _scan(txn, db, prefix: bytes, start: bytes | None = None):
    """Yield (key, value) of ``db`` from ``start`` (default: ``prefix``) while keys have ``prefix``."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(start or prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


def mailbox_names(txn, dbs, user_id: int) -> list[tuple[str, int]]:
    """``(name, mailbox_id)`` of every mailbox of the user, in name (UTF-8 octet) order."""
    return [(keys.name_from_key(key), keys.read_u64(value))
            for key, value in _scan(txn, dbs["mbnames"], keys.user_prefix(user_id))]


def list_mailboxes(txn, dbs, user_id: int) -> list[MailboxInfo]:
    infos = []
    for _, mailbox_id in mailbox_names(txn, dbs, user_id):
        mailbox = get_mailbox(txn, dbs, user_id, mailbox_id)
        if mailbox is not None:
            infos.append(mailbox_info(txn, dbs, user_id, mailbox_id, mailbox))
    return infos


def list_subscriptions(txn, dbs, user_id: int) -> list[str]:
    return [keys.name_from_key(key)
            for key, _ in _scan(txn, dbs["subscriptions"], keys.user_prefix(user_id))]


def list_messages(txn, dbs, user_id: int, mailbox_id: int) -> list[MessageInfo]:
    return [records.decode_message(keys.uid_from_message_key(key), value)
            for key, value in _scan(txn, dbs["messages"], keys.mailbox_prefix(user_id, mailbox_id))]


def list_uids(txn, dbs, user_id: int, mailbox_id: int) -> list[int]:
    """The mailbox's UIDs in order, from the keys alone (no record is decoded)."""
    prefix = keys.mailbox_prefix(user_id, mailbox_id)
    cursor = txn.cursor(db=dbs["messages"])
    if not cursor.set_range(prefix):
        return []
    uids = []
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            break
        uids.append(keys.uid_from_message_key(key))
    return uids


def count_uids_from(txn, dbs, user_id: int, mailbox_id: int, first_uid: int) -> int:
    """How many messages of the mailbox have a UID >= ``first_uid`` (keys only)."""
    if first_uid > keys.UID_MAX:
        return 0
    prefix = keys.mailbox_prefix(user_id, mailbox_id)
    cursor = txn.cursor(db=dbs["messages"])
    if not cursor.set_range(keys.message_key(user_id, mailbox_id, max(first_uid, 0))):
        return 0
    count = 0
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            break
        count += 1
    return count


def first_unseen_uid(txn, dbs, user_id: int, mailbox_id: int) -> int | None:
    """The lowest UID without \\Seen, or None.

    The counters answer a mailbox with nothing or everything unseen; the
    oldest message answers when it is unseen itself. Otherwise this walks
    back from the newest message until it has met as many unseen messages as
    the mailbox counts: new mail is unseen and at the end, so it reads few
    records in the usual case (and all in the worst).
    """
    mailbox = require_mailbox(txn, dbs, user_id, mailbox_id)
    remaining = mailbox.unseen
    if remaining <= 0:
        return None
    prefix = keys.mailbox_prefix(user_id, mailbox_id)
    cursor = txn.cursor(db=dbs["messages"])
    if not cursor.set_range(prefix) or not cursor.key().startswith(prefix):
        return None
    oldest = keys.uid_from_message_key(cursor.key())
    if remaining >= mailbox.messages or SEEN not in records.decode_message(oldest, cursor.value()).flags:
        return oldest
    if not cursor.set_range(keys.mailbox_prefix(user_id, mailbox_id + 1)):
        if not cursor.last():
            return None
    elif not cursor.prev():
        return None
    found = None
    for key, value in cursor.iterprev():
        if not key.startswith(prefix):
            break
        uid = keys.uid_from_message_key(key)
        if SEEN not in records.decode_message(uid, value).flags:
            found = uid
            remaining -= 1
            if remaining == 0:
                break
    return found


def find_message(txn, dbs, user_id: int, mailbox_id: int, uid: int) -> MessageInfo | None:
    if not 0 < uid <= keys.UID_MAX:
        return None
    data = txn.get(keys.message_key(user_id, mailbox_id, uid), db=dbs["messages"])
    return None if data is None else records.decode_message(uid, data)


def get_message(txn, dbs, user_id: int, mailbox_id: int, uid: int) -> MessageInfo:
    message = find_message(txn, dbs, user_id, mailbox_id, uid)
    if message is None:
        raise Expunged(f"no message with UID {uid}")
    return message


def changes_since(txn, dbs, user_id: int, mailbox_id: int, modseq: int) -> Changes:
    """Messages changed and UIDs expunged after ``modseq`` (RFC 7162 §3.1.4, §3.2.5)."""
    mailbox = require_mailbox(txn, dbs, user_id, mailbox_id)
    prefix = keys.mailbox_prefix(user_id, mailbox_id)
    start = keys.modseq_key(user_id, mailbox_id, modseq + 1, 0)
    changed_uids = sorted({keys.split_modseq_key(key)[1]
                           for key, _ in _scan(txn, dbs["modseqs"], prefix, start)})
    changed = tuple(message for message in
                    (find_message(txn, dbs, user_id, mailbox_id, uid) for uid in changed_uids)
                    if message is not None)
    vanished = sorted({keys.split_modseq_key(key)[1]
                       for key, _ in _scan(txn, dbs["vanished"], prefix, start)})
    return Changes(highestmodseq=mailbox.highestmodseq, changed=changed, vanished=tuple(vanished))


def read_changes(txn, dbs, after_seq: int, limit: int) -> list[ChangeRecord]:
    found = []
    for key, value in _scan(txn, dbs["changes"], b"", keys.change_key(after_seq + 1)):
        if len(found) >= limit:
            break
        found.append(records.decode_change(keys.read_u64(key), value))
    return found


def last_seq(txn, dbs) -> int:
    data = txn.get(SEQ_KEY, db=dbs["info"])
    return 0 if data is None else keys.read_u64(data)


# ---------------------------------------------------------------- mutation helpers
# Each takes the writer's WriteTxn ``w`` (runs on the shard's writer thread).


def next_seq(w) -> int:
    """Take the shard's next change-log sequence number (= MODSEQ).

    The counter is read once per batch and written once before its commit
    (WriteTxn.flush), not per operation: each LMDB call costs a GIL switch.
    A nested transaction that aborts leaves a gap, which MODSEQ allows
    (RFC 7162 §3.1: strictly increasing, not dense).
    """
    seq = w.cached.get(SEQ_KEY)
    if seq is None:
        seq = last_seq(w.txn, w.dbs)
        w.on_flush(_flush_seq)
    seq += 1
    w.cached[SEQ_KEY] = seq
    return seq


def _flush_seq(w) -> None:
    w.txn.put(SEQ_KEY, keys.u64(w.cached[SEQ_KEY]), db=w.dbs["info"])


def log_change(w, kind: str, user_id: int, mailbox_id: int, data: dict) -> int:
    """Append a change record with a new seq; returns the seq."""
    seq = next_seq(w)
    w.txn.put(keys.change_key(seq), records.encode_change(kind, user_id, mailbox_id, data),
              db=w.dbs["changes"])
    return seq


def next_mailbox_id(w) -> int:
    data = w.txn.get(NEXT_MAILBOX_ID_KEY, db=w.dbs["info"])
    mailbox_id = 1 if data is None else keys.read_u64(data)
    w.txn.put(NEXT_MAILBOX_ID_KEY, keys.u64(mailbox_id + 1), db=w.dbs["info"])
    return mailbox_id


def new_uidvalidity(w) -> int:
    """A UIDVALIDITY never given before on this shard: the clock, or last + 1 if
    the clock has not moved on (RFC 9051 §2.3.1.1: a new incarnation needs a new value)."""
    data = w.txn.get(UIDVALIDITY_KEY, db=w.dbs["info"])
    last = 0 if data is None else keys.read_u64(data)
    value = max(int(time.time()), last + 1)
    if value > keys.UID_MAX:  # 32-bit nz-number; wraps only after year 2106
        value = 1
    w.txn.put(UIDVALIDITY_KEY, keys.u64(value), db=w.dbs["info"])
    return value


# ---------------------------------------------------------------- the batch's record cache
# Appends are most writes, and a batch often appends to the same mailboxes:
# their account and mailbox records are read once per batch, kept decoded in
# WriteTxn.records, updated in memory and written once before the commit
# (under the GIL every LMDB call costs a thread switch). Only operations
# marked with :func:`uses_record_cache` use it; the writer writes it out and
# empties it before any other operation, which then reads current records
# from the transaction as usual.


def uses_record_cache(apply):
    """Mark a writer operation as reading and writing records through the cache."""
    apply.uses_record_cache = True
    return apply


def cached_account(w, user_id: int) -> AccountRecord:
    """The account record through the batch's cache. Raises NotFound."""
    key = keys.account_key(user_id)
    entry = w.records.get(key)
    if entry is None:
        account = require_account(w.txn, w.dbs, user_id)
        entry = w.records[key] = ["accounts", account, records.encode_account, False]
    return entry[1]


def cached_mailbox_named(w, user_id: int, name: str, name_max: int) -> tuple[int, MailboxRecord]:
    """``(mailbox_id, record)`` through the batch's cache. Raises NotFound or InvalidName."""
    name = normalize_name(name, name_max)
    name_key = keys.name_key(user_id, name.encode("utf-8"))
    mailbox_id = w.records.get(name_key)
    if mailbox_id is None:
        mailbox_id = mailbox_id_by_name(w.txn, w.dbs, user_id, name)
        if mailbox_id is None:
            raise NotFound("no such mailbox")
        w.records[name_key] = ["mbnames", mailbox_id, None, False]
    else:
        mailbox_id = mailbox_id[1]
    key = keys.mailbox_key(user_id, mailbox_id)
    entry = w.records.get(key)
    if entry is None:
        mailbox = require_mailbox(w.txn, w.dbs, user_id, mailbox_id)
        entry = w.records[key] = ["mailboxes", mailbox, records.encode_mailbox, False]
    return mailbox_id, entry[1]


def mark_cached(w, key: bytes) -> None:
    """The cached record under ``key`` changed: write it before the commit."""
    w.records[key][3] = True


def put_account(w, user_id: int, account: AccountRecord) -> None:
    w.txn.put(keys.account_key(user_id), records.encode_account(account), db=w.dbs["accounts"])


def put_mailbox(w, user_id: int, mailbox_id: int, mailbox: MailboxRecord) -> None:
    w.txn.put(keys.mailbox_key(user_id, mailbox_id), records.encode_mailbox(mailbox),
              db=w.dbs["mailboxes"])


def put_message(w, user_id: int, mailbox_id: int, message: MessageInfo) -> None:
    """Write a message record and its modseq-index entry."""
    w.txn.put(keys.message_key(user_id, mailbox_id, message.uid), records.encode_message(message),
              db=w.dbs["messages"])
    w.txn.put(keys.modseq_key(user_id, mailbox_id, message.modseq, message.uid), b"",
              db=w.dbs["modseqs"])


def delete_message(w, user_id: int, mailbox_id: int, message: MessageInfo) -> None:
    """Delete a message record and its modseq-index entry (blob refs are the caller's)."""
    w.txn.delete(keys.message_key(user_id, mailbox_id, message.uid), db=w.dbs["messages"])
    w.txn.delete(keys.modseq_key(user_id, mailbox_id, message.modseq, message.uid),
                 db=w.dbs["modseqs"])


def delete_range(w, db_name: str, prefix: bytes) -> None:
    """Delete every key of a sub-database that starts with ``prefix``."""
    db = w.dbs[db_name]
    doomed = [key for key, _ in _scan(w.txn, db, prefix)]
    for key in doomed:
        w.txn.delete(key, db=db)
