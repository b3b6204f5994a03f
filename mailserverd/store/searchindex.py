"""The search index's records in a shard environment (kept for mailserverd.search).

Four sub-databases (names in env.SHARD_DBS), all per user:

- ``searchmap``: (user id, mailbox id, uid) -> docno, and under uid 0 the
  mailbox's *indexed UID*: every message of the mailbox with a UID up to it
  has been indexed (or was gone before it could be), none above it. UIDs grow
  with the change log, and the indexer follows the log in order, so what is
  indexed of a mailbox is always such a prefix; a search scans the rest.
- ``searchdocs``: (user id, docno) -> ``[mailbox id, uid, text]``, where
  ``text`` is what the search package stored for the message (opaque here);
  under docno 0 the user's next docno.
- ``searchterms`` (key = user id, then a kind byte):

  - ``V`` + token -> its token id (u32; the vocabulary), ``I`` + id -> the
    token, ``N`` -> the user's next token id. The empty token is id 0,
    never stored.
  - a class byte (the search package's, an ASCII letter) + token id + segment
    -> the docnos ``segment * SEGMENT_DOCS + n`` whose text of that class has
    that token: a *posting*, a sorted array of ``n`` (little-endian u16) when
    sparse, a bitmap of SEGMENT_DOCS bits when that is smaller.
  - the class byte + 0x80, two token ids, a segment -> the posting of the docs
    whose text of that class has that pair of tokens (see the search package).
  - ``O`` + docno -> the doc's *sort record* (opaque here: what the search
    package gave), so that SORT and THREAD read no facts.
  - ``S`` + segment -> the *segment map*: for each docno of the segment, its
    mailbox id and uid (two u32 arrays; 0, 0 for none or removed), so that a
    posting turns into messages without reading any doc.
- ``searchgrams``: (user id, gram, segment) -> the token ids holding the
  3-byte ``gram`` (postings as above, over token ids): how a needle finds the
  tokens it is part of.

Postings are written per batch (one read-modify-write per key of the
batch), never one put per token per message. Removing a message deletes its
map entry and doc and clears its segment-map slot; its postings stay (a
posting naming a cleared slot is skipped) until a rebuild clears them
(:func:`replace_docs`, :func:`compact_postings`).

Encrypted at rest (store/sealing.py), the layout is :data:`SEALED_FORMAT`:
the vocabulary's tokens and the grams are keyed by their keyed names
(``UserKeys.term``: a gram's is 3 bytes, so grams of different text may
share one, which costs a search a few more candidate tokens to check, never
a wrong answer), and the token texts, doc texts and sort records are sealed
values, bound to their keys. Postings, segment maps and the map hold ids only.

The ``info`` keys: ``search_seq`` is the change-log position the index
reflects, written in the same transaction as the index records;
``search_format`` the layout above (:data:`FORMAT`, or :data:`SEALED_FORMAT`). An index of another
layout answers nothing (every mailbox reads as unindexed, so searches scan)
until :func:`reset` empties it for the indexer to rebuild from the log.
"""

from __future__ import annotations

import struct
from array import array
from itertools import compress
from typing import Iterable, Iterator

from mailserverd.store import keys, records, shard

#: Docnos per posting segment (a format constant: changing it needs a rebuild).
SEGMENT_DOCS = 4096
#: The layout of the index records (this module's docstring).
FORMAT = 2
#: The same, encrypted at rest.
SEALED_FORMAT = 3
_BITMAP_BYTES = SEGMENT_DOCS // 8
SEARCH_SEQ_KEY = b"search_seq"
SEARCH_FORMAT_KEY = b"search_format"
_GRAM_KEY = struct.Struct(">Q3sI")
_USER = struct.Struct(">Q")
_POSTING_KEY = struct.Struct(">QcII")  # user, class, token id, segment
_PAIR_KEY = struct.Struct(">QcIII")  # user, class | 0x80, first token id, second, segment
_VOCAB, _TOKEN, _NEXT_TOKEN, _SEGMENT_MAP, _SORT_RECORD = b"V", b"I", b"N", b"S", b"O"
_ID = struct.Struct(">I")
_SPARSE, _BITMAP = 0, 1
SEARCH_DBS = ("searchmap", "searchdocs", "searchterms", "searchgrams")


