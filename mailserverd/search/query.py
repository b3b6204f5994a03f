"""The query engine: a SEARCH program answered from the index and the message records.

Same program tree and same per-message rules as the scan
(:mod:`mailserverd.imap.search`), evaluated as sets of UIDs instead of one
message at a time:

- an AND runs its keys most selective first, each over what the ones before
  left: text keys with grams first (the index narrows them to candidates),
  then keys of the message record, then text keys the index cannot narrow;
  an OR evaluates its right side only over what its left side did not take,
  a NOT over its complement;
- a text key takes the candidates that hold every 3-byte gram of its
  string (plus the docs too long for grams), then checks each candidate's
  stored text with the scan's own evaluator (RFC 9051 §6.4.4 substring
  match), so no answer differs from a scan; over few messages it reads
  their stored text directly;
- the messages the index has not reached yet (UIDs above the mailbox's
  indexed UID) are evaluated by the scan, so nothing is ever missed.

:func:`search_indexed` blocks (LMDB reads, decoding): run it off the reactor.
"""

from __future__ import annotations

import bisect

from mailserverd.imap import search
from mailserverd.search.index import UNFILTERED, needle_grams, stored_text
from mailserverd.store.errors import Expunged
from mailserverd.store.searchindex import SEGMENT_DOCS, bit_offsets

_TEXT_KEYS = (search.EnvelopeText, search.HeaderText, search.BodyText, search.AnyText)
# How many results are looked up one by one before all records are read at once.
_RESULT_LOOKUPS_MAX = 1000


class _Stored:
    """A message as the text evaluators see it, from its stored text."""

    __slots__ = ("text",)

    def __init__(self, stored: bytes):
        self.text = stored_text(stored)


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

    def records(self) -> dict:
        if self._records is None:
            self._records = {info.uid: info for info in
                             self.scope.store.list_messages(self.scope.user, self.mailbox_id)}
        return self._records

    def message(self, uid: int):
        """The scan's view of one message, or None if it has been expunged since."""
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
        """0 a text key the grams narrow, 1 the message record, 2 a text key they cannot."""
        if isinstance(key, _TEXT_KEYS):
            return 0 if needle_grams(key.needle) else 2
        if isinstance(key, search.Not):
            return self.cost(key.key)
        if isinstance(key, search.Or):
            return max(self.cost(key.left), self.cost(key.right))
        if isinstance(key, search.And):
            return min((self.cost(child) for child in key.keys), default=1)
        return 1

    def scan(self, key: search.Key, within: set[int]) -> set[int]:
        found = set()
        for uid in within:
            message = self.message(uid)
            if message is not None and search.matches(key, message):
                found.add(uid)
        return found

    def text(self, key: search.Key, within: set[int]) -> set[int]:
        tail = {uid for uid in within if uid > self.indexed_max}
        found = self.scan(key, tail) if tail else set()
        head = within - tail if tail else within
        grams = needle_grams(key.needle)
        if not grams or len(head) <= self.direct_max:
            for uid in head:
                docno = self.reader.docno(self.mailbox_id, uid)
                doc = None if docno is None else self.reader.doc(docno)
                if doc is not None and search.matches(key, _Stored(doc[2])):
                    found.add(uid)
            return found
        for docno in self.candidates(grams):
            doc = self.reader.doc(docno)
            if doc is not None and doc[0] == self.mailbox_id and doc[1] in head \
                    and search.matches(key, _Stored(doc[2])):
                found.add(doc[1])
        return found

    def candidates(self, grams: set[bytes]) -> list[int]:
        """Docnos holding every gram (rarest first, per segment), and the unfiltered ones."""
        postings = sorted((self.reader.gram_segments(gram) for gram in grams),
                          key=lambda segments: sum(bits.bit_count() for bits in segments.values()))
        result = dict(postings[0])
        for segments in postings[1:]:
            result = {segment: bits & segments[segment] for segment, bits in result.items()
                      if segment in segments and bits & segments[segment]}
            if not result:
                break
        for segment, bits in self.reader.gram_segments(UNFILTERED).items():
            result[segment] = result.get(segment, 0) | bits
        return [segment * SEGMENT_DOCS + offset for segment in sorted(result)
                for offset in bit_offsets(result[segment])]

    def results(self, uids: set[int]) -> list[tuple[int, object]]:
        """``(seq, MessageInfo)`` of ``uids`` in order; ones expunged since are left out."""
        ordered = sorted(uids)
        if self._records is None and len(ordered) <= _RESULT_LOOKUPS_MAX:
            found = []
            for uid in ordered:
                try:
                    info = self.scope.store.get_message(self.scope.user, self.mailbox_id, uid)
                except Expunged:
                    continue
                found.append((bisect.bisect_left(self.uids, uid) + 1, info))
            return found
        records = self.records()
        return [(bisect.bisect_left(self.uids, uid) + 1, records[uid]) for uid in ordered if uid in records]


def search_indexed(key: search.Key, mailbox_id: int, uids: list[int], scope: search.SearchScope,
                   direct_max: int) -> list[tuple[int, object]]:
    """The ``(seq, MessageInfo)`` of the view ``uids`` (ascending; seq = position + 1)
    that ``key`` matches, exactly as :func:`mailserverd.imap.search.search_messages`
    answers. Blocking; raises the store's errors."""
    def evaluate(reader):
        plan = _Plan(reader, scope, mailbox_id, uids, direct_max)
        return plan.results(plan.run(key, set(uids)))

    return scope.store.read_search_index(scope.user, evaluate)
