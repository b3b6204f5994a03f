"""Content-addressed message blobs, their reference counts and their facts.

A blob is keyed by the sha256 of the message bytes and stored once per shard,
together with its parsed IMAP facts (one value: one page write less per
delivery than a separate facts record, whose random key would dirty a page of
its own); ``blobrefs`` counts the messages (over all users and mailboxes of
the shard) that point at it. When the count reaches 0, blob and count are
deleted in the same transaction.

Blob values pass through :func:`encode_blob` / :func:`decode_blob` on their
way to and from LMDB, and nowhere else reads raw blob values: that pair is
the place for compression and encryption at rest.

Encrypted at rest (:mod:`mailserverd.store.sealing`), a blob belongs to one
user: its key is the user id and the keyed name of the content hash
(:func:`sealed_blob_id`), so one message to several users of a shard is one
blob each, and one user's copies still share one. Its facts and its message
are sealed apart with the user's key (reading the facts, FETCH ENVELOPE,
opens only them), each bound to the blob's key and to which part it is.
"""

from __future__ import annotations

import hashlib
import struct

from mailserverd.store import keys, records
from mailserverd.store.errors import Damaged
from mailserverd.store.sealing import UserKeys, no_master_key

#: Layout of a stored blob value: format byte, facts length, facts record, message bytes.
_BLOB_FORMAT = 1
#: A sealed blob: format byte, sealed facts length, sealed facts, sealed message.
_SEALED_FORMAT = 2
_HEADER = struct.Struct(">BI")
_SEALED = bytes([_SEALED_FORMAT])
#: What each sealed part is bound to besides the blob's key.
_FACTS_PART, _MESSAGE_PART = b"/facts", b"/message"


def blob_id_of(raw: bytes) -> bytes:
    """The id of a message's content: its sha256 digest (32 bytes)."""
    return hashlib.sha256(raw).digest()


def sealed_blob_id(user_id: int, user_keys: UserKeys, content_id: bytes) -> bytes:
    """The key of ``user_id``'s sealed blob of the content ``content_id``
    (:func:`blob_id_of`): the user's key prefix and the keyed name (40 bytes)."""
    return keys.user_prefix(user_id) + user_keys.name(content_id)


def encode_blob(raw: bytes, facts_record: bytes, user_keys: UserKeys | None = None,
                blob_id: bytes = b"") -> bytes:
    """Message bytes and their encoded facts -> the stored value; sealed with
    ``user_keys`` (bound to ``blob_id``, the key it is stored under) when given:
    facts and message apart, so that reading the facts opens only them."""
    if user_keys is None:
        return _HEADER.pack(_BLOB_FORMAT, len(facts_record)) + facts_record + raw
    sealed_facts = user_keys.seal(facts_record, blob_id + _FACTS_PART)
    return (_HEADER.pack(_SEALED_FORMAT, len(sealed_facts)) + sealed_facts
            + user_keys.seal(raw, blob_id + _MESSAGE_PART))


def is_sealed(stored: bytes) -> bool:
    """Whether a stored blob value is sealed (encrypted at rest)."""
    return stored[:1] == _SEALED


def decode_blob(stored: bytes, blob_id: bytes = b"", opener=None, owner: int | None = None,
                message: bool = True, facts: bool = True) -> tuple[bytes, bytes]:
    """Stored value -> ``(facts_record, message bytes)`` as :func:`encode_blob`
    was given them (``b""`` for the one of them not wanted: ``message`` or
    ``facts`` false; a sealed part not wanted is not opened).

    A sealed value is opened with the keys ``opener(owner)`` gives: by
    default the owner is the user of ``blob_id`` (:func:`sealed_blob_id`).
    Raises ValueError for a value of an unknown format, MasterKeyError for a
    sealed one with no opener, Damaged for one that fails its authentication
    or whose owner's key was erased.
    """
    form, facts_length = _HEADER.unpack_from(stored)
    start = _HEADER.size
    view = memoryview(stored)  # parts cut without a copy
    facts_part, rest = view[start:start + facts_length], view[start + facts_length:]
    if form == _BLOB_FORMAT:
        return bytes(facts_part) if facts else b"", bytes(rest) if message else b""
    if form != _SEALED_FORMAT:
        raise ValueError(f"unknown blob format {form}")
    user_keys = _owner_keys(opener, keys.read_u64(blob_id[:8]) if owner is None else owner)
    return (user_keys.unseal(facts_part, blob_id + _FACTS_PART) if facts else b"",
            user_keys.unseal(rest, blob_id + _MESSAGE_PART) if message else b"")


def _owner_keys(opener, owner: int) -> UserKeys:
    if opener is None:
        raise no_master_key("this store")
    user_keys = opener(owner)
    if user_keys is None:
        raise Damaged("the data key of this message's owner is gone (erased)")
    return user_keys


def opener(txn, dbs, keyring):
    """``user_id -> UserKeys | None`` reading ``txn``, or None without a keyring."""
    if keyring is None:
        return None
    return lambda user_id: keyring.user_keys(txn, dbs, user_id)


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
                  count: int, user_keys: UserKeys | None = None) -> None:
    """Add ``count`` references to a blob, storing it (and its facts) if new,
    sealed with ``user_keys`` if given (``blob_id`` is then its
    :func:`sealed_blob_id`).

    ``raw`` and ``facts`` may be None only when the blob is known to exist
    (a copy of a stored message). Raises KeyError if it does not.
    """
    if raw is not None:
        if not isinstance(facts, bytes):  # parse workers hand over the encoded record
            facts = records.encode_facts(facts or {"size": len(raw)})
        # One LMDB call for the common case, a new blob referenced once:
        # put refuses an existing key, and a count of 1 is not stored.
        if txn.put(blob_id, encode_blob(raw, facts, user_keys, blob_id), db=dbs["blobs"], overwrite=False):
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


def read_blob(txn, dbs, blob_id: bytes, keyring=None) -> bytes | None:
    """The message bytes of a blob, or None if the shard does not hold it.
    Raises as :func:`decode_blob` does (a sealed one is opened with ``keyring``)."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    return None if stored is None else decode_blob(stored, blob_id, opener(txn, dbs, keyring), facts=False)[1]


def read_facts(txn, dbs, blob_id: bytes, keyring=None) -> dict | None:
    """The stored facts of a blob, or None if the shard does not hold it.
    Raises as :func:`read_blob` does."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    if stored is None:
        return None
    return records.decode_facts(decode_blob(stored, blob_id, opener(txn, dbs, keyring), message=False)[0])


def read_content(txn, dbs, blob_id: bytes, keyring=None) -> tuple[bytes, dict] | None:
    """``(message bytes, facts)`` of a blob (opened once), or None if the shard
    does not hold it. Raises as :func:`read_blob` does."""
    stored = txn.get(blob_id, db=dbs["blobs"])
    if stored is None:
        return None
    facts, raw = decode_blob(stored, blob_id, opener(txn, dbs, keyring))
    return raw, records.decode_facts(facts)