def _doc_key(user_id: int, docno: int) -> bytes:
    return keys.mailbox_key(user_id, docno)


def _map_key(user_id: int, mailbox_id: int, uid: int) -> bytes:
    return keys.message_key(user_id, mailbox_id, uid)


def _terms_key(user_id: int, kind: bytes, rest: bytes = b"") -> bytes:
    return _USER.pack(user_id) + kind + rest


def search_seq(txn, dbs) -> int:
    """The change-log position the shard's index reflects (0: nothing indexed)."""
    data = txn.get(SEARCH_SEQ_KEY, db=dbs["info"])
    return 0 if data is None else keys.read_u64(data)


def format_for(sealed: bool) -> int:
    """The layout an index of a store that does (or does not) encrypt at rest has."""
    return SEALED_FORMAT if sealed else FORMAT


def _format_of(w) -> int:
    return format_for(w.keyring is not None)


def search_format(txn, dbs) -> int:
    """The layout the shard's index records have (0: none recorded, before FORMAT 2)."""
    data = txn.get(SEARCH_FORMAT_KEY, db=dbs["info"])
    return 0 if data is None else keys.read_u64(data)


def encode_posting(offsets: list[int]) -> bytes:
    """Sorted offsets within a segment -> the stored posting (array or bitmap, the smaller)."""
    if 2 * len(offsets) < _BITMAP_BYTES:
        return bytes((_SPARSE,)) + array("H", offsets).tobytes()
    return encode_bits(_bits_of(offsets))


def encode_bits(bits: int) -> bytes:
    """A posting given as bits (see :func:`posting_bits`) -> the stored posting."""
    if 2 * bits.bit_count() < _BITMAP_BYTES:
        return bytes((_SPARSE,)) + array("H", _set_bits(bits)).tobytes()
    return bytes((_BITMAP,)) + bits.to_bytes(_BITMAP_BYTES, "little")


def _bits_of(offsets) -> int:
    bits = 0
    for offset in offsets:
        bits |= 1 << offset
    return bits


def _set_bits(bits: int) -> list[int]:
    """The offsets set in a sparse ``bits``, ascending (one step per set bit)."""
    found = []
    while bits:
        lowest = bits & -bits
        found.append(lowest.bit_length() - 1)
        bits ^= lowest
    return found


def posting_bits(data: bytes) -> int:
    """A stored posting as an int whose bit ``n`` is set for each offset ``n``."""
    if data[0] == _BITMAP:
        return int.from_bytes(data[1:], "little")
    return _bits_of(array("H", data[1:]))


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
_FLAG_OF_DIGIT = bytes.maketrans(b"01", b"\x00\x01")
_ALL_DIGITS = "0%db" % SEGMENT_DOCS


def bit_flags(bits: int) -> bytes:
    """``SEGMENT_DOCS`` bytes whose byte ``n`` is 1 where bit ``n`` of ``bits`` is set,
    else 0: a selector for :func:`itertools.compress`, made and used in C, where
    :func:`bit_offsets` takes a step per byte in Python."""
    return format(bits, _ALL_DIGITS)[::-1].encode("ascii").translate(_FLAG_OF_DIGIT)


def _merge_postings(w, db, postings: dict[bytes, list[int]]) -> None:
    """Merge each key's new offsets (ascending) into its stored posting."""
    for key, offsets in sorted(postings.items()):
        stored = w.txn.get(key, db=db)
        if stored is None:
            w.txn.put(key, encode_posting(offsets), db=db)
        else:
            w.txn.put(key, encode_bits(posting_bits(stored) | _bits_of(offsets)), db=db)


# ---------------------------------------------------------------- writing (writer thread)


