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


def _exists(txn, dbs, blob_id: bytes) -> bool:
    """Whether the shard holds the blob (without copying its value)."""
    return txn.cursor(db=dbs["blobs"]).set_key(blob_id)


def _refcount(txn, dbs, blob_id: bytes) -> int:
    """References to a stored blob: the ``blobrefs`` count, or 1 when there is none.

    Most blobs are referenced once (one delivery, one recipient), so a count
    of 1 is not stored: that saves an LMDB write per delivery.
    """
    current = txn.get(blob_id, db=dbs["blobrefs"])
    return 1 if current is None else keys.read_u64(current)


def _set_refcount(txn, dbs, blob_id: bytes, refs: int) -> None:
    if refs == 1:
        txn.delete(blob_id, db=dbs["blobrefs"])  # absent means 1
    else:
        txn.put(blob_id, keys.u64(refs), db=dbs["blobrefs"])


def add_blob_refs(txn, dbs, blob_id: bytes, raw: bytes | None, facts: dict | bytes | None,
                  count: int) -> None:
    """Add ``count`` references to a blob, storing it (and its facts) if new.

    ``raw`` and ``facts`` may be None only when the blob is known to exist
    (a copy of a stored message). Raises KeyError if it does not.
    """
    if raw is not None:
        if not isinstance(facts, bytes):  # parse workers hand over the encoded record
            facts = records.encode_facts(facts or {"size": len(raw)})
        # One LMDB call for the common case, a new blob referenced once:
        # put refuses an existing key, and a count of 1 is not stored.
        if txn.put(blob_id, encode_blob(raw, facts), db=dbs["blobs"], overwrite=False):
            if count != 1:
                _set_refcount(txn, dbs, blob_id, count)
            return
    elif not _exists(txn, dbs, blob_id):
        raise KeyError("blob to reference does not exist")
    _set_refcount(txn, dbs, blob_id, _refcount(txn, dbs, blob_id) + count)


def release_blob_refs(txn, dbs, blob_id: bytes, count: int = 1) -> None:
    """Drop ``count`` references; delete the blob (and its count) at zero."""
    if not _exists(txn, dbs, blob_id):
        return  # already gone: nothing to release (never goes negative)
    refs = _refcount(txn, dbs, blob_id) - count
    if refs > 0:
        _set_refcount(txn, dbs, blob_id, refs)
        return
    txn.delete(blob_id, db=dbs["blobrefs"])
    txn.delete(blob_id, db=dbs["blobs"])


def read_blob(txn, dbs, blob_id: bytes) -> bytes | None:
    """The message bytes of a blob, or None if the shard does not hold it."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    return None if stored is None else decode_blob(stored)[1]


def read_facts(txn, dbs, blob_id: bytes) -> dict | None:
    """The stored facts of a blob, or None if the shard does not hold it."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    return None if stored is None else records.decode_facts(decode_blob(stored)[0])
