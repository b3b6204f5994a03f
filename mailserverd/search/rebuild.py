"""Rebuilding one user's search index from its messages, beside the live indexer.

What it is for: an expunged message leaves its postings behind (only its
doc goes, see store/searchindex.py), and a message indexed by an older
:func:`~mailserverd.search.index.index_entry` keeps the entry it got then.
A rebuild gives every message the index holds a fresh entry and then clears
the postings of the messages that are gone.

It never takes the index away from searches, and it shares the shard with
deliveries, with the live indexer (maybe in the daemon's process while this
runs in the CLI's) and with other users:

- R, the user's next docno when the rebuild begins, splits the docs: those
  below R are the ones to replace, every doc written from then on (by the
  rebuild or by the indexer) is above it;
- the messages are replaced a chunk (``search_rebuild_chunk``) per write
  operation of the shard's writer, each message's new doc written and its
  old one removed in the same transaction, so a search always finds it
  under one or the other; the entries are computed before the write, and the
  write re-checks that the index still holds each message (not expunged
  meanwhile, not above the mailbox's indexed UID: those are the indexer's);
- then the postings are compacted, ``search_compact_chunk`` keys per write:
  each docno below R without a doc is cleared. Such a docno names nothing,
  so clearing it never changes an answer.

The live indexer needs no pause: its batches are write operations too, and
each of ours is correct between any two of them.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import inlineCallbacks, succeed

from mailserverd.search.index import CLASSES, index_entry
from mailserverd.store.errors import Expunged, NotFound


class UserRebuild:
    """The rebuild of one user's index, one write at a time (:meth:`step`) or all
    of it (:meth:`run`).

    Made from a read of the store: ``start_docno`` (R), ``total`` (the
    messages to give new entries) and the plan per mailbox. Counters as it
    goes: ``done`` (messages handled, replaced or found gone), ``replaced``,
    ``cleared`` (stale docnos removed from postings). Raises NotFound for an
    unknown user. ``entry`` is :func:`index_entry`'s contract; it runs on the
    calling thread (the CLI's reactor, which has nothing else to do), a
    chunk's worth before each write.
    """

    def __init__(self, store, user: str, limits, entry: Callable = index_entry):
        account = store.get_user(user)
        if account is None:
            raise NotFound("no such user")
        self.store = store
        self.user = user
        self._shard = account.shard
        self._compact_chunk = limits.search_compact_chunk
        self._text_max = limits.search_text_max
        self._entry = entry
        mailbox_ids = [info.mailbox_id for info in store.list_mailboxes(user)]
        self.start_docno, todo = store.read_search_index(user, lambda reader: _plan(reader, mailbox_ids))
        self.total = sum(len(uids) for _, uids in todo)
        size = limits.search_rebuild_chunk
        self._todo = [(mailbox_id, uids[at:at + size]) for mailbox_id, uids in todo
                      for at in range(0, len(uids), size)]
        self.done = self.replaced = self.cleared = 0
        self._compact_from: bytes | None = b""

    @property
    def finished(self) -> bool:
        """Whether the postings are compacted too: nothing is left to do."""
        return not self._todo and self._compact_from is None

    def step(self):
        """Do the next write: a chunk of messages, or else of postings. The
        Deferred fires with whether anything is left to do."""
        if self._todo:
            return self._replace_chunk()
        if self._compact_from is not None:
            return self._compact_step()
        return succeed(False)

    @inlineCallbacks
    def run(self, progress: Callable[[int], None] | None = None):
        """Every step until done; ``progress(messages)`` after each chunk of
        messages. Fires with this object."""
        while not self.finished:
            before = self.done
            yield self.step()
            if progress is not None and self.done != before:
                progress(self.done - before)
        return self

    @inlineCallbacks
    def _replace_chunk(self):
        mailbox_id, chunk = self._todo[0]
        docs = [doc for doc in (self._doc(mailbox_id, uid) for uid in chunk) if doc is not None]
        if docs:
            replaced = yield self.store.replace_search_docs(self.user, mailbox_id, self.start_docno, docs)
            self.replaced += replaced
        self._todo.pop(0)  # only once written: a step that failed may be taken again
        self.done += len(chunk)
        return not self.finished

    def _doc(self, mailbox_id: int, uid: int) -> tuple | None:
        """``(uid, *entry)`` of one message, or None if it is gone (its old
        doc then stays until the indexer follows the expunge)."""
        try:
            info = self.store.get_message(self.user, mailbox_id, uid)
        except Expunged:
            return None
        content = self.store.read_content(self._shard, info.blob_id)
        if content is None:
            return None
        return (uid, *self._entry(content[0], content[1], self._text_max))

    @inlineCallbacks
    def _compact_step(self):
        self._compact_from, cleared = yield self.store.compact_search_postings(
            self.user, list(CLASSES.values()), self.start_docno, self._compact_from, self._compact_chunk)
        self.cleared += cleared
        return not self.finished


def _plan(reader, mailbox_ids: list[int]) -> tuple[int, list[tuple[int, list[int]]]]:
    """``(R, [(mailbox id, UIDs whose docs to replace)])`` from one read of the index."""
    start = reader.next_docno()
    todo = []
    for mailbox_id in mailbox_ids:
        indexed = reader.indexed_uid(mailbox_id)
        uids = [uid for uid, docno in reader.mailbox_docs(mailbox_id) if docno < start and uid <= indexed]
        if uids:
            todo.append((mailbox_id, uids))
    return start, todo