def reset(w) -> None:
    """Empty the shard's whole index and record its layout (:func:`format_for`):
    the indexer then follows the change log from its start (a search scans
    what is not indexed yet)."""
    for name in SEARCH_DBS:
        w.txn.drop(w.dbs[name], delete=False)
    w.txn.put(SEARCH_SEQ_KEY, keys.u64(0), db=w.dbs["info"])
    w.txn.put(SEARCH_FORMAT_KEY, keys.u64(_format_of(w)), db=w.dbs["info"])


class _Batch:
    """The records one :func:`apply_batch` adds, gathered per key before writing."""

    def __init__(self, w):
        self.w = w
        self.next_docnos: dict[int, int] = {}
        self.token_ids: dict[tuple[int, bytes], int] = {}
        self.next_ids: dict[int, int] = {}
        self.postings: dict[tuple, list[int]] = {}  # key fields -> offsets, packed when written
        self.gram_postings: dict[bytes, list[int]] = {}
        self.slots: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        self._user_keys: dict[int, object] = {}

    def user_keys(self, user_id: int):
        """The user's sealing.UserKeys when the store encrypts at rest, else None."""
        if self.w.keyring is None:
            return None
        if user_id not in self._user_keys:
            self._user_keys[user_id] = self.w.keyring.user_keys_for_writing(self.w.txn, self.w.dbs, user_id)
        return self._user_keys[user_id]

    def docno(self, user_id: int) -> int:
        if user_id not in self.next_docnos:
            data = self.w.txn.get(_doc_key(user_id, 0), db=self.w.dbs["searchdocs"])
            self.next_docnos[user_id] = 1 if data is None else keys.read_u64(data)
        docno = self.next_docnos[user_id]
        self.next_docnos[user_id] = docno + 1
        return docno

    def token_id(self, user_id: int, token: bytes) -> int:
        """The token's id, added to the vocabulary (and its grams) if new."""
        if not token:
            return 0
        known = self.token_ids.get((user_id, token))
        if known is not None:
            return known
        db = self.w.dbs["searchterms"]
        user_keys = self.user_keys(user_id)
        vocab_key = _terms_key(user_id, _VOCAB, _term_name(user_keys, token))
        data = self.w.txn.get(vocab_key, db=db)
        if data is not None:
            token_id = _ID.unpack(data)[0]
        else:
            if user_id not in self.next_ids:
                stored = self.w.txn.get(_terms_key(user_id, _NEXT_TOKEN), db=db)
                self.next_ids[user_id] = 1 if stored is None else _ID.unpack(stored)[0]
            token_id = self.next_ids[user_id]
            self.next_ids[user_id] = token_id + 1
            self.w.txn.put(vocab_key, _ID.pack(token_id), db=db)
            token_key = _terms_key(user_id, _TOKEN, _ID.pack(token_id))
            self.w.txn.put(token_key, _sealed(user_keys, token, token_key), db=db)
            segment, offset = divmod(token_id, SEGMENT_DOCS)
            for gram in {token[index:index + 3] for index in range(len(token) - 2)}:
                gram_key = _GRAM_KEY.pack(user_id, _gram_name(user_keys, gram), segment)
                self.gram_postings.setdefault(gram_key, []).append(offset)
        self.token_ids[(user_id, token)] = token_id
        return token_id

    def add(self, user_id: int, mailbox_id: int, uid: int, text: bytes, terms: dict, pairs: dict,
            sortable) -> None:
        docno = self.docno(user_id)
        dbs = self.w.dbs
        user_keys = self.user_keys(user_id)
        if sortable is not None:
            sort_key = _terms_key(user_id, _SORT_RECORD, keys.u64(docno))
            self.w.txn.put(sort_key, _sealed(user_keys, records.pack(sortable), sort_key), db=dbs["searchterms"])
        doc_key = _doc_key(user_id, docno)
        self.w.txn.put(doc_key, records.pack([mailbox_id, uid, _sealed(user_keys, text, doc_key)]),
                       db=dbs["searchdocs"])
        self.w.txn.put(_map_key(user_id, mailbox_id, uid), keys.u64(docno), db=dbs["searchmap"])
        segment, offset = divmod(docno, SEGMENT_DOCS)
        self.slots.setdefault((user_id, segment), []).append((offset, mailbox_id, uid))
        postings = self.postings
        for name, tokens in terms.items():
            ids = [self.token_id(user_id, token) for token in tokens]
            kind = name.encode("ascii")
            for token_id in ids:
                postings.setdefault((user_id, kind, token_id, segment), []).append(offset)
            indexes = array("I", pairs.get(name, b""))
            kind = pair_kind(name)
            for index in range(0, len(indexes), 2):
                key = (user_id, kind, ids[indexes[index]], ids[indexes[index + 1]], segment)
                postings.setdefault(key, []).append(offset)

    def write(self) -> None:
        w, db = self.w, self.w.dbs["searchterms"]
        for user_id, docno in self.next_docnos.items():
            w.txn.put(_doc_key(user_id, 0), keys.u64(docno), db=w.dbs["searchdocs"])
        for user_id, token_id in self.next_ids.items():
            w.txn.put(_terms_key(user_id, _NEXT_TOKEN), _ID.pack(token_id), db=db)
        _merge_postings(w, db, {(_POSTING_KEY if len(key) == 4 else _PAIR_KEY).pack(*key): offsets
                                for key, offsets in self.postings.items()})
        _merge_postings(w, w.dbs["searchgrams"], self.gram_postings)
        for (user_id, segment), slots in self.slots.items():
            mailboxes, uids = _read_segment_map(w.txn, w.dbs, user_id, segment)
            for offset, mailbox_id, uid in slots:
                mailboxes[offset], uids[offset] = mailbox_id, uid
            _write_segment_map(w, user_id, segment, mailboxes, uids)


