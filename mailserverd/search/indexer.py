"""The indexer: follows each shard's change log into its search index.

Asynchronous, with a persistent position: each shard's index records the
change-log sequence number it reflects (``search_seq``, written in the same
transaction as the index records), so a restart resumes where it stopped and
never indexes a message twice. A search never misses a message that the
indexer has not reached: the index says which UIDs of a mailbox it holds
(store/searchindex.py), and the query engine scans the rest.

Batches are built in one thread of a pool of its own (decoding text is
CPU work that must stay off the reactor) and committed through the shard's
writer like every other write (group commit: nothing is acknowledged before
it is durable, and deliveries are never waited on): a
:class:`~mailserverd.logfollower.LogFollower`.
"""

from __future__ import annotations

from mailserverd.logfollower import LogFollower, changes_after
from mailserverd.search.index import index_entry


def build_batch(store, shard_number: int, after_seq: int, batch_max: int, text_max: int):
    """The next batch of shard ``shard_number`` after ``after_seq``: ``(upto_seq,
    docs, removals)`` for store.write_search_batch, or None when there is nothing.

    At most ``batch_max`` messages are extracted; a message expunged later in
    the same batch is not (its doc is marked gone). Runs on any thread.
    """
    docs: list[list] = []
    removals: list[tuple] = []
    pending: dict[tuple[int, int], dict[int, list]] = {}  # (user, mailbox) -> uid -> doc
    contents: dict[bytes, tuple] = {}
    upto = after_seq
    for change in changes_after(store, shard_number, after_seq):
        _add_change(store, shard_number, change, text_max, docs, removals, pending, contents)
        upto = change.seq
        if len(docs) >= batch_max:
            break
    if upto == after_seq:
        return None
    return upto, [tuple(doc) for doc in docs], removals


def _add_change(store, shard_number, change, text_max, docs, removals, pending, contents) -> None:
    """Add what one change record means for the index to the batch being built."""
    user_id, mailbox_id, data = change.user_id, change.mailbox_id, change.data
    box = (user_id, mailbox_id)
    if change.kind == "append":
        for uid, blob_id in zip(data["uids"], data["blob_ids"]):
            entry = contents.get(blob_id)
            if entry is None:
                content = store.read_content(shard_number, blob_id)
                entry = (None, ()) if content is None else index_entry(content[0], content[1], text_max)
                contents[blob_id] = entry
            doc = [user_id, mailbox_id, uid, entry[0], entry[1]]
            docs.append(doc)
            pending.setdefault(box, {})[uid] = doc
    elif change.kind == "expunge":
        waiting = pending.get(box, {})
        for uid in data["uids"]:
            if uid in waiting:
                waiting[uid][3:] = [None, ()]  # gone before it was indexed
        removals.append((user_id, mailbox_id, list(data["uids"])))
    elif change.kind in ("mailbox-delete", "account-delete"):
        for (user, mailbox), waiting in pending.items():
            if user == user_id and (change.kind == "account-delete" or mailbox == mailbox_id):
                for doc in waiting.values():
                    doc[3:] = [None, ()]
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

    def position(self, shard_number: int) -> int:
        return self.store.search_seq(shard_number)

    def build_batch(self, shard_number: int, after_seq: int):
        return build_batch(self.store, shard_number, after_seq,
                           self.limits.search_index_batch, self.limits.search_text_max)

    def commit(self, shard_number: int, batch):
        return self.store.write_search_batch(shard_number, *batch).addCallback(self._written)

    def _written(self, count: int) -> None:
        self.indexed += count
        if self.progress is not None:
            self.progress(count)
