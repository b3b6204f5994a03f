"""The one versioned encoding of every value the store keeps.

Every LMDB value (except blob bytes, which go through :mod:`.blobs`, and bare
counters, which are :func:`.keys.u64`) is ``FORMAT_VERSION`` as one byte
followed by a msgpack document. :func:`unpack` refuses a version it does not
know, so that an old binary never misreads a newer store. The change log is
read later by replication, search and encryption, so its records are
documented here field by field.

Change-log record ``data`` per kind (all names are str, ids int):

- ``append``: ``uids`` [int], ``blob_ids`` [bytes], ``sizes`` [int],
  ``flags`` [[str]], ``internaldates`` [int] (one entry per message, same order);
  a copy or move (also INBOX's rename) adds ``source`` [int], the mailbox id
  the messages came from (the spam trainer learns from moves into and out of Junk)
- ``flags``: ``uids`` [int], ``flags`` [[str]] (the new flags of each)
- ``expunge``: ``uids`` [int]
- ``mailbox-create``: ``name``, ``uidvalidity``, ``special_use`` (str or None)
- ``mailbox-delete``: ``name``
- ``mailbox-rename``: ``old``, ``new``
- ``subscribe``: ``name``, ``subscribed`` (bool)
- ``account-create``: ``address``
- ``account-delete``: ``address``
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from mailserverd.store.errors import SchemaMismatch
from mailserverd.store.types import (
    Alias,
    ChangeRecord,
    Credentials,
    Domain,
    MailboxInfo,
    MessageInfo,
    QueuedMessage,
    QueueEntry,
    ScramSecrets,
    User,
)

#: Leading byte of every encoded record.
FORMAT_VERSION = 1

CHANGE_KINDS = frozenset({
    "append", "flags", "expunge", "mailbox-create", "mailbox-delete",
    "mailbox-rename", "subscribe", "account-create", "account-delete",
})


def pack(document: object) -> bytes:
    """Encode a msgpack-able document with the format-version byte in front."""
    return bytes((FORMAT_VERSION,)) + msgpack.packb(document, use_bin_type=True)


def unpack(data: bytes) -> object:
    """Decode what :func:`pack` encoded. Raises SchemaMismatch for an unknown version."""
    if not data:
        raise SchemaMismatch("empty record in the store")
    version = data[0]
    if version != FORMAT_VERSION:
        raise SchemaMismatch(
            f"record format version {version} is not known to this code "
            f"(it knows {FORMAT_VERSION})"
        )
    return msgpack.unpackb(memoryview(data)[1:], raw=False, strict_map_key=False)


# ---------------------------------------------------------------- meta records


def encode_domain(domain: Domain, created: int) -> bytes:
    return pack({"name": domain.name, "created": created})


def decode_domain(data: bytes) -> Domain:
    return Domain(name=unpack(data)["name"])


def encode_user(user: User) -> bytes:
    scram = user.credentials.scram_sha256
    return pack({
        "address": user.address,
        "id": user.user_id,
        "shard": user.shard,
        "bcrypt": user.credentials.bcrypt_hash,
        "scram": [scram.salt, scram.iterations, scram.stored_key, scram.server_key],
        "quota": user.quota,
        "created": user.created,
    })


def decode_user(data: bytes) -> User:
    doc = unpack(data)
    salt, iterations, stored_key, server_key = doc["scram"]
    return User(
        address=doc["address"],
        user_id=doc["id"],
        shard=doc["shard"],
        credentials=Credentials(
            bcrypt_hash=doc["bcrypt"],
            scram_sha256=ScramSecrets(salt, iterations, stored_key, server_key),
        ),
        quota=doc["quota"],
        created=doc["created"],
    )


def encode_alias(alias: Alias) -> bytes:
    return pack({"address": alias.address, "targets": list(alias.targets)})


def decode_alias(data: bytes) -> Alias:
    doc = unpack(data)
    return Alias(address=doc["address"], targets=tuple(doc["targets"]))


# --------------------------------------------------------------- shard records


@dataclass
class AccountRecord:
    """A user's account on its shard: the quota counter and the mailbox count."""

    address: str
    used_bytes: int
    mailbox_count: int
    created: int


def encode_account(account: AccountRecord) -> bytes:
    return pack({
        "address": account.address,
        "used": account.used_bytes,
        "mailboxes": account.mailbox_count,
        "created": account.created,
    })


def decode_account(data: bytes) -> AccountRecord:
    doc = unpack(data)
    return AccountRecord(doc["address"], doc["used"], doc["mailboxes"], doc["created"])