def _term_name(user_keys, token: bytes) -> bytes:
    """The vocabulary key part of ``token``: itself, or sealed its keyed name."""
    return token if user_keys is None else user_keys.term(token)


def _gram_name(user_keys, gram: bytes) -> bytes:
    """The 3 bytes a gram is keyed by: itself, or sealed a keyed name."""
    return gram if user_keys is None else user_keys.term(b"gram:" + gram, 3)


def _sealed(user_keys, value: bytes, key: bytes) -> bytes:
    """``value`` as stored under ``key``: itself, or sealed (bound to the key)."""
    return value if user_keys is None else user_keys.seal(value, key)


def _opened(user_keys, stored: bytes, key: bytes) -> bytes:
    """What :func:`_sealed` was given. Raises store.errors.Damaged."""
    return bytes(stored) if user_keys is None else user_keys.unseal(bytes(stored), key)


def _read_segment_map(txn, dbs, user_id: int, segment: int) -> tuple[array, array]:
    data = txn.get(_terms_key(user_id, _SEGMENT_MAP, _ID.pack(segment)), db=dbs["searchterms"])
    if data is None:
        return array("I", bytes(4 * SEGMENT_DOCS)), array("I", bytes(4 * SEGMENT_DOCS))
    data = bytes(data)
    half = 4 * SEGMENT_DOCS
    return array("I", data[:half]), array("I", data[half:])


def _write_segment_map(w, user_id: int, segment: int, mailboxes: array, uids: array) -> None:
    w.txn.put(_terms_key(user_id, _SEGMENT_MAP, _ID.pack(segment)),
              mailboxes.tobytes() + uids.tobytes(), db=w.dbs["searchterms"])


def pair_kind(name: str) -> bytes:
    """The key byte of the pair postings of class ``name``."""
    return bytes((ord(name) | 0x80,))


