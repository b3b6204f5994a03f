"""Message mutations on a shard: append, deliver, copy, move, flags, expunge.

Each public function is an operation for the shard's writer: it takes the
writer's ``WriteTxn`` ``w`` and runs in one nested transaction, so that when
it raises nothing of it is kept. Counters (mailbox messages/unseen/size/
UIDNEXT/HIGHESTMODSEQ, the account's used bytes) and the change log are
updated in the same transaction as the messages, never recomputed by scanning.
"""

from __future__ import annotations

from mailserverd.store import blobs, keys, records, shard
from mailserverd.store.errors import LimitExceeded, NotFound, OverQuota
from mailserverd.store.records import AccountRecord, MailboxRecord
from mailserverd.store.types import AppendResult, CopyResult, FlagsResult, MessageInfo


def check_quota(account: AccountRecord, quota: int, added: int) -> None:
    """OverQuota if ``added`` more bytes would take the account over ``quota`` (0 = unlimited)."""
    if quota and added > 0 and account.used_bytes + added > quota:
        raise OverQuota("mailbox is over its storage quota")


def _seen_count(flags) -> int:
    return 1 if shard.SEEN in flags else 0


def _note_keywords(mailbox: MailboxRecord, flags) -> None:
    """Add the keywords (flags without a backslash) of ``flags`` the mailbox has not had."""
    for flag in sorted(flags):
        if not flag.startswith("\\") and flag not in mailbox.keywords:
            mailbox.keywords.append(flag)


def _insert(w, user_id: int, mailbox_id: int, mailbox: MailboxRecord, flags: frozenset[str],
            internaldate: int, size: int, blob_id: bytes, modseq: int) -> MessageInfo:
    """Add a message with the mailbox's next UID and count it in the mailbox (not the account)."""
    uid = mailbox.uidnext
    if uid > keys.UID_MAX:
        raise LimitExceeded("mailbox has used up its UIDs")  # RFC 9051 §2.3.1.1
    message = MessageInfo(uid=uid, flags=flags, internaldate=internaldate, size=size,
                          modseq=modseq, blob_id=blob_id)
    shard.put_message(w, user_id, mailbox_id, message)
    mailbox.uidnext = uid + 1
    mailbox.messages += 1
    mailbox.unseen += 1 - _seen_count(flags)
    mailbox.size += size
    mailbox.highestmodseq = modseq
    _note_keywords(mailbox, flags)
    return message


def _remove(w, user_id: int, mailbox_id: int, mailbox: MailboxRecord, message: MessageInfo,
            modseq: int) -> None:
    """Expunge one message: vanished record, counters, blob reference (not the account)."""
    shard.delete_message(w, user_id, mailbox_id, message)
    w.txn.put(keys.modseq_key(user_id, mailbox_id, modseq, message.uid), b"", db=w.dbs["vanished"])
    blobs.release_blob_refs(w.txn, w.dbs, message.blob_id)
    mailbox.messages -= 1
    mailbox.unseen -= 1 - _seen_count(message.flags)
    mailbox.size -= message.size
    mailbox.highestmodseq = modseq


def _append_change(messages: list[MessageInfo], source: int | None = None) -> dict:
    """The ``append`` record's data; ``source`` is the mailbox a copy or move came from."""
    data = {
        "uids": [m.uid for m in messages],
        "blob_ids": [m.blob_id for m in messages],
        "sizes": [m.size for m in messages],
        "flags": [sorted(m.flags) for m in messages],
        "internaldates": [m.internaldate for m in messages],
    }
    if source is not None:
        data["source"] = source
    return data


