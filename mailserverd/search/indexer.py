"""The indexer: follows each shard's change log into its search index.

Asynchronous, with a persistent position: each shard's index records the
change-log sequence number it reflects (``search_seq``, written in the same
transaction as the index records), so a restart resumes where it stopped and
never indexes a message twice. A search never misses a message that the
indexer has not reached: the index says which UIDs of a mailbox it holds
(store/searchindex.py), and the query engine scans the rest.

Batches are built in one thread of a pool of its own and committed through
the shard's writer like every other write (group commit: nothing is
acknowledged before it is durable, and deliveries are never waited on): a
:class:`~mailserverd.logfollower.LogFollower`. Decoding text is CPU work
that would compete with deliveries for the GIL: the thread hands it to a
few worker processes of its own (the store's :class:`ParseWorker`,
``search_index_workers`` of them, each message of a batch to one), started
with a lower priority (``search_index_nice``), so that on a busy machine the
index lags behind deliveries instead of slowing them; searches scan the
lag.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from twisted.internet.defer import inlineCallbacks

from mailserverd.logfollower import LogFollower, changes_after
from mailserverd.search.index import entry_from_wire, index_entry
from mailserverd.store.parseworker import ParseWorker

_ENTRY_IN_WORKER = "mailserverd.search.index:index_entry_wire"


#: A doc's text, terms, pairs and sort record when its message went before it was indexed.
_GONE = (None, {}, {}, None)


def extract_here(store, shard_number: int, blob_ids: list[bytes], text_max: int,
                 entry=index_entry) -> dict[bytes, tuple]:
    """``{blob_id: entry(raw, facts, text_max)}`` of the messages, extracted in this
    thread (_GONE for a blob gone meanwhile); ``entry`` keeps index_entry's contract."""
    found = {}
    for blob_id in blob_ids:
        content = store.read_content(shard_number, blob_id)
        found[blob_id] = _GONE if content is None else entry(content[0], content[1], text_max)
    return found


def build_batch(store, shard_number: int, after_seq: int, batch_max: int, text_max: int,
                extract=extract_here):
    """The next batch of shard ``shard_number`` after ``after_seq``: ``(upto_seq,
    docs, removals)`` for store.write_search_batch, or None when there is nothing.

    At most ``batch_max`` messages are extracted, all at once by ``extract(store,
    shard_number, blob_ids, text_max)`` (:func:`extract_here`'s contract); a
    message expunged later in the same batch is not (its doc is marked gone).
    Runs on any thread.
    """
    docs: list[list] = []
    removals: list[tuple] = []
    pending: dict[tuple[int, int], dict[int, list]] = {}  # (user, mailbox) -> uid -> doc
    upto = after_seq
    for change in changes_after(store, shard_number, after_seq):
        _add_change(change, docs, removals, pending)
        upto = change.seq
        if len(docs) >= batch_max:
            break
    if upto == after_seq:
        return None
    wanted = list(dict.fromkeys(doc[3] for doc in docs if len(doc) == 4))
    entries = extract(store, shard_number, wanted, text_max) if wanted else {}
    for doc in docs:
        if len(doc) == 4:
            doc[3:] = entries[doc[3]]
    return upto, [tuple(doc) for doc in docs], removals


def _add_change(change, docs, removals, pending) -> None:
    """Add what one change record means for the index to the batch being built
    (an appended message's doc ends with its blob id until extracted)."""
    user_id, mailbox_id, data = change.user_id, change.mailbox_id, change.data
    box = (user_id, mailbox_id)
    if change.kind == "append":
        for uid, blob_id in zip(data["uids"], data["blob_ids"]):
            doc = [user_id, mailbox_id, uid, blob_id]
            docs.append(doc)
            pending.setdefault(box, {})[uid] = doc
    elif change.kind == "expunge":
        waiting = pending.get(box, {})
        for uid in data["uids"]:
            if uid in waiting:
                waiting[uid][3:] = _GONE
        removals.append((user_id, mailbox_id, list(data["uids"])))
    elif change.kind in ("mailbox-delete", "account-delete"):
        for (user, mailbox), waiting in pending.items():
            if user == user_id and (change.kind == "account-delete" or mailbox == mailbox_id):
                for doc in waiting.values():
                    doc[3:] = _GONE
        removals.append((user_id, mailbox_id if change.kind == "mailbox-delete" else None, None))


class Indexer(LogFollower):
    """Keeps every shard's search index in step with its change log.

    :meth:`catch_up` indexes everything logged so far; :meth:`start` runs it
    now and every ``search_index_interval`` seconds until :meth:`stop`.
    Index failures are logged and retried at the next round (the index only
    lags; searches scan what it lacks). ``indexed`` counts the messages this
    process indexed; ``progress(messages)``, if set, is called after each batch.
    """

    interval = "search_index_interval"
    pool_name = "search-index"

    def __init__(self, store, limits, reactor, progress=None):
        super().__init__(store, limits, reactor)
        self.indexed = 0
        self.progress = progress
        self._workers = [ParseWorker(f"search-index-{number}", nice=limits.search_index_nice)
                         for number in range(limits.search_index_workers)]
        self._feeders = ThreadPoolExecutor(len(self._workers), thread_name_prefix="search-index-feed")

    def _extract(self, store, shard_number: int, blob_ids: list[bytes], text_max: int) -> dict:
        """:func:`extract_here` spread over the worker processes, one feeding
        thread each; the first failure is raised here."""
        def extract_share(worker, share):
            def entry(raw, facts, text_max):
                return entry_from_wire(worker.call(_ENTRY_IN_WORKER, raw, facts, text_max))
            return extract_here(store, shard_number, share, text_max, entry)

        count = len(self._workers)
        found: dict[bytes, tuple] = {}
        for entries in self._feeders.map(extract_share, self._workers,
                                         [blob_ids[number::count] for number in range(count)]):
            found.update(entries)
        return found

    def position(self, shard_number: int) -> int:
        return self.store.search_seq(shard_number)

    @inlineCallbacks
    def catch_up(self):
        """Index everything logged so far; an index of an older layout is emptied
        first and rebuilt from the start of the log (searches scan meanwhile)."""
        for number in range(self.store.shards):
            if self.store.search_format(number) != self.store.search_layout():
                yield self.store.reset_search_index(number)
        yield super().catch_up()

    def build_batch(self, shard_number: int, after_seq: int):
        return build_batch(self.store, shard_number, after_seq, self.limits.search_index_batch,
                           self.limits.search_text_max, self._extract)

    def commit(self, shard_number: int, batch):
        return self.store.write_search_batch(shard_number, *batch).addCallback(self._written)

    def _written(self, count: int) -> None:
        self.indexed += count
        if self.progress is not None:
            self.progress(count)

    def stop(self):
        """Stop following (see LogFollower.stop), then end the worker process."""
        def end(_):
            self._feeders.shutdown(wait=False, cancel_futures=True)
            for worker in self._workers:
                worker.stop()

        return super().stop().addCallback(end)