def apply_batch(w, upto_seq: int, docs: Iterable[tuple[int, int, int, bytes | None, dict, dict, object]],
                removals: Iterable[tuple[int, int | None, list[int] | None]]) -> int:
    """Write one indexing batch and move ``search_seq`` to ``upto_seq``; returns docs written.

    ``removals`` (applied first, in order) are ``(user, mailbox, uids)``:
    those messages' docs, or with ``uids`` None the whole mailbox's, or with
    ``mailbox`` None the whole user's index. ``docs`` are ``(user, mailbox,
    uid, text, terms, pairs, sort record or None)`` in change-log order, ``terms`` ``{class:
    [token, ...]}``, ``pairs`` ``{class: bytes of a u32 array of the positions
    in that list of each pair's first and second token}``; ``text``
    None marks a message gone before it was indexed (only the indexed UID
    moves). A doc at or below its mailbox's indexed UID is
    skipped, so a batch may be replayed. Mailbox ids and UIDs are below 2**32.
    """
    for user_id, mailbox_id, uids in removals:
        _remove(w, user_id, mailbox_id, uids)
    batch = _Batch(w)
    indexed: dict[tuple[int, int], int] = {}
    written = 0
    for user_id, mailbox_id, uid, text, terms, pairs, sortable in docs:
        box = (user_id, mailbox_id)
        if box not in indexed:
            indexed[box] = indexed_uid(w.txn, w.dbs, user_id, mailbox_id)
        if uid <= indexed[box]:
            continue
        indexed[box] = uid
        if text is None:
            continue
        batch.add(user_id, mailbox_id, uid, text, terms, pairs, sortable)
        written += 1
    for (user_id, mailbox_id), uid in indexed.items():
        w.txn.put(_map_key(user_id, mailbox_id, 0), keys.u64(uid), db=w.dbs["searchmap"])
    batch.write()
    w.txn.put(SEARCH_SEQ_KEY, keys.u64(upto_seq), db=w.dbs["info"])
    return written


def _remove(w, user_id: int, mailbox_id: int | None, uids: list[int] | None) -> None:
    """Delete the docs (map entries, segment-map slots) of some messages, a mailbox, or a user."""
    if mailbox_id is None:
        prefix = keys.user_prefix(user_id)
        for name in SEARCH_DBS:
            shard.delete_range(w, name, prefix)
        return
    if uids is None:
        prefix = keys.mailbox_prefix(user_id, mailbox_id)
        entries = list(shard._scan(w.txn, w.dbs["searchmap"], prefix))
        uids = [keys.uid_from_message_key(key) for key, _ in entries]
    cleared: dict[int, list[int]] = {}
    for uid in uids:
        if uid == 0:
            continue
        map_key = _map_key(user_id, mailbox_id, uid)
        docno = w.txn.get(map_key, db=w.dbs["searchmap"])
        if docno is not None:
            docno = keys.read_u64(docno)
            w.txn.delete(_doc_key(user_id, docno), db=w.dbs["searchdocs"])
            w.txn.delete(_terms_key(user_id, _SORT_RECORD, keys.u64(docno)), db=w.dbs["searchterms"])
            w.txn.delete(map_key, db=w.dbs["searchmap"])
            segment, offset = divmod(docno, SEGMENT_DOCS)
            cleared.setdefault(segment, []).append(offset)
    for segment, offsets in cleared.items():
        mailboxes, slot_uids = _read_segment_map(w.txn, w.dbs, user_id, segment)
        for offset in offsets:
            mailboxes[offset] = slot_uids[offset] = 0
        _write_segment_map(w, user_id, segment, mailboxes, slot_uids)



# ---------------------------------------------------------------- rebuilding (writer thread)
# A rebuild (mailserverd.search.rebuild) gives a user's indexed messages new
# docs, numbered from the user's next docno R when it began, a chunk per
# operation, then clears from the postings the docnos below R left without a
# doc. Each operation keeps the index whole on its own, so the live indexer's
# batches may come between any two.

_ALL_BITS = (1 << SEGMENT_DOCS) - 1


