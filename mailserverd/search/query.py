"""The query engine: a SEARCH program answered from the index and the message records.

Same program tree and same per-message rules as the scan
(:mod:`mailserverd.imap.search`), evaluated as sets of UIDs instead of one
message at a time:

- an AND runs its keys most selective first, each over what the ones before
  left: text keys the vocabulary answers outright, then those it narrows to
  candidates, then keys of the message record, then text keys with no word
  character; an OR evaluates its right side only over what its left side did
  not take, a NOT over its complement;
- a text key whose string is one run of word characters is answered by the
  postings of the tokens that contain it, one of two runs with a space
  between by those of the token pairs that fit (:mod:`mailserverd.search.index`
  says why that is exactly the RFC 9051 §6.4.4 substring match); any other
  text key takes the docs whose tokens fit each run of its string, then
  checks each candidate's stored text with the scan's own evaluator, so no
  answer differs from a scan; over few messages it reads their stored text
  directly;
- the messages the index has not reached yet (UIDs above the mailbox's
  indexed UID) are evaluated by the scan, so nothing is ever missed.

:func:`search_indexed` blocks (LMDB reads, decoding): run it off the reactor.
"""

from __future__ import annotations

import bisect
from itertools import compress

from mailserverd.imap import search
from mailserverd.search.index import CLASSES, CONTAINS, grams_of, needle_runs, stored_text, token_fits
from mailserverd.store.errors import Expunged
from mailserverd.store.searchindex import SEGMENT_DOCS, bit_offsets

_TEXT_KEYS = (search.EnvelopeText, search.HeaderText, search.BodyText, search.AnyText)
# How many results are looked up one by one before all records are read at once.
_RESULT_LOOKUPS_MAX = 1000
# Most token pairs a two-word string reads before its candidates are checked instead.
_PAIRS_MAX = 2000
# Plan order: answered by the vocabulary, narrowed by it, record keys, unnarrowed text.
_ANSWERED, _NARROWED, _RECORD, _UNNARROWED = 0, 1, 2, 3


def key_classes(key: search.Key) -> tuple[str, ...]:
    """The classes of text (index.CLASSES) a text key compares with."""
    if isinstance(key, search.EnvelopeText):
        return (CLASSES[key.field],)
    if isinstance(key, search.BodyText):
        return (CLASSES["body"],)
    if isinstance(key, search.AnyText):
        return (CLASSES["header"], CLASSES["body"])
    return (CLASSES["header"],)  # HEADER: the field's value is inside the header's text


def answered_by_tokens(key: search.Key) -> bool:
    """Whether the postings alone answer ``key``: one run of word characters, or
    two with one space between them (index.py). HEADER also needs the field's
    name, so its candidates are always checked."""
    if isinstance(key, search.HeaderText):
        return False
    runs = needle_runs(key.needle)
    if len(runs) == 1:
        return runs[0][1] == CONTAINS
    return len(runs) == 2 and runs[0][0] + b" " + runs[1][0] == key.needle.encode("utf-8", "surrogatepass")


class _Stored:
    """A message as the text evaluators see it, from its stored text."""

    __slots__ = ("text",)

    def __init__(self, stored: bytes):
        self.text = stored_text(stored)


def _union(into: dict[int, int], segments: dict[int, int]) -> None:
    for segment, bits in segments.items():
        into[segment] = into.get(segment, 0) | bits


def _intersect(left: dict[int, int], right: dict[int, int]) -> dict[int, int]:
    """The ``{segment: bits}`` in both (no segment left with no bit)."""
    return {segment: bits & right[segment] for segment, bits in left.items()
            if segment in right and bits & right[segment]}


