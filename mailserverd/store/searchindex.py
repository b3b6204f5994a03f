"""The search index's records in a shard environment (kept for mailserverd.search).

Three sub-databases (names in env.SHARD_DBS), all per user:

- ``searchmap``: (user id, mailbox id, uid) -> docno, and under uid 0 the
  mailbox's *indexed UID*: every message of the mailbox with a UID up to it
  has been indexed (or was gone before it could be), none above it. UIDs grow
  with the change log, and the indexer follows the log in order, so what is
  indexed of a mailbox is always such a prefix; a search scans the rest.
- ``searchdocs``: (user id, docno) -> ``[mailbox id, uid, text]``, where
  ``text`` is what the search package stored for the message (opaque here);
  under docno 0 the user's next docno.
- ``searchgrams``: (user id, gram, segment) -> the docnos ``segment *
  SEGMENT_DOCS + n`` holding ``gram`` (a 3-byte string): a sorted array of
  ``n`` (little-endian u16) when sparse, a bitmap of SEGMENT_DOCS bits when
  that is smaller. Postings are written per batch (one read-modify-write per
  gram and segment of the batch), never one put per gram per message.

Removing a message deletes its map entry and doc; its postings stay (a
posting naming a missing doc is skipped) until ``index rebuild``.
The ``info`` key ``search_seq`` is the change-log position the index
reflects, written in the same transaction as the index records.
"""

from __future__ import annotations

import struct
from array import array
from typing import Iterable, Iterator

from mailserverd.store import keys, records, shard

#: Docnos per posting segment (a format constant: changing it needs a rebuild).
SEGMENT_DOCS = 4096
_BITMAP_BYTES = SEGMENT_DOCS // 8
SEARCH_SEQ_KEY = b"search_seq"
_GRAM_KEY = struct.Struct(">Q3sI")
_SPARSE, _BITMAP = 0, 1


def _doc_key(user_id: int, docno: int) -> bytes:
    return keys.mailbox_key(user_id, docno)


def _map_key(user_id: int, mailbox_id: int, uid: int) -> bytes:
    return keys.message_key(user_id, mailbox_id, uid)


def search_seq(txn, dbs) -> int:
    """The change-log position the shard's index reflects (0: nothing indexed)."""
    data = txn.get(SEARCH_SEQ_KEY, db=dbs["info"])
    return 0 if data is None else keys.read_u64(data)


def encode_posting(offsets: list[int]) -> bytes:
    """Sorted offsets within a segment -> the stored posting (array or bitmap, the smaller)."""
    if 2 * len(offsets) < _BITMAP_BYTES:
        return bytes((_SPARSE,)) + array("H", offsets).tobytes()
    bits = 0
    for offset in offsets:
        bits |= 1 << offset
    return bytes((_BITMAP,)) + bits.to_bytes(_BITMAP_BYTES, "little")


def posting_bits(data: bytes) -> int:
    """A stored posting as an int whose bit ``n`` is set for each offset ``n``."""
    if data[0] == _BITMAP:
        return int.from_bytes(data[1:], "little")
    bits = 0
    for offset in array("H", data[1:]):
        bits |= 1 << offset
    return bits


def bit_offsets(bits: int) -> list[int]:
    """The offsets set in ``bits`` (as :func:`posting_bits` gives), ascending."""
    found = []
    data = bits.to_bytes(_BITMAP_BYTES, "little")
    for index, byte in enumerate(data):
        if byte:
            base = index * 8
            found.extend(base + bit for bit in _BYTE_BITS[byte])
    return found


_BYTE_BITS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))


# ---------------------------------------------------------------- writing (writer thread)


def apply_batch(w, upto_seq: int, docs: Iterable[tuple[int, int, int, bytes | None, Iterable[bytes]]],
                removals: Iterable[tuple[int, int | None, list[int] | None]]) -> int:
    """Write one indexing batch and move ``search_seq`` to ``upto_seq``; returns docs written.

    ``removals`` (applied first, in order) are ``(user, mailbox, uids)``:
    those messages' docs, or with ``uids`` None the whole mailbox's, or with
    ``mailbox`` None the whole user's index. ``docs`` are ``(user, mailbox,
    uid, text, grams)`` in change-log order; ``text`` None marks a message
    gone before it was indexed (only the indexed UID moves). A doc at or
    below its mailbox's indexed UID is skipped, so a batch may be replayed.
    """
    for user_id, mailbox_id, uids in removals:
        _remove(w, user_id, mailbox_id, uids)
    postings: dict[tuple[int, bytes, int], list[int]] = {}
    next_docnos: dict[int, int] = {}
    indexed: dict[tuple[int, int], int] = {}
    written = 0
    for user_id, mailbox_id, uid, text, grams in docs:
        box = (user_id, mailbox_id)
        if box not in indexed:
            indexed[box] = indexed_uid(w.txn, w.dbs, user_id, mailbox_id)
        if uid <= indexed[box]:
            continue
        indexed[box] = uid
        if text is None:
            continue
        if user_id not in next_docnos:
            data = w.txn.get(_doc_key(user_id, 0), db=w.dbs["searchdocs"])
            next_docnos[user_id] = 1 if data is None else keys.read_u64(data)
        docno = next_docnos[user_id]
        next_docnos[user_id] = docno + 1
        w.txn.put(_doc_key(user_id, docno), records.pack([mailbox_id, uid, text]), db=w.dbs["searchdocs"])
        w.txn.put(_map_key(user_id, mailbox_id, uid), keys.u64(docno), db=w.dbs["searchmap"])
        segment, offset = divmod(docno, SEGMENT_DOCS)
        for gram in grams:
            postings.setdefault((user_id, gram, segment), []).append(offset)
        written += 1
    for (user_id, mailbox_id), uid in indexed.items():
        w.txn.put(_map_key(user_id, mailbox_id, 0), keys.u64(uid), db=w.dbs["searchmap"])
    for user_id, docno in next_docnos.items():
        w.txn.put(_doc_key(user_id, 0), keys.u64(docno), db=w.dbs["searchdocs"])
    _write_postings(w, postings)
    w.txn.put(SEARCH_SEQ_KEY, keys.u64(upto_seq), db=w.dbs["info"])
    return written