def append(w, user_id: int, mailbox_name: str, name_max: int, blob_id: bytes, raw: bytes,
           facts: dict, flags: frozenset[str], internaldate: int, quota: int) -> AppendResult:
    """Store one message (content stored once per shard by blob id, or once
    per user when the store encrypts at rest: see blobs.py).

    Reads and updates the account and mailbox through the batch's record
    cache: the writer must run it as an operation marked with
    :func:`shard.uses_record_cache`. Raises NotFound (user or mailbox),
    OverQuota, LimitExceeded, all before its first write.
    """
    account = shard.cached_account(w, user_id)
    mailbox_id, mailbox = shard.cached_mailbox_named(w, user_id, mailbox_name, name_max)
    size = len(raw)
    check_quota(account, quota, size)
    if mailbox.uidnext > keys.UID_MAX:  # checked before the first write (see deliver)
        raise LimitExceeded("mailbox has used up its UIDs")  # RFC 9051 §2.3.1.1
    user_keys = None
    if w.keyring is not None:  # encrypted at rest: the user's own blob of this content
        user_keys = w.keyring.user_keys_for_writing(w.txn, w.dbs, user_id)
        blob_id = blobs.sealed_blob_id(user_id, user_keys, blob_id)
    seq = shard.next_seq(w)
    message = _insert(w, user_id, mailbox_id, mailbox, flags, internaldate, size, blob_id, seq)
    blobs.add_blob_refs(w.txn, w.dbs, blob_id, raw, facts, 1, user_keys)
    w.txn.put(keys.change_key(seq),
              records.encode_change("append", user_id, mailbox_id, _append_change([message])),
              db=w.dbs["changes"])
    shard.mark_cached(w, keys.mailbox_key(user_id, mailbox_id))
    account.used_bytes += size
    shard.mark_cached(w, keys.account_key(user_id))
    return AppendResult(mailbox_id=mailbox_id, uidvalidity=mailbox.uidvalidity, uid=message.uid)


def deliver(w, recipients: list[tuple[str, int, int]], name_max: int, blob_id: bytes, raw: bytes,
            facts: dict, internaldate: int, mailbox: str = shard.INBOX) -> dict:
    """Append one message to ``mailbox`` (the INBOX, or e.g. Junk) of each
    ``(address, user_id, quota)`` of this shard; a user without that mailbox
    gets it in the INBOX (mail is never refused for a deleted Junk).

    Each recipient runs in its own nested transaction: one failing (OverQuota,
    NotFound) leaves the others delivered. Returns ``{address: AppendResult or
    the StoreError}``; LMDB errors propagate (the whole batch then fails).
    """
    def deliver_one(user_id: int, quota: int) -> AppendResult:
        try:
            return append(w, user_id, mailbox, name_max, blob_id, raw, facts,
                          frozenset(), internaldate, quota)
        except NotFound:
            if mailbox == shard.INBOX:
                raise
            return append(w, user_id, shard.INBOX, name_max, blob_id, raw, facts,
                          frozenset(), internaldate, quota)

    if len(recipients) == 1:
        # The writer isolates a failing operation itself; a nested transaction
        # here would only cost LMDB calls (see writer.EnvWriter._apply_and_commit).
        (address, user_id, quota), = recipients
        try:
            return {address: deliver_one(user_id, quota)}
        except (NotFound, OverQuota, LimitExceeded) as exc:
            return {address: exc}  # append raises these before its first write
    outcome: dict = {}
    for address, user_id, quota in recipients:
        try:
            with w.nested():
                outcome[address] = deliver_one(user_id, quota)
        except (NotFound, OverQuota, LimitExceeded) as exc:
            outcome[address] = exc
    return outcome


def _existing(w, user_id: int, mailbox_id: int, uids) -> list[MessageInfo]:
    """The messages among ``uids`` that exist, in UID order (absent UIDs are skipped)."""
    found = []
    for uid in sorted(set(uids)):
        message = shard.find_message(w.txn, w.dbs, user_id, mailbox_id, uid)
        if message is not None:
            found.append(message)
    return found


def copy(w, user_id: int, src_mailbox_id: int, uids, dest_name: str, name_max: int,
         quota: int, move: bool) -> CopyResult:
    """Copy (or move, RFC 6851) messages to ``dest_name``; UIDs absent from the source are skipped.

    The copies keep flags and INTERNALDATE and get new UIDs in source UID order
    (RFC 4315 COPYUID). A move expunges the sources in the same transaction and
    does not count against the quota. Raises NotFound, OverQuota, LimitExceeded.
    """
    account = shard.require_account(w.txn, w.dbs, user_id)
    source = shard.require_mailbox(w.txn, w.dbs, user_id, src_mailbox_id)
    dest_id, dest = shard.require_mailbox_named(w.txn, w.dbs, user_id, dest_name, name_max)
    messages = _existing(w, user_id, src_mailbox_id, uids)
    if not messages:
        return CopyResult(uidvalidity=dest.uidvalidity, source_uids=(), dest_uids=())
    if not move:
        check_quota(account, quota, sum(m.size for m in messages))
    return _copy_into(w, user_id, src_mailbox_id, source, messages, dest_id, dest, move)