class _Plan:
    """One search over one mailbox view inside one read of the index."""

    def __init__(self, reader, scope: search.SearchScope, mailbox_id: int, uids: list[int],
                 direct_max: int):
        self.reader = reader
        self.scope = scope
        self.mailbox_id = mailbox_id
        self.uids = uids
        self.direct_max = direct_max
        self.indexed_max = reader.indexed_uid(mailbox_id)
        self._records: dict | None = None
        self._token_ids: dict[tuple[bytes, str], list[int]] = {}

    def records(self) -> dict:
        if self._records is None:
            self._records = {info.uid: info for info in
                             self.scope.store.list_messages(self.scope.user, self.mailbox_id)}
        return self._records

    def message(self, uid: int, few: bool = False):
        """The scan's view of one message, or None if it has been expunged since;
        ``few``: one of a few, looked up alone unless every record was read."""
        if few and self._records is None:
            try:
                info = self.scope.store.get_message(self.scope.user, self.mailbox_id, uid)
            except Expunged:
                return None
        else:
            info = self.records().get(uid)
            if info is None:
                return None
        return search._Message(bisect.bisect_left(self.uids, uid) + 1, info, self.scope)

    # -- evaluation: each returns the UIDs of ``within`` that the key matches

    def run(self, key: search.Key, within: set[int]) -> set[int]:
        if not within:
            return within
        if isinstance(key, search.And):
            for child in sorted(key.keys, key=self.cost):
                within = self.run(child, within)
                if not within:
                    break
            return within
        if isinstance(key, search.Or):
            left = self.run(key.left, within)
            return left | self.run(key.right, within - left)
        if isinstance(key, search.Not):
            return within - self.run(key.key, within)
        if isinstance(key, search.All):
            return within
        if isinstance(key, _TEXT_KEYS):
            return self.text(key, within)
        return self.scan(key, within)

    def cost(self, key: search.Key) -> int:
        if isinstance(key, _TEXT_KEYS):
            if answered_by_tokens(key):
                return _ANSWERED
            return _NARROWED if needle_runs(key.needle) else _UNNARROWED
        if isinstance(key, search.Not):
            return self.cost(key.key)
        if isinstance(key, search.Or):
            return max(self.cost(key.left), self.cost(key.right))
        if isinstance(key, search.And):
            return min((self.cost(child) for child in key.keys), default=_RECORD)
        return _RECORD

    def scan(self, key: search.Key, within: set[int]) -> set[int]:
        found = set()
        few = len(within) <= _RESULT_LOOKUPS_MAX
        for uid in within:
            message = self.message(uid, few)
            if message is not None and search.matches(key, message):
                found.add(uid)
        return found

    def text(self, key: search.Key, within: set[int]) -> set[int]:
        # The usual case, all indexed, seen without a pass over ``within``.
        if self.uids[-1] <= self.indexed_max or max(within) <= self.indexed_max:
            tail, found, head = set(), set(), within
        else:
            tail = {uid for uid in within if uid > self.indexed_max}
            found = self.scan(key, tail)
            head = within - tail
        runs = needle_runs(key.needle)
        if not runs or len(head) <= self.direct_max:
            return found | self.check(key, head)
        classes = key_classes(key)
        matched = self.answer(classes, runs) if answered_by_tokens(key) else None
        if matched is not None:
            answered = head.intersection(self.uids_of(matched))
            found = answered if not found else found | answered  # no copy of a large answer
            unsure = self.untokenised(classes)
            if unsure:
                found |= self.check(key, head.intersection(self.uids_of(unsure)) - found)
            return found
        candidates: dict[int, int] = {}
        for name in classes:
            _union(candidates, self.fitting(name, runs))
        return found | self.check(key, head.intersection(self.uids_of(candidates)))

    def answer(self, classes: tuple[str, ...], runs: list[tuple[bytes, str]]) -> dict[int, int] | None:
        """``{segment: bits}`` of the docs holding one run (its tokens' postings) or
        two with a space between (their pairs' postings); None when the pairs to
        read would be more than ``_PAIRS_MAX``: then candidates are checked."""
        matched: dict[int, int] = {}
        if len(runs) == 1:
            for name in classes:
                for token_id in self.token_ids(*runs[0]):
                    _union(matched, self.reader.term_segments(name, token_id))
            return matched
        firsts, seconds = self.token_ids(*runs[0]), self.token_ids(*runs[1])
        if len(firsts) * len(seconds) > _PAIRS_MAX:
            return None
        for name in classes:
            for first in firsts:
                for second in seconds:
                    _union(matched, self.reader.pair_segments(name, first, second))
        return matched

    def check(self, key: search.Key, uids: set[int]) -> set[int]:
        """The UIDs of ``uids`` (indexed) whose stored text matches ``key``."""
        found = set()
        for uid in uids:
            docno = self.reader.docno(self.mailbox_id, uid)
            doc = None if docno is None else self.reader.doc(docno)
            if doc is not None and search.matches(key, _Stored(doc[2])):
                found.add(uid)
        return found

    def fitting(self, name: str, runs: list[tuple[bytes, str]]) -> dict[int, int]:
        """``{segment: bits}`` of the docs whose class ``name`` has a fitting token for
        every run, and of those with untokenised text there."""
        result: dict[int, int] | None = None
        for run, mode in sorted(runs, key=lambda item: -len(item[0])):  # longest: likely rarest
            docs: dict[int, int] = {}
            for token_id in self.token_ids(run, mode):
                _union(docs, self.reader.term_segments(name, token_id))
            result = docs if result is None else _intersect(result, docs)
            if not result:
                break
        result = result or {}
        _union(result, self.reader.term_segments(name, 0))
        return result

    def untokenised(self, classes: tuple[str, ...]) -> dict[int, int]:
        unsure: dict[int, int] = {}
        for name in classes:
            _union(unsure, self.reader.term_segments(name, 0))
        return unsure

    def token_ids(self, run: bytes, mode: str) -> list[int]:
        """The ids of the vocabulary's tokens that can hold ``run`` as ``mode`` says."""
        cached = self._token_ids.get((run, mode))
        if cached is not None:
            return cached
        grams = grams_of(run)
        if not grams:  # shorter than a gram: every token is a candidate
            ids = [token_id for token, token_id in self.reader.vocabulary() if token_fits(token, run, mode)]
        else:
            postings = sorted((self.reader.gram_segments(gram) for gram in grams),
                              key=lambda segments: sum(bits.bit_count() for bits in segments.values()))
            common = dict(postings[0])
            for segments in postings[1:]:
                common = _intersect(common, segments)
            ids = [token_id for token_id in _offsets(common) if token_fits(self.reader.token(token_id), run, mode)]
        self._token_ids[(run, mode)] = ids
        return ids

    def uids_of(self, segments: dict[int, int]) -> list[int]:
        """The UIDs of this mailbox's messages among the docs of ``segments``."""
        found: list[int] = []
        for segment in sorted(segments):
            found.extend(self.reader.members(segment, segments[segment], self.mailbox_id))
        return found

    def results(self, uids: set[int], records: bool) -> list[tuple[int, object]]:
        """``(seq, MessageInfo)`` of ``uids`` in order (``(seq, uid)`` when not
        ``records``); with records, ones expunged since are left out."""
        if not records and len(uids) * 16 >= len(self.uids):  # many: one pass over the view, in C
            return list(compress(enumerate(self.uids, 1), map(uids.__contains__, self.uids)))
        ordered = sorted(uids)
        if not records:
            return [(bisect.bisect_left(self.uids, uid) + 1, uid) for uid in ordered]
        if self._records is None and len(ordered) <= _RESULT_LOOKUPS_MAX:
            found = []
            for uid in ordered:
                try:
                    info = self.scope.store.get_message(self.scope.user, self.mailbox_id, uid)
                except Expunged:
                    continue
                found.append((bisect.bisect_left(self.uids, uid) + 1, info))
            return found
        known = self.records()
        return [(bisect.bisect_left(self.uids, uid) + 1, known[uid]) for uid in ordered if uid in known]


