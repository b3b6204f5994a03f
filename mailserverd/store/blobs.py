"""Content-addressed message blobs, their reference counts and their facts.

A blob is keyed by the sha256 of the message bytes and stored once per shard;
``blobrefs`` counts the messages (over all users and mailboxes of the shard)
that point at it, and ``facts`` holds its parsed IMAP facts. When the count
reaches 0, blob, count and facts are deleted in the same transaction.

Blob bytes pass through :func:`encode_blob` / :func:`decode_blob` on their way
to and from LMDB, and nowhere else reads raw blob values: that pair is the
place for compression and encryption at rest.
"""

from __future__ import annotations

import hashlib

from mailserverd.store import keys, records


def blob_id_of(raw: bytes) -> bytes:
    """The id of a message's content: its sha256 digest (32 bytes)."""
    return hashlib.sha256(raw).digest()


def encode_blob(raw: bytes) -> bytes:
    """Message bytes -> stored value. Identity for now (the future codec place)."""
    return raw


def decode_blob(stored: bytes) -> bytes:
    """Stored value -> the exact message bytes :func:`encode_blob` was given."""
    return bytes(stored)


def add_blob_refs(txn, dbs, blob_id: bytes, raw: bytes | None, facts: dict | None, count: int) -> None:
    """Add ``count`` references to a blob, storing it (and its facts) if new.

    ``raw`` and ``facts`` may be None only when the blob is known to exist
    (a copy of a stored message). Raises KeyError if it does not.
    """
    current = txn.get(blob_id, db=dbs["blobrefs"])
    if current is None:
        if raw is None:
            raise KeyError("blob to reference does not exist")
        txn.put(blob_id, encode_blob(raw), db=dbs["blobs"])
        txn.put(blob_id, records.encode_facts(facts or {"size": len(raw)}), db=dbs["facts"])
        refs = 0
    else:
        refs = keys.read_u64(current)
    txn.put(blob_id, keys.u64(refs + count), db=dbs["blobrefs"])


def release_blob_refs(txn, dbs, blob_id: bytes, count: int = 1) -> None:
    """Drop ``count`` references; delete blob, count and facts at zero."""
    current = txn.get(blob_id, db=dbs["blobrefs"])
    if current is None:
        return  # already gone: nothing to release (never goes negative)
    refs = keys.read_u64(current) - count
    if refs > 0:
        txn.put(blob_id, keys.u64(refs), db=dbs["blobrefs"])
        return
    txn.delete(blob_id, db=dbs["blobrefs"])
    txn.delete(blob_id, db=dbs["blobs"])
    txn.delete(blob_id, db=dbs["facts"])


def blob_refcount(txn, dbs, blob_id: bytes) -> int:
    """How many messages of the shard reference the blob (0 if none)."""
    current = txn.get(blob_id, db=dbs["blobrefs"])
    return 0 if current is None else keys.read_u64(current)


def read_blob(txn, dbs, blob_id: bytes) -> bytes | None:
    """The message bytes of a blob, or None if the shard does not hold it."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    return None if stored is None else decode_blob(stored)


def read_facts(txn, dbs, blob_id: bytes) -> dict | None:
    """The stored facts of a blob, or None if the shard does not hold it."""
    stored = txn.get(blob_id, db=dbs["facts"])
    return None if stored is None else records.decode_facts(stored)