@dataclass
class MailboxRecord:
    """A mailbox and its counters (kept in the same transaction as every change)."""

    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    size: int
    special_use: str | None
    #: Every keyword a message of the mailbox has had (for IMAP's FLAGS, RFC 9051
    #: §7.3.5), in the order first seen; never shrinks, like Dovecot's keyword list.
    keywords: list[str] = field(default_factory=list)
    #: The lowest UID no one has claimed yet (see messages.claim_recent): the
    #: messages from here to UIDNEXT are new since the boundary last moved.
    first_recent_uid: int = 1

    def info(self, mailbox_id: int, subscribed: bool) -> MailboxInfo:
        """The public view of this record."""
        return MailboxInfo(
            mailbox_id=mailbox_id, name=self.name, uidvalidity=self.uidvalidity,
            uidnext=self.uidnext, highestmodseq=self.highestmodseq,
            messages=self.messages, unseen=self.unseen, size=self.size,
            subscribed=subscribed, special_use=self.special_use,
            keywords=tuple(self.keywords), first_recent_uid=self.first_recent_uid,
        )


def encode_mailbox(mailbox: MailboxRecord) -> bytes:
    return pack({
        "name": mailbox.name,
        "uidvalidity": mailbox.uidvalidity,
        "uidnext": mailbox.uidnext,
        "highestmodseq": mailbox.highestmodseq,
        "messages": mailbox.messages,
        "unseen": mailbox.unseen,
        "size": mailbox.size,
        "special_use": mailbox.special_use,
        "keywords": mailbox.keywords,
        "first_recent": mailbox.first_recent_uid,
    })


def decode_mailbox(data: bytes) -> MailboxRecord:
    doc = unpack(data)
    return MailboxRecord(
        doc["name"], doc["uidvalidity"], doc["uidnext"], doc["highestmodseq"],
        doc["messages"], doc["unseen"], doc["size"], doc["special_use"],
        list(doc.get("keywords", ())),  # absent in records written before keywords were kept
        # Absent in records written before recent messages were claimed: what
        # was there then counts as claimed, so an upgrade makes no old mail new.
        doc.get("first_recent", doc["uidnext"]),
    )


def encode_message(message: MessageInfo) -> bytes:
    """A message's record; its UID is the key, so it is not stored in the value."""
    return pack({
        "flags": sorted(message.flags),
        "date": message.internaldate,
        "size": message.size,
        "modseq": message.modseq,
        "blob": message.blob_id,
    })


def decode_message(uid: int, data: bytes) -> MessageInfo:
    doc = unpack(data)
    return MessageInfo(
        uid=uid, flags=frozenset(doc["flags"]), internaldate=doc["date"],
        size=doc["size"], modseq=doc["modseq"], blob_id=doc["blob"],
    )


def encode_change(kind: str, user_id: int, mailbox_id: int, data: dict) -> bytes:
    """A change-log record; its seq is the key. ``kind`` must be in CHANGE_KINDS."""
    if kind not in CHANGE_KINDS:
        raise ValueError(f"unknown change kind {kind!r}")
    return pack({"kind": kind, "user": user_id, "mailbox": mailbox_id, "data": data})


def decode_change(seq: int, data: bytes) -> ChangeRecord:
    doc = unpack(data)
    return ChangeRecord(seq=seq, kind=doc["kind"], user_id=doc["user"],
                        mailbox_id=doc["mailbox"], data=doc["data"])


def encode_facts(facts: dict) -> bytes:
    return pack(facts)


def decode_facts(data: bytes) -> dict:
    return unpack(data)


# --------------------------------------------------------------- queue records


def encode_queued_message(message: QueuedMessage) -> bytes:
    """A queued message's record; its queue id is the key."""
    return pack({
        "sender": message.sender, "arrival": message.arrival, "size": message.size,
        "recipients": message.recipients, "envid": message.envid, "ret": message.ret,
        "body": message.body, "smtputf8": message.smtputf8,
    })


def decode_queued_message(queue_id: str, data: bytes) -> QueuedMessage:
    doc = unpack(data)
    return QueuedMessage(
        queue_id=queue_id, sender=doc["sender"], arrival=doc["arrival"], size=doc["size"],
        recipients=doc["recipients"], envid=doc["envid"], ret=doc["ret"], body=doc["body"],
        smtputf8=doc["smtputf8"],
    )


def encode_queue_entry(entry: QueueEntry) -> bytes:
    """A queue entry's record; (queue id, index) is the key."""
    return pack({
        "rcpt": entry.recipient, "orcpt": entry.orcpt, "notify": list(entry.notify),
        "state": entry.state, "attempts": entry.attempts, "next": entry.next_attempt,
        "last": entry.last_attempt, "reply": entry.last_reply, "relay": entry.relay,
        "warned": entry.delay_reported,
    })


def decode_queue_entry(queue_id: str, index: int, data: bytes) -> QueueEntry:
    doc = unpack(data)
    return QueueEntry(
        queue_id=queue_id, index=index, recipient=doc["rcpt"], orcpt=doc["orcpt"],
        notify=tuple(doc["notify"]), state=doc["state"], attempts=doc["attempts"],
        next_attempt=doc["next"], last_attempt=doc["last"], last_reply=doc["reply"],
        relay=doc["relay"], delay_reported=doc.get("warned", False),  # absent in older records
    )