def _offsets(segments: dict[int, int]) -> list[int]:
    return [segment * SEGMENT_DOCS + offset for segment in sorted(segments)
            for offset in bit_offsets(segments[segment])]


def search_indexed(key: search.Key, mailbox_id: int, uids: list[int], scope: search.SearchScope,
                   direct_max: int, records: bool = True, with_sort_records: bool = False):
    """The ``(seq, MessageInfo)`` of the view ``uids`` (ascending; seq = position + 1)
    that ``key`` matches, exactly as :func:`mailserverd.imap.search.search_messages`
    answers; with ``records`` false, ``(seq, uid)`` (no record is read for the
    answer, and a message expunged since may be in it, as RFC 2180 §4.1.3 allows).
    With ``with_sort_records``, ``(found, {uid: sort record})``: what the index
    keeps to sort the found by, taken in the same read. Blocking; raises the
    store's errors."""
    def evaluate(reader):
        plan = _Plan(reader, scope, mailbox_id, uids, direct_max)
        found = plan.results(plan.run(key, set(uids)), records)
        if not with_sort_records:
            return found
        return found, reader.sort_records(mailbox_id, [info.uid for _, info in found])

    return scope.store.read_search_index(scope.user, evaluate)



def sort_records(store, user: str, mailbox_id: int, uids: list[int]) -> dict[int, list]:
    """``{uid: imap.sortkeys.sort_record}`` of the messages the index holds
    (the others are left to read their facts). Blocking."""
    return store.read_search_index(user, lambda reader: reader.sort_records(mailbox_id, uids))
