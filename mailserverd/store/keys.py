"""LMDB keys, packed big-endian so that LMDB's byte order is the natural order.

Every key of every sub-database is built here and nowhere else. Integers are
fixed-width big-endian (``struct`` ``>``), so a range scan over a prefix walks
a mailbox in UID order, a mailbox's modseq index in MODSEQ order and the change
log in sequence order. Widths: user and mailbox ids, MODSEQs and change-log
sequence numbers are u64; UIDs are u32 (RFC 9051 §2.3.1.1: nz-number, 32 bits).
"""

from __future__ import annotations

import struct

_U64 = struct.Struct(">Q")
_U64_U64 = struct.Struct(">QQ")
_U64_U64_U32 = struct.Struct(">QQI")
_U64_U64_U64_U32 = struct.Struct(">QQQI")

#: Longest key LMDB accepts (its compile-time MDB_MAXKEYSIZE).
KEY_MAX = 511

UID_MAX = 0xFFFFFFFF


def u64(value: int) -> bytes:
    """A u64 as 8 big-endian bytes (counters, ids, change-log sequence numbers)."""
    return _U64.pack(value)


def read_u64(data: bytes) -> int:
    """The u64 that :func:`u64` packed."""
    return _U64.unpack(data)[0]


def account_key(user_id: int) -> bytes:
    """``accounts`` key: the user id."""
    return _U64.pack(user_id)


def mailbox_key(user_id: int, mailbox_id: int) -> bytes:
    """``mailboxes`` key: (user id, mailbox id)."""
    return _U64_U64.pack(user_id, mailbox_id)


def user_prefix(user_id: int) -> bytes:
    """Prefix of every per-user key (mailboxes, names, subscriptions, messages)."""
    return _U64.pack(user_id)


def name_key(user_id: int, name_utf8: bytes) -> bytes:
    """``mbnames`` / ``subscriptions`` key: (user id, mailbox name in UTF-8)."""
    return _U64.pack(user_id) + name_utf8


def name_from_key(key: bytes) -> str:
    """The mailbox name of a :func:`name_key`."""
    return key[8:].decode("utf-8")


def message_key(user_id: int, mailbox_id: int, uid: int) -> bytes:
    """``messages`` key: (user id, mailbox id, UID); a mailbox iterates in UID order."""
    return _U64_U64_U32.pack(user_id, mailbox_id, uid)


def uid_from_message_key(key: bytes) -> int:
    """The UID of a :func:`message_key`."""
    return _U64_U64_U32.unpack(key)[2]


def mailbox_prefix(user_id: int, mailbox_id: int) -> bytes:
    """Prefix of every key of one mailbox in ``messages``, ``modseqs`` and ``vanished``."""
    return _U64_U64.pack(user_id, mailbox_id)


def modseq_key(user_id: int, mailbox_id: int, modseq: int, uid: int) -> bytes:
    """``modseqs`` / ``vanished`` key: (user id, mailbox id, MODSEQ, UID).

    The UID is part of the key because one operation gives many messages the
    same MODSEQ.
    """
    return _U64_U64_U64_U32.pack(user_id, mailbox_id, modseq, uid)


def split_modseq_key(key: bytes) -> tuple[int, int]:
    """``(modseq, uid)`` of a :func:`modseq_key`."""
    _, _, modseq, uid = _U64_U64_U64_U32.unpack(key)
    return modseq, uid


def change_key(seq: int) -> bytes:
    """``changes`` key: the shard's change-log sequence number."""
    return _U64.pack(seq)


def text_key(text: str) -> bytes:
    """Key of a directory entry (canonical address, ``@domain`` or domain name)."""
    return text.encode("utf-8")


def member_key(domain: str, address: str) -> bytes:
    """``members`` key: (domain, address) so that a domain's users and aliases are one range."""
    return domain.encode("utf-8") + b"\x00" + address.encode("utf-8")


def member_prefix(domain: str) -> bytes:
    """Prefix of every :func:`member_key` of ``domain``."""
    return domain.encode("utf-8") + b"\x00"


# ---------------------------------------------------------------- outbound queue

_U32 = struct.Struct(">I")


def queue_id_key(queue_id: str) -> bytes:
    """``qmessages`` / ``qblobs`` key: the queue id (ASCII)."""
    return queue_id.encode("ascii")


def queue_entry_key(queue_id: str, index: int) -> bytes:
    """``qentries`` key: (queue id, recipient index); a message's entries are one range."""
    return queue_id.encode("ascii") + _U32.pack(index)


def split_queue_entry_key(key: bytes) -> tuple[str, int]:
    """``(queue_id, index)`` of a :func:`queue_entry_key`."""
    return key[:-4].decode("ascii"), _U32.unpack(key[-4:])[0]


def queue_schedule_key(when_ms: int, queue_id: str, index: int) -> bytes:
    """``qschedule`` key: (next attempt in unix milliseconds, queue id, index),
    so that the entries due first come first."""
    return _U64.pack(when_ms) + queue_entry_key(queue_id, index)


def split_queue_schedule_key(key: bytes) -> tuple[int, str, int]:
    """``(when_ms, queue_id, index)`` of a :func:`queue_schedule_key`."""
    return (_U64.unpack(key[:8])[0], *split_queue_entry_key(key[8:]))