def _write_postings(w, postings: dict[tuple[int, bytes, int], list[int]]) -> None:
    """Merge each (user, gram, segment)'s new offsets into its stored posting."""
    db = w.dbs["searchgrams"]
    for (user_id, gram, segment), offsets in sorted(postings.items()):
        key = _GRAM_KEY.pack(user_id, gram, segment)
        stored = w.txn.get(key, db=db)
        if stored is not None:
            offsets = bit_offsets(posting_bits(stored) | posting_bits(encode_posting(offsets)))
        w.txn.put(key, encode_posting(offsets), db=db)


def _remove(w, user_id: int, mailbox_id: int | None, uids: list[int] | None) -> None:
    """Delete the docs (and map entries) of some messages, a mailbox, or a user."""
    if mailbox_id is None:
        prefix = keys.user_prefix(user_id)
        for name in ("searchmap", "searchdocs", "searchgrams"):
            shard.delete_range(w, name, prefix)
        return
    if uids is None:
        prefix = keys.mailbox_prefix(user_id, mailbox_id)
        entries = list(shard._scan(w.txn, w.dbs["searchmap"], prefix))
        uids = [keys.uid_from_message_key(key) for key, _ in entries]
    for uid in uids:
        if uid == 0:
            continue
        map_key = _map_key(user_id, mailbox_id, uid)
        docno = w.txn.get(map_key, db=w.dbs["searchmap"])
        if docno is not None:
            w.txn.delete(_doc_key(user_id, keys.read_u64(docno)), db=w.dbs["searchdocs"])
            w.txn.delete(map_key, db=w.dbs["searchmap"])


# ---------------------------------------------------------------- reading


def indexed_uid(txn, dbs, user_id: int, mailbox_id: int) -> int:
    """The mailbox's indexed UID (see the module docstring); 0 when nothing is."""
    data = txn.get(_map_key(user_id, mailbox_id, 0), db=dbs["searchmap"])
    return 0 if data is None else keys.read_u64(data)


class SearchIndexReader:
    """One user's index inside one read transaction (see :meth:`LMDBStore.read_search_index`)."""

    def __init__(self, txn, dbs, user_id: int):
        self._txn = txn
        self._dbs = dbs
        self._user_id = user_id

    def indexed_uid(self, mailbox_id: int) -> int:
        """Every message of the mailbox with a UID up to this is indexed, none above."""
        return indexed_uid(self._txn, self._dbs, self._user_id, mailbox_id)

    def gram_segments(self, gram: bytes) -> dict[int, int]:
        """``{segment: bits}`` of the docs holding ``gram`` (see :func:`bit_offsets`)."""
        prefix = _GRAM_KEY.pack(self._user_id, gram, 0)[:11]
        return {_GRAM_KEY.unpack(key)[2]: posting_bits(value)
                for key, value in shard._scan(self._txn, self._dbs["searchgrams"], prefix)}

    def doc(self, docno: int) -> tuple[int, int, bytes] | None:
        """``(mailbox id, uid, text)`` of a doc, or None if it was removed."""
        data = self._txn.get(_doc_key(self._user_id, docno), db=self._dbs["searchdocs"])
        return None if data is None else tuple(records.unpack(data))

    def docno(self, mailbox_id: int, uid: int) -> int | None:
        data = self._txn.get(_map_key(self._user_id, mailbox_id, uid), db=self._dbs["searchmap"])
        return None if data is None else keys.read_u64(data)

    def mailbox_docs(self, mailbox_id: int) -> Iterator[tuple[int, int]]:
        """``(uid, docno)`` of the mailbox's indexed messages, in UID order."""
        prefix = keys.mailbox_prefix(self._user_id, mailbox_id)
        for key, value in shard._scan(self._txn, self._dbs["searchmap"], prefix):
            uid = keys.uid_from_message_key(key)
            if uid:
                yield uid, keys.read_u64(value)

    def size(self) -> dict[str, int]:
        """Stored bytes (keys and values) of this user's docs, postings and map."""
        prefix = keys.user_prefix(self._user_id)
        return {name: sum(len(key) + len(value) for key, value in
                          shard._scan(self._txn, self._dbs[name], prefix))
                for name in ("searchdocs", "searchgrams", "searchmap")}