def replace_docs(w, user_id: int, mailbox_id: int, before_docno: int, docs: Iterable[tuple]) -> int:
    """Give messages of one mailbox new docs under fresh docnos; returns how many got one.

    ``docs`` are ``(uid, text, ...)``: the docs of :func:`apply_batch`
    without their user and mailbox (never a None text). A
    message is replaced only while the index holds it under a docno below
    ``before_docno`` and its UID is at most the mailbox's indexed UID: one
    expunged meanwhile has no doc to replace, one above the indexed UID is the
    indexer's, one at or above ``before_docno`` was replaced already. The old
    doc goes as in an expunge (its map entry, doc and segment-map slot; its
    postings stay, for :func:`compact_postings`); the new one gets its
    postings like any doc, in the same transaction, so a search sees either.
    An index of another layout is left alone (the indexer empties it).
    """
    if search_format(w.txn, w.dbs) != _format_of(w):
        return 0
    indexed = indexed_uid(w.txn, w.dbs, user_id, mailbox_id)
    held: dict[int, tuple] = {}
    for uid, *entry in docs:
        if uid > indexed:
            continue
        data = w.txn.get(_map_key(user_id, mailbox_id, uid), db=w.dbs["searchmap"])
        if data is not None and keys.read_u64(data) < before_docno:
            held[uid] = entry
    _remove(w, user_id, mailbox_id, list(held))
    batch = _Batch(w)
    for uid, entry in held.items():
        batch.add(user_id, mailbox_id, uid, *entry)
    batch.write()
    return len(held)


def compact_postings(w, user_id: int, classes: Iterable[str], before_docno: int, start: bytes,
                     keys_max: int) -> tuple[bytes | None, int]:
    """Clear from up to ``keys_max`` of the user's postings, from ``start`` on
    (b"" for the first), the docnos below ``before_docno`` that have no doc.

    ``classes`` are the search package's class bytes (as str): the postings
    are those of these classes and of their pairs, named by the caller
    because the other kinds of ``searchterms`` record (vocabulary, sort
    records, ...) can have the same key shape. Returns ``(start of the next
    call, or None after the last posting, offsets cleared)``. A posting left
    empty is deleted, and so is the segment map of a segment wholly below
    ``before_docno`` with no doc left. Docnos from ``before_docno`` on are
    never touched (docs still being added may sit there), and a cleared
    docno names no doc, so no search loses a message. The vocabulary stays
    as it is. An index of another layout is left alone.
    """
    if search_format(w.txn, w.dbs) != _format_of(w):
        return None, 0
    db = w.dbs["searchterms"]
    prefix = _USER.pack(user_id)
    live: dict[int, int] = {}
    changes: list[tuple[bytes, bytes | None]] = []
    cleared = 0
    following = None
    found = _records(w.txn, db, prefix, [*_posting_kinds(classes), _SEGMENT_MAP], start)
    for key, value in found:
        if keys_max <= 0:
            following = key[len(prefix):]
            break
        keys_max -= 1
        segment = _ID.unpack(key[-4:])[0]
        if segment * SEGMENT_DOCS >= before_docno:
            continue
        if segment not in live:
            live[segment] = _kept_bits(w.txn, w.dbs, user_id, segment, before_docno)
        if _kind(key) == _SEGMENT_MAP:
            if (segment + 1) * SEGMENT_DOCS <= before_docno and not live[segment]:
                changes.append((key, None))
            continue
        bits = posting_bits(value)
        kept = bits & live[segment]
        if kept != bits:
            cleared += (bits ^ kept).bit_count()
            changes.append((key, encode_bits(kept) if kept else None))
    found.close()  # its cursor, before the writes
    for key, value in changes:
        if value is None:
            w.txn.delete(key, db=db)
        else:
            w.txn.put(key, value, db=db)
    return following, cleared


def _kept_bits(txn, dbs, user_id: int, segment: int, before_docno: int) -> int:
    """The offsets of a segment that compact_postings keeps: those of docs, and
    every one from ``before_docno`` on."""
    below = min(SEGMENT_DOCS, before_docno - segment * SEGMENT_DOCS)
    return _doc_bits(txn, dbs, user_id, segment, below) | (_ALL_BITS ^ ((1 << below) - 1))


def _kind(key: bytes) -> bytes:
    """The kind byte of a ``searchterms`` key (see the module docstring)."""
    return key[_USER.size:_USER.size + 1]


def _doc_bits(txn, dbs, user_id: int, segment: int, below: int = SEGMENT_DOCS) -> int:
    """The offsets below ``below`` of a segment whose docnos have a doc (as posting_bits gives)."""
    mailboxes, _ = _read_segment_map(txn, dbs, user_id, segment)
    return _bits_of(offset for offset in range(below) if mailboxes[offset])