def _copy_into(w, user_id: int, src_mailbox_id: int, source: MailboxRecord,
               messages: list[MessageInfo], dest_id: int, dest: MailboxRecord,
               move: bool) -> CopyResult:
    """Insert copies of ``messages`` into ``dest`` (one MODSEQ), then expunge the
    sources if ``move``; writes both mailbox records and the account."""
    if dest_id == src_mailbox_id:
        dest = source  # one record holds both sides' counters
    dest_seq = shard.next_seq(w)
    copies = [_insert(w, user_id, dest_id, dest, m.flags, m.internaldate, m.size, m.blob_id, dest_seq)
              for m in messages]
    for message in messages:
        blobs.add_blob_refs(w.txn, w.dbs, message.blob_id, None, None, 1)
    w.txn.put(keys.change_key(dest_seq),
              records.encode_change("append", user_id, dest_id, _append_change(copies, src_mailbox_id)),
              db=w.dbs["changes"])
    account = shard.require_account(w.txn, w.dbs, user_id)
    account.used_bytes += sum(m.size for m in messages)
    shard.put_account(w, user_id, account)
    if move:  # takes the bytes off again: a move changes no usage
        _expunge_messages(w, user_id, src_mailbox_id, source, messages)
    shard.put_mailbox(w, user_id, dest_id, dest)
    if dest is not source:
        shard.put_mailbox(w, user_id, src_mailbox_id, source)
    return CopyResult(uidvalidity=dest.uidvalidity, source_uids=tuple(m.uid for m in messages),
                      dest_uids=tuple(c.uid for c in copies))


def _expunge_messages(w, user_id: int, mailbox_id: int, mailbox: MailboxRecord,
                      messages: list[MessageInfo]) -> None:
    """Remove ``messages`` under one new MODSEQ, log it and reduce the account's used bytes.

    The mailbox record is updated in memory; the caller writes it.
    """
    seq = shard.log_change(w, "expunge", user_id, mailbox_id, {"uids": [m.uid for m in messages]})
    for message in messages:
        _remove(w, user_id, mailbox_id, mailbox, message, seq)
    account = shard.require_account(w.txn, w.dbs, user_id)
    account.used_bytes = max(0, account.used_bytes - sum(m.size for m in messages))
    shard.put_account(w, user_id, account)


def store_flags(w, user_id: int, mailbox_id: int, uids, mode: str, flags: frozenset[str],
                unchanged_since: int | None) -> FlagsResult:
    """Add (``+``), remove (``-``) or replace (``=``) flags of the messages among ``uids``.

    RFC 7162 §3.1.3: with ``unchanged_since``, a message whose MODSEQ is greater
    is not changed and its UID is returned in ``failed``. Messages whose flags
    actually change share one new MODSEQ; unchanged ones keep theirs.
    Raises NotFound (mailbox), ValueError (bad mode).
    """
    if mode not in ("+", "-", "="):
        raise ValueError(f"flag store mode must be +, - or =, not {mode!r}")
    mailbox = shard.require_mailbox(w.txn, w.dbs, user_id, mailbox_id)
    changed: list[MessageInfo] = []
    failed: list[int] = []
    seq = None
    for message in _existing(w, user_id, mailbox_id, uids):
        if unchanged_since is not None and message.modseq > unchanged_since:
            failed.append(message.uid)
            continue
        if mode == "+":
            new_flags = message.flags | flags
        elif mode == "-":
            new_flags = message.flags - flags
        else:
            new_flags = flags
        if new_flags == message.flags:
            continue
        if seq is None:
            seq = shard.next_seq(w)
        shard.delete_message(w, user_id, mailbox_id, message)
        updated = MessageInfo(uid=message.uid, flags=frozenset(new_flags),
                              internaldate=message.internaldate, size=message.size,
                              modseq=seq, blob_id=message.blob_id)
        shard.put_message(w, user_id, mailbox_id, updated)
        mailbox.unseen += _seen_count(message.flags) - _seen_count(updated.flags)
        _note_keywords(mailbox, updated.flags)
        changed.append(updated)
    if seq is not None:
        mailbox.highestmodseq = seq
        data = {"uids": [m.uid for m in changed], "flags": [sorted(m.flags) for m in changed]}
        w.txn.put(keys.change_key(seq), records.encode_change("flags", user_id, mailbox_id, data),
                  db=w.dbs["changes"])
        shard.put_mailbox(w, user_id, mailbox_id, mailbox)
    return FlagsResult(changed=tuple(changed), failed=tuple(failed))


