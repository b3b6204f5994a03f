"""Content-addressed message blobs, their reference counts and their facts.

A blob is keyed by the sha256 of the message bytes and stored once per shard,
together with its parsed IMAP facts (one value: one page write less per
delivery than a separate facts record, whose random key would dirty a page of
its own); ``blobrefs`` counts the messages (over all users and mailboxes of
the shard) that point at it. When the count reaches 0, blob and count are
deleted in the same transaction.

Blob values pass through :func:`encode_blob` / :func:`decode_blob` on their
way to and from LMDB, and nowhere else reads raw blob values: that pair is
the place for compression and encryption at rest (which must cover the facts
too: they hold header text).
"""

from __future__ import annotations

import hashlib
import struct

from mailserverd.store import keys, records

#: Layout of a stored blob value: format byte, facts length, facts record, message bytes.
_BLOB_FORMAT = 1
_HEADER = struct.Struct(">BI")


def blob_id_of(raw: bytes) -> bytes:
    """The id of a message's content: its sha256 digest (32 bytes)."""
    return hashlib.sha256(raw).digest()


def encode_blob(raw: bytes, facts_record: bytes) -> bytes:
    """Message bytes and their encoded facts -> the stored value."""
    return _HEADER.pack(_BLOB_FORMAT, len(facts_record)) + facts_record + raw


def decode_blob(stored: bytes) -> tuple[bytes, bytes]:
    """Stored value -> ``(facts_record, message bytes)`` as :func:`encode_blob` was given them.

    Raises ValueError for a value of an unknown format.
    """
    form, facts_length = _HEADER.unpack_from(stored)
    if form != _BLOB_FORMAT:
        raise ValueError(f"unknown blob format {form}")
    start = _HEADER.size
    return bytes(stored[start:start + facts_length]), bytes(stored[start + facts_length:])


def add_blob_refs(txn, dbs, blob_id: bytes, raw: bytes | None, facts: dict | bytes | None,
                  count: int) -> None:
    """Add ``count`` references to a blob, storing it (and its facts) if new.

    ``raw`` and ``facts`` may be None only when the blob is known to exist
    (a copy of a stored message). Raises KeyError if it does not.
    """
    if raw is not None:
        if not isinstance(facts, bytes):  # parse workers hand over the encoded record
            facts = records.encode_facts(facts or {"size": len(raw)})
        # One LMDB call for the common case, a new blob: put refuses an existing key.
        if txn.put(blob_id, encode_blob(raw, facts), db=dbs["blobs"], overwrite=False):
            txn.put(blob_id, keys.u64(count), db=dbs["blobrefs"])
            return
    current = txn.get(blob_id, db=dbs["blobrefs"])
    if current is None:
        raise KeyError("blob to reference does not exist")
    txn.put(blob_id, keys.u64(keys.read_u64(current) + count), db=dbs["blobrefs"])


def release_blob_refs(txn, dbs, blob_id: bytes, count: int = 1) -> None:
    """Drop ``count`` references; delete blob and count at zero."""
    current = txn.get(blob_id, db=dbs["blobrefs"])
    if current is None:
        return  # already gone: nothing to release (never goes negative)
    refs = keys.read_u64(current) - count
    if refs > 0:
        txn.put(blob_id, keys.u64(refs), db=dbs["blobrefs"])
        return
    txn.delete(blob_id, db=dbs["blobrefs"])
    txn.delete(blob_id, db=dbs["blobs"])


def blob_refcount(txn, dbs, blob_id: bytes) -> int:
    """How many messages of the shard reference the blob (0 if none)."""
    current = txn.get(blob_id, db=dbs["blobrefs"])
    return 0 if current is None else keys.read_u64(current)


def read_blob(txn, dbs, blob_id: bytes) -> bytes | None:
    """The message bytes of a blob, or None if the shard does not hold it."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    return None if stored is None else decode_blob(stored)[1]


def read_facts(txn, dbs, blob_id: bytes) -> dict | None:
    """The stored facts of a blob, or None if the shard does not hold it."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    return None if stored is None else records.decode_facts(decode_blob(stored)[0])
