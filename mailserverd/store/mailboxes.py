"""Account and mailbox mutations on a shard: create/delete account, create,
delete, rename and subscribe mailboxes.

Each public function is an operation for the shard's writer (see
:mod:`.messages` for the conventions). Every change is logged in the shard's
change log in the same transaction.
"""

from __future__ import annotations

import time

from mailserverd.store import keys, messages, shard
from mailserverd.store.errors import AlreadyExists, InvalidName, LimitExceeded, NotFound, NotPermitted
from mailserverd.store.records import AccountRecord, MailboxRecord
from mailserverd.store.types import DEFAULT_MAILBOXES, HIERARCHY_SEPARATOR, MailboxInfo

#: RFC 6154 §2 (and RFC 8457 \Important is not offered): use attributes a mailbox may carry.
SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"})


class MailboxLimits:
    """The limits mailbox operations enforce (from :class:`mailserverd.limits.Limits`)."""

    def __init__(self, name_max: int, mailboxes_max: int):
        self.name_max = name_max
        self.mailboxes_max = mailboxes_max


def create_account(w, user_id: int, address: str, limits: MailboxLimits) -> None:
    """Create the account record and DEFAULT_MAILBOXES (first step of add_user).

    Idempotent: an account that already exists is left as it is.
    """
    if shard.get_account(w.txn, w.dbs, user_id) is not None:
        return
    account = AccountRecord(address=address, used_bytes=0, mailbox_count=0, created=int(time.time()))
    shard.log_change(w, "account-create", user_id, 0, {"address": address})
    for name, special_use in DEFAULT_MAILBOXES:
        _new_mailbox(w, user_id, account, name, special_use, limits)
        _set_subscription(w, user_id, name, True)
    shard.put_account(w, user_id, account)


def remove_account(w, user_id: int, address: str) -> None:
    """Delete the account, its mailboxes, messages and subscriptions (blobs by
    refcount) and, encrypted at rest, its data key (crypto-erase).

    Idempotent: a missing account is not an error.
    """
    account = shard.get_account(w.txn, w.dbs, user_id)
    if account is None:
        return
    for name, mailbox_id in shard.mailbox_names(w.txn, w.dbs, user_id):
        mailbox = shard.get_mailbox(w.txn, w.dbs, user_id, mailbox_id)
        if mailbox is not None:
            messages.purge_mailbox(w, user_id, mailbox_id, mailbox)
    prefix = keys.user_prefix(user_id)
    for db_name in ("mbnames", "mailboxes", "subscriptions", "messages", "modseqs", "vanished"):
        shard.delete_range(w, db_name, prefix)
    w.txn.delete(keys.account_key(user_id), db=w.dbs["accounts"])
    if w.keyring is not None:  # crypto-erase: whatever of the user's is left stays sealed
        w.keyring.erase(w.txn, w.dbs, user_id)
    shard.log_change(w, "account-delete", user_id, 0, {"address": address})


def _new_mailbox(w, user_id: int, account: AccountRecord, name: str, special_use: str | None,
                 limits: MailboxLimits) -> tuple[int, MailboxRecord]:
    """Create one mailbox (name already normalized and known to be free).

    Updates ``account.mailbox_count`` in memory; the caller writes the account.
    """
    if account.mailbox_count >= limits.mailboxes_max:
        raise LimitExceeded("too many mailboxes")
    mailbox_id = shard.next_mailbox_id(w)
    uidvalidity = shard.new_uidvalidity(w)
    seq = shard.log_change(w, "mailbox-create", user_id, mailbox_id,
                           {"name": name, "uidvalidity": uidvalidity, "special_use": special_use})
    mailbox = MailboxRecord(name=name, uidvalidity=uidvalidity, uidnext=1, highestmodseq=seq,
                            messages=0, unseen=0, size=0, special_use=special_use)
    w.txn.put(keys.name_key(user_id, name.encode("utf-8")), keys.u64(mailbox_id), db=w.dbs["mbnames"])
    shard.put_mailbox(w, user_id, mailbox_id, mailbox)
    account.mailbox_count += 1
    return mailbox_id, mailbox


def _create_parents(w, user_id: int, account: AccountRecord, name: str, limits: MailboxLimits) -> None:
    """RFC 9051 §6.3.4, §6.3.6: create the missing superior names of ``name``."""
    for parent in shard.parents_of(name):
        if shard.mailbox_id_by_name(w.txn, w.dbs, user_id, parent) is None:
            _new_mailbox(w, user_id, account, parent, None, limits)


def create_mailbox(w, user_id: int, name: str, special_use: str | None,
                   limits: MailboxLimits) -> MailboxInfo:
    """Create a mailbox and any missing superiors (RFC 9051 §6.3.4).

    A trailing separator is dropped (``foo/`` creates ``foo``). Raises
    AlreadyExists, InvalidName, LimitExceeded, NotPermitted (unknown
    special-use attribute), NotFound (no account).
    """
    if name.endswith(HIERARCHY_SEPARATOR):
        name = name[:-1]
    name = shard.normalize_name(name, limits.name_max)
    if special_use is not None and special_use not in SPECIAL_USES:
        raise NotPermitted(f"unknown special-use attribute {special_use}")  # RFC 6154 §3 USEATTR
    account = shard.require_account(w.txn, w.dbs, user_id)
    if shard.mailbox_id_by_name(w.txn, w.dbs, user_id, name) is not None:
        raise AlreadyExists("mailbox already exists")
    _create_parents(w, user_id, account, name, limits)
    mailbox_id, mailbox = _new_mailbox(w, user_id, account, name, special_use, limits)
    shard.put_account(w, user_id, account)
    return shard.mailbox_info(w.txn, w.dbs, user_id, mailbox_id, mailbox)