def _posting_kinds(classes: Iterable[str]) -> list[bytes]:
    """The kind bytes of the postings of text classes ``classes`` and of their pairs."""
    return [kind for name in classes for kind in (name.encode("ascii"), pair_kind(name))]


def _records(txn, db, prefix: bytes, kinds: Iterable[bytes],
             start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of the ``searchterms`` records under ``prefix`` (a user's)
    of the kind bytes ``kinds``, in key order, from ``prefix + start`` on."""
    with txn.cursor(db=db) as cursor:  # closed when the caller stops reading
        for kind in sorted(kinds):
            first = prefix + kind
            if not cursor.set_range(max(first, prefix + start)):
                return
            for key, value in cursor:
                if not key.startswith(first):
                    break
                yield key, value


# ---------------------------------------------------------------- reading


def indexed_uid(txn, dbs, user_id: int, mailbox_id: int) -> int:
    """The mailbox's indexed UID (see the module docstring); 0 when nothing is."""
    data = txn.get(_map_key(user_id, mailbox_id, 0), db=dbs["searchmap"])
    return 0 if data is None else keys.read_u64(data)


def stored_bytes(txn, dbs) -> int:
    """Bytes of the pages the shard's index takes, every user's (LMDB's page
    counts: no scan)."""
    total = 0
    for name in SEARCH_DBS:
        stat = txn.stat(dbs[name])
        total += stat["psize"] * (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"])
    return total


def _segments(txn, db, prefix: bytes) -> dict[int, int]:
    """``{segment: bits}`` of the postings under ``prefix`` (keys ending in a u32 segment)."""
    return {_ID.unpack(key[-4:])[0]: posting_bits(value) for key, value in shard._scan(txn, db, prefix)}


class SearchIndexReader:
    """One user's index inside one read transaction (see :meth:`LMDBStore.read_search_index`)."""

    def __init__(self, txn, dbs, user_id: int, keyring=None):
        self._txn = txn
        self._dbs = dbs
        self._user_id = user_id
        # Sealed, a user with no data key has nothing indexed (it is read as unindexed).
        self._keys = None if keyring is None else keyring.user_keys(txn, dbs, user_id)
        self._current = (search_format(txn, dbs) == format_for(keyring is not None)
                         and (keyring is None or self._keys is not None))
        self._maps: dict[int, tuple[array, array]] = {}

    def indexed_uid(self, mailbox_id: int) -> int:
        """Every message of the mailbox with a UID up to this is indexed, none above
        (0 for an index of another layout: nothing in it is read)."""
        if not self._current:
            return 0
        return indexed_uid(self._txn, self._dbs, self._user_id, mailbox_id)

    def token_id(self, token: bytes) -> int | None:
        """The id of a token of the user's vocabulary (0 for the empty one), or None."""
        if not token:
            return 0
        data = self._txn.get(_terms_key(self._user_id, _VOCAB, _term_name(self._keys, token)),
                             db=self._dbs["searchterms"])
        return None if data is None else _ID.unpack(data)[0]

    def token(self, token_id: int) -> bytes:
        key = _terms_key(self._user_id, _TOKEN, _ID.pack(token_id))
        data = self._txn.get(key, db=self._dbs["searchterms"])
        return b"" if data is None else _opened(self._keys, data, key)

    def vocabulary(self) -> Iterator[tuple[bytes, int]]:
        """``(token, id)`` of every token of the user's vocabulary."""
        if self._keys is not None:  # sealed: the tokens are only in their id records
            prefix = _terms_key(self._user_id, _TOKEN)
            for key, value in shard._scan(self._txn, self._dbs["searchterms"], prefix):
                yield self._keys.unseal(bytes(value), bytes(key)), _ID.unpack(key[len(prefix):])[0]
            return
        prefix = _terms_key(self._user_id, _VOCAB)
        for key, value in shard._scan(self._txn, self._dbs["searchterms"], prefix):
            yield bytes(key[len(prefix):]), _ID.unpack(value)[0]

    def gram_segments(self, gram: bytes) -> dict[int, int]:
        """``{segment: bits}`` of the token ids holding ``gram`` (see :func:`bit_offsets`)."""
        prefix = _GRAM_KEY.pack(self._user_id, _gram_name(self._keys, gram), 0)[:11]
        return _segments(self._txn, self._dbs["searchgrams"], prefix)

    def term_segments(self, name: str, token_id: int) -> dict[int, int]:
        """``{segment: bits}`` of the docnos whose class ``name`` text has the token."""
        prefix = _POSTING_KEY.pack(self._user_id, name.encode("ascii"), token_id, 0)[:-4]
        return _segments(self._txn, self._dbs["searchterms"], prefix)

    def pair_segments(self, name: str, first_id: int, second_id: int) -> dict[int, int]:
        """``{segment: bits}`` of the docnos whose class ``name`` text has the pair."""
        prefix = _PAIR_KEY.pack(self._user_id, pair_kind(name), first_id, second_id, 0)[:-4]
        return _segments(self._txn, self._dbs["searchterms"], prefix)

    def members(self, segment: int, bits: int, mailbox_id: int) -> list[int]:
        """The UIDs, ascending by docno, of the docnos ``segment * SEGMENT_DOCS + n``
        for each bit ``n`` set in ``bits`` that are messages of ``mailbox_id``
        (removed docs and other mailboxes' left out)."""
        if not bits:
            return []
        segment_map = self._maps.get(segment)
        if segment_map is None:
            segment_map = self._maps[segment] = _read_segment_map(self._txn, self._dbs, self._user_id, segment)
        mailboxes, uids = segment_map
        flags = bit_flags(bits)
        found = list(compress(uids, flags))
        owners = list(compress(mailboxes, flags))
        if owners.count(mailbox_id) == len(owners):
            return found
        return [uid for owner, uid in zip(owners, found) if owner == mailbox_id]

    def sort_records(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, object]:
        """``{uid: sort record}`` of those of the mailbox's messages that have one."""
        found = {}
        if not self._current:
            return found
        db = self._dbs["searchterms"]
        for uid in uids:
            docno = self.docno(mailbox_id, uid)
            if docno is None:
                continue
            key = _terms_key(self._user_id, _SORT_RECORD, keys.u64(docno))
            data = self._txn.get(key, db=db)
            if data is not None:
                found[uid] = records.unpack(_opened(self._keys, data, key))
        return found

    def doc(self, docno: int) -> tuple[int, int, bytes] | None:
        """``(mailbox id, uid, text)`` of a doc, or None if it was removed."""
        key = _doc_key(self._user_id, docno)
        data = self._txn.get(key, db=self._dbs["searchdocs"])
        if data is None:
            return None
        mailbox_id, uid, text = records.unpack(data)
        return mailbox_id, uid, _opened(self._keys, text, key)

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

    def next_docno(self) -> int:
        """The docno the user's next doc gets; every doc so far has a lower one."""
        data = self._txn.get(_doc_key(self._user_id, 0), db=self._dbs["searchdocs"])
        return 1 if data is None else keys.read_u64(data)

    def posting_counts(self, classes: Iterable[str]) -> tuple[int, int]:
        """``(docnos named by the user's postings of text classes ``classes`` and
        their pairs, those of them naming no doc)``: the second is what
        :func:`compact_postings` would clear (a scan)."""
        named = stale = 0
        live: dict[int, int] = {}
        prefix = _USER.pack(self._user_id)
        for key, value in _records(self._txn, self._dbs["searchterms"], prefix, _posting_kinds(classes)):
            segment = _ID.unpack(key[-4:])[0]
            if segment not in live:
                live[segment] = _doc_bits(self._txn, self._dbs, self._user_id, segment)
            bits = posting_bits(value)
            named += bits.bit_count()
            stale += (bits & ~live[segment]).bit_count()
        return named, stale

    def size(self) -> dict[str, int]:
        """Stored bytes (keys and values) of this user's index records, per sub-database."""
        prefix = keys.user_prefix(self._user_id)
        return {name: sum(len(key) + len(value) for key, value in
                          shard._scan(self._txn, self._dbs[name], prefix))
                for name in SEARCH_DBS}