def expunge(w, user_id: int, mailbox_id: int, uids) -> list[int]:
    """Remove the messages flagged ``\\Deleted`` (only those among ``uids`` if not None).

    Returns their UIDs in order (RFC 9051 §6.4.3, UID EXPUNGE RFC 4315 §2.1).
    """
    mailbox = shard.require_mailbox(w.txn, w.dbs, user_id, mailbox_id)
    if uids is None:
        candidates = shard.list_messages(w.txn, w.dbs, user_id, mailbox_id)
    else:
        candidates = _existing(w, user_id, mailbox_id, uids)
    doomed = [m for m in candidates if shard.DELETED in m.flags]
    if not doomed:
        return []
    _expunge_messages(w, user_id, mailbox_id, mailbox, doomed)
    shard.put_mailbox(w, user_id, mailbox_id, mailbox)
    return [m.uid for m in doomed]


def claim_recent(w, user_id: int, mailbox_id: int) -> range:
    """Claim the mailbox's messages that no one has claimed: the UIDs from its
    first unclaimed UID up to UIDNEXT, returned as a ``range`` (perhaps empty,
    and holding UIDs expunged since), and move the boundary to UIDNEXT, so
    that each UID is claimed at most once, ever. Raises NotFound.

    Not logged in the change log: no message or mailbox state a reader of the
    log sees changes (IMAP's \\Recent, RFC 3501 §2.3.2, is built on it).
    """
    mailbox = shard.require_mailbox(w.txn, w.dbs, user_id, mailbox_id)
    claimed = range(min(mailbox.first_recent_uid, mailbox.uidnext), mailbox.uidnext)
    if claimed:
        mailbox.first_recent_uid = mailbox.uidnext
        shard.put_mailbox(w, user_id, mailbox_id, mailbox)
    return claimed


def purge_mailbox(w, user_id: int, mailbox_id: int, mailbox: MailboxRecord) -> int:
    """Delete every message, modseq entry and vanished record of a mailbox being deleted.

    Releases blob references; returns the bytes freed (the caller fixes the account).
    """
    messages = shard.list_messages(w.txn, w.dbs, user_id, mailbox_id)
    for message in messages:
        shard.delete_message(w, user_id, mailbox_id, message)
        blobs.release_blob_refs(w.txn, w.dbs, message.blob_id)
    prefix = keys.mailbox_prefix(user_id, mailbox_id)
    shard.delete_range(w, "modseqs", prefix)
    shard.delete_range(w, "vanished", prefix)
    return sum(m.size for m in messages)


def move_all(w, user_id: int, src_mailbox_id: int, dest_mailbox_id: int) -> None:
    """Move every message of a mailbox into another (renaming INBOX, RFC 9051 §6.3.6)."""
    source = shard.require_mailbox(w.txn, w.dbs, user_id, src_mailbox_id)
    dest = shard.require_mailbox(w.txn, w.dbs, user_id, dest_mailbox_id)
    messages = shard.list_messages(w.txn, w.dbs, user_id, src_mailbox_id)
    if messages:
        _copy_into(w, user_id, src_mailbox_id, source, messages, dest_mailbox_id, dest, move=True)