def delete_mailbox(w, user_id: int, name: str, limits: MailboxLimits) -> None:
    """Delete a mailbox and its messages (RFC 9051 §6.3.5).

    Its inferior names are not removed, and its subscription is kept
    (RFC 9051 §6.3.9). Raises NotPermitted for INBOX, NotFound.
    """
    name = shard.normalize_name(name, limits.name_max)
    if name == shard.INBOX:
        raise NotPermitted("INBOX cannot be deleted")
    mailbox_id, mailbox = shard.require_mailbox_named(w.txn, w.dbs, user_id, name, limits.name_max)
    account = shard.require_account(w.txn, w.dbs, user_id)
    freed = messages.purge_mailbox(w, user_id, mailbox_id, mailbox)
    w.txn.delete(keys.name_key(user_id, name.encode("utf-8")), db=w.dbs["mbnames"])
    w.txn.delete(keys.mailbox_key(user_id, mailbox_id), db=w.dbs["mailboxes"])
    account.used_bytes = max(0, account.used_bytes - freed)
    account.mailbox_count = max(0, account.mailbox_count - 1)
    shard.put_account(w, user_id, account)
    shard.log_change(w, "mailbox-delete", user_id, mailbox_id, {"name": name})


def rename_mailbox(w, user_id: int, old: str, new: str, limits: MailboxLimits) -> None:
    """Rename a mailbox and its inferiors (RFC 9051 §6.3.6), keeping ids and UIDVALIDITY.

    Renaming INBOX moves its messages to a new mailbox named ``new`` and
    leaves INBOX empty; INBOX's inferiors are not renamed. Subscriptions of
    renamed names follow them. Raises NotFound, AlreadyExists, InvalidName,
    NotPermitted (onto itself or under itself), LimitExceeded.
    """
    old = shard.normalize_name(old, limits.name_max)
    new = shard.normalize_name(new, limits.name_max)
    if old == new or new.startswith(old + HIERARCHY_SEPARATOR):
        raise NotPermitted("cannot rename a mailbox onto or under itself")
    old_id, _ = shard.require_mailbox_named(w.txn, w.dbs, user_id, old, limits.name_max)
    if shard.mailbox_id_by_name(w.txn, w.dbs, user_id, new) is not None:
        raise AlreadyExists("mailbox already exists")
    account = shard.require_account(w.txn, w.dbs, user_id)
    if old == shard.INBOX:
        _create_parents(w, user_id, account, new, limits)
        new_id, _ = _new_mailbox(w, user_id, account, new, None, limits)
        shard.put_account(w, user_id, account)
        messages.move_all(w, user_id, old_id, new_id)
        return
    renames = [(old, new, old_id)]
    for name, mailbox_id in shard.mailbox_names(w.txn, w.dbs, user_id):
        if name.startswith(old + HIERARCHY_SEPARATOR):
            renamed = new + name[len(old):]
            if len(renamed.encode("utf-8")) > limits.name_max:
                raise InvalidName(f"mailbox name longer than {limits.name_max} octets")
            if shard.mailbox_id_by_name(w.txn, w.dbs, user_id, renamed) is not None:
                raise AlreadyExists("mailbox already exists")
            renames.append((name, renamed, mailbox_id))
    _create_parents(w, user_id, account, new, limits)
    shard.put_account(w, user_id, account)
    for from_name, to_name, mailbox_id in renames:
        _rename_one(w, user_id, mailbox_id, from_name, to_name)


def _rename_one(w, user_id: int, mailbox_id: int, old: str, new: str) -> None:
    mailbox = shard.require_mailbox(w.txn, w.dbs, user_id, mailbox_id)
    names = w.dbs["mbnames"]
    w.txn.delete(keys.name_key(user_id, old.encode("utf-8")), db=names)
    w.txn.put(keys.name_key(user_id, new.encode("utf-8")), keys.u64(mailbox_id), db=names)
    mailbox.name = new
    shard.put_mailbox(w, user_id, mailbox_id, mailbox)
    if shard.is_subscribed(w.txn, w.dbs, user_id, old):
        _set_subscription(w, user_id, old, False)
        _set_subscription(w, user_id, new, True)
    shard.log_change(w, "mailbox-rename", user_id, mailbox_id, {"old": old, "new": new})


def _set_subscription(w, user_id: int, name: str, subscribed: bool) -> None:
    key = keys.name_key(user_id, name.encode("utf-8"))
    if subscribed:
        w.txn.put(key, b"", db=w.dbs["subscriptions"])
    else:
        w.txn.delete(key, db=w.dbs["subscriptions"])


def subscribe(w, user_id: int, name: str, subscribed: bool, limits: MailboxLimits) -> None:
    """Add or remove ``name`` in the user's subscriptions (RFC 9051 §6.3.7, §6.3.8).

    The mailbox must exist to subscribe (NotFound otherwise); unsubscribing
    works for any name, so that a subscription outliving its mailbox can be
    removed. Raises InvalidName, NotFound.
    """
    name = shard.normalize_name(name, limits.name_max)
    shard.require_account(w.txn, w.dbs, user_id)
    mailbox_id = shard.mailbox_id_by_name(w.txn, w.dbs, user_id, name)
    if subscribed and mailbox_id is None:
        raise NotFound("no such mailbox")
    if shard.is_subscribed(w.txn, w.dbs, user_id, name) == subscribed:
        return
    _set_subscription(w, user_id, name, subscribed)
    shard.log_change(w, "subscribe", user_id, mailbox_id or 0,
                     {"name": name, "subscribed": subscribed})
