"""The outbound queue's storage: its own LMDB environment in ``data_dir/queue/``.

A queued message is stored once (``qmessages`` record, ``qblobs`` content
through the blob codec) with one entry per recipient (``qentries``, keyed by
queue id and recipient index). Entries that wait for an attempt (states
active and deferred) are also in a schedule index keyed by their next
attempt time, so the scheduler reads only what is due and never scans the
backlog. There are two such indexes, two lanes as Postfix's incoming and
deferred queues: ``qschedule`` for entries never tried, ``qretry`` for those
tried before, so that fresh mail is never read after a deferred backlog.
When every entry of a message is final (delivered or bounced) the message,
its content and its entries are deleted in the same transaction.

Writes go through the environment's own :class:`~.writer.EnvWriter` (group
commit with fsync): a Deferred fires only once the write is durable, so an
SMTP 250 for queued mail is never early. Reads are short read transactions on
the caller's thread. Like the mail store, the queue may be opened by the CLI
from its own process (LMDB serialises writers across processes).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Callable, Iterable

from twisted.internet.defer import Deferred, fail, succeed

from mailserverd.store import keys, queuedone, records
from mailserverd.store.blobs import decode_blob, encode_blob, opener
from mailserverd.store.env import StoreEnv, open_env
from mailserverd.store.errors import NotFound, StoreError, StoreTemporaryError
from mailserverd.store.sealing import check_sealing
from mailserverd.store.types import QUEUE_FINAL, QUEUE_SCHEDULED, QueuedMessage, QueueEntry
from mailserverd.store.writer import EnvWriter, WriteTxn

QUEUE_DBS = ("info", "qmessages", "qblobs", "qentries", "qschedule", "qretry", *queuedone.DBS,
             "datakeys")  # encryption at rest: store/sealing.py
#: Whose data key seals the queue's contents (user ids start at 1).
QUEUE_OWNER = 0
#: The schedule lanes (see the module docstring) and their index.
LANES = {"fresh": "qschedule", "retry": "qretry"}
#: ``info`` identity entry of the queue environment (tells it from meta and shards).
QUEUE_KEY = b"queue"
#: ``info`` entry counting the operator's changes (hold, release, flush, ...):
#: the running scheduler watches it to notice what the CLI did.
CONTROL_KEY = b"control"


def _ms(when: float) -> int:
    return max(0, int(when * 1000))


class QueueStore:
    """The outbound queue environment (see module docstring).

    ``fire`` is as for :class:`~.lmdbstore.LMDBStore` (``reactor.callFromThread``
    by default). Attributes: ``writer`` (its :class:`~.writer.EnvWriter`).
    """

    def __init__(self, store_env: StoreEnv, limits, fire: Callable):
        self.path = store_env.path
        self._env = store_env
        self.writer = EnvWriter(store_env, "queue", fire, limits.store_queue_max, limits.store_batch_max)
        self._fire = fire
        self._done_retention_ms = limits.queue_done_retention * 1000
        self._running = False
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, data_dir: str, limits, reactor=None, fire: Callable | None = None,
             keyring=None) -> "QueueStore":
        """Open (creating if missing) ``data_dir/queue``, sealing the contents it
        takes with ``keyring`` (a sealing.Keyring) if given. Raises StoreError
        or SchemaMismatch (MasterKeyError: see sealing.check_sealing)."""
        if fire is None:
            if reactor is None:
                from twisted.internet import reactor
            fire = reactor.callFromThread
        env = open_env(os.path.join(data_dir, "queue"), limits.store_map_size, QUEUE_DBS,
                       {QUEUE_KEY: 1}, "queue")
        try:
            check_sealing(env, keyring, "the queue")
        except BaseException:
            env.close()
            raise
        return cls(env, limits, fire)

    def start(self) -> None:
        """Start the writer thread."""
        if self._running or self._closed:
            raise StoreError("queue store already started or stopped")
        self._running = True
        self.writer.start()

    def stop(self) -> Deferred:
        """Commit what is queued, stop the writer thread, close the environment."""
        if self._closed:
            return succeed(None)
        if not self._running:
            self.close()
            return succeed(None)
        self._running = False
        done: Deferred = Deferred()
        self.writer.stop()

        def join():
            self.writer.join()
            self._fire(self._close, done)

        threading.Thread(target=join, name="queue-store-stop", daemon=True).start()
        return done

    def _close(self, done: Deferred) -> None:
        self.close()
        done.callback(None)

    def close(self) -> None:
        """Close the environment (of a store that is not running)."""
        if not self._closed:
            self._closed = True
            self._env.close()

    def rewrap_data_keys(self, new_master) -> Deferred:
        """Rewrap the queue's data key under ``new_master`` (see
        LMDBStore.rewrap_data_keys); fires with how many (0 or 1)."""
        if self._env.keyring is None:
            return fail(StoreError("the queue is not encrypted at rest: there are no keys to rotate"))
        return self._submit(lambda w: self._env.keyring.rewrap(w.txn, w.dbs, new_master))

    def _submit(self, apply) -> Deferred:
        if not self._running:
            return fail(StoreTemporaryError("queue store is not running"))
        return self.writer.submit(apply)

    # ---------------------------------------------------------------- writes

    def enqueue(self, message: QueuedMessage, entries: list[QueueEntry], raw: bytes) -> Deferred:
        """Store ``message`` (content ``raw``) and its ``entries``, each due at its
        ``next_attempt``. Fires with the queue id once durable; fails with
        StoreTemporaryError (StoreFull when the map or disk is full)."""
        def apply(work: WriteTxn) -> str:
            _put_message(work, message, entries, raw)
            return message.queue_id
        return self._submit(apply)

    def update(self, entries: list[QueueEntry],
               reports: list[tuple[QueuedMessage, list[QueueEntry], bytes]] = ()) -> Deferred:
        """Replace stored entries by ``entries`` (moving them in the schedule index),
        and queue ``reports`` (DSNs: message, entries, content) in the same
        transaction, so that a bounced recipient and its report are durable
        together. A message whose entries are all final is deleted. Entries of
        a message that no longer exists are ignored, and so are the reports
        then. Fires with None."""
        def apply(work: WriteTxn) -> None:
            queue_ids = {entry.queue_id for entry in entries}
            present = [queue_id for queue_id in queue_ids if _message(work.txn, work.dbs, queue_id)]
            for entry in entries:
                _replace_entry(work, entry, keep_held=True)
            now_ms = _ms(time.time())
            for queue_id in queue_ids:
                # Kept a while for the HTTP status endpoint (store/queuedone.py).
                queuedone.record(work, queue_id, _entries(work.txn, work.dbs, queue_id), now_ms,
                                 self._done_retention_ms)
                _delete_if_final(work, queue_id)
            for report in reports if present else ():  # none for a message removed meanwhile
                _put_message(work, *report)
        return self._submit(apply)

    # ---------------------------------------------------------------- the operator's changes

    def hold(self, queue_id: str) -> Deferred:
        """Hold every unfinished entry of ``queue_id`` (not tried until released;
        an attempt in progress still ends). Fires with the number of entries
        changed; fails with NotFound for an unknown message."""
        return self._control(queue_id, lambda entry: entry.state in QUEUE_SCHEDULED,
                             lambda entry: replace(entry, state="held"))

    def release(self, queue_id: str, when: float) -> Deferred:
        """Make the held entries of ``queue_id`` due at ``when``. Fires with the
        number changed; fails with NotFound."""
        return self._control(queue_id, lambda entry: entry.state == "held",
                             lambda entry: replace(entry, state="deferred", next_attempt=when))

    def reschedule(self, queue_id: str | None, when: float) -> Deferred:
        """Make the waiting (active, deferred) entries of ``queue_id``, or of every
        message when it is None (flush), due at ``when``. Fires with the number
        changed; fails with NotFound for an unknown message."""
        return self._control(queue_id, lambda entry: entry.state in QUEUE_SCHEDULED,
                             lambda entry: replace(entry, next_attempt=when))

    def remove(self, queue_id: str) -> Deferred:
        """Delete ``queue_id`` with all its entries, without any report (as
        postsuper -d). Fires with the number of entries it had; fails with NotFound."""
        def apply(work: WriteTxn) -> int:
            entries = _known_entries(work, queue_id)
            for entry in entries:
                _replace_entry(work, replace(entry, state="delivered"))
            _delete_if_final(work, queue_id)
            _count_control(work)
            return len(entries)
        return self._submit(apply)

    def _control(self, queue_id: str | None, wanted: Callable, change: Callable) -> Deferred:
        def apply(work: WriteTxn) -> int:
            if queue_id is None:
                entries = _scheduled_entries(work.txn, work.dbs)
            else:
                entries = _known_entries(work, queue_id)
            changed = [change(entry) for entry in entries if wanted(entry)]
            for entry in changed:
                _replace_entry(work, entry)
            _count_control(work)
            return len(changed)
        return self._submit(apply)

    def control_count(self) -> int:
        """How many operator changes the queue has seen (it grows with each)."""
        with self._env.env.begin() as txn:
            stored = txn.get(CONTROL_KEY, db=self._env.dbs["info"])
            return 0 if stored is None else int.from_bytes(bytes(stored), "big")

    # ---------------------------------------------------------------- reads

    def due(self, now: float, limit: int, skip: Iterable[tuple[str, int]] = (),
            lane: str = "fresh") -> list[QueueEntry]:
        """Up to ``limit`` entries of ``lane`` (``fresh``: never tried, ``retry``)
        due at ``now`` or before, earliest first, leaving out the (queue id,
        index) pairs in ``skip`` (those in progress). Reads the lane's index
        only as far as needed."""
        skipped = skip if isinstance(skip, (set, frozenset)) else set(skip)
        found: list[QueueEntry] = []
        if limit <= 0:
            return found
        with self._env.env.begin() as txn:
            cursor = txn.cursor(db=self._env.dbs[LANES[lane]])
            if not cursor.first():
                return found
            horizon = _ms(now)
            for key in cursor.iternext(values=False):
                when_ms, queue_id, index = keys.split_queue_schedule_key(bytes(key))
                if when_ms > horizon or len(found) >= limit:
                    break
                if (queue_id, index) in skipped:
                    continue
                entry = _entry(txn, self._env.dbs, queue_id, index)
                if entry is not None:
                    found.append(entry)
        return found

    def next_due(self, after: float) -> float | None:
        """The earliest scheduled attempt (either lane) later than ``after`` (unix seconds), or None."""
        found = []
        with self._env.env.begin() as txn:
            for db in LANES.values():
                cursor = txn.cursor(db=self._env.dbs[db])
                if cursor.set_range(keys.u64(_ms(after) + 1)):
                    found.append(keys.split_queue_schedule_key(bytes(cursor.key()))[0] / 1000.0)
        return min(found, default=None)

    def get_message(self, queue_id: str) -> QueuedMessage | None:
        """The queued message ``queue_id``, or None when it is not (or no longer) queued."""
        with self._env.env.begin() as txn:
            return _message(txn, self._env.dbs, queue_id)

    def get_content(self, queue_id: str) -> bytes | None:
        """The stored bytes of ``queue_id``, or None."""
        with self._env.env.begin() as txn:
            key = keys.queue_id_key(queue_id)
            stored = txn.get(key, db=self._env.dbs["qblobs"])
            if stored is None:
                return None
            return decode_blob(stored, key, opener(txn, self._env.dbs, self._env.keyring), QUEUE_OWNER,
                               facts=False)[1]

    def entries(self, queue_id: str) -> list[QueueEntry]:
        """Every entry of ``queue_id``, in recipient order ([] when unknown)."""
        with self._env.env.begin() as txn:
            return _entries(txn, self._env.dbs, queue_id)

    def final_entries(self, queue_id: str) -> list[QueueEntry]:
        """The final entries of ``queue_id`` once it left the queue delivered or
        bounced, for ``queue_done_retention`` seconds ([] otherwise)."""
        with self._env.env.begin() as txn:
            return queuedone.read(txn, self._env.dbs, queue_id)

    def count_by_state(self) -> dict[str, int] | None:
        """How many recipients the queue holds in each state (``{"deferred": 3}``),
        or None once the queue is closed.

        A walk over every entry (a few microseconds each): for a metrics scrape
        in a pool thread, never for the reactor. Safe on any thread, also while
        the queue closes.
        """
        counts: dict[str, int] = {}
        with self._env._close_lock:
            if self._env._closed:
                return None
            with self._env.env.begin() as txn:
                for key, value in txn.cursor(db=self._env.dbs["qentries"]):
                    queue_id, index = keys.split_queue_entry_key(bytes(key))
                    state = records.decode_queue_entry(queue_id, index, bytes(value)).state
                    counts[state] = counts.get(state, 0) + 1
        return counts

    def list_messages(self, limit: int | None = None) -> list[tuple[QueuedMessage, list[QueueEntry]]]:
        """Queued messages (in queue id order) with their entries, up to ``limit``."""
        out: list[tuple[QueuedMessage, list[QueueEntry]]] = []
        with self._env.env.begin() as txn:
            cursor = txn.cursor(db=self._env.dbs["qmessages"])
            for key, value in cursor:
                if limit is not None and len(out) >= limit:
                    break
                queue_id = bytes(key).decode("ascii")
                message = records.decode_queued_message(queue_id, bytes(value))
                out.append((message, _entries(txn, self._env.dbs, queue_id)))
        return out


# ---------------------------------------------------------------- in a write transaction


def _put_message(work: WriteTxn, message: QueuedMessage, entries: list[QueueEntry], raw: bytes) -> None:
    dbs, txn = work.dbs, work.txn
    key = keys.queue_id_key(message.queue_id)
    if not txn.put(key, records.encode_queued_message(message), db=dbs["qmessages"], overwrite=False):
        raise StoreError(f"queue id {message.queue_id} already exists")
    user_keys = None if work.keyring is None else work.keyring.user_keys_for_writing(txn, dbs, QUEUE_OWNER)
    txn.put(key, encode_blob(raw, records.encode_facts({"size": len(raw)}), user_keys, key), db=dbs["qblobs"])
    for entry in entries:
        txn.put(keys.queue_entry_key(entry.queue_id, entry.index), records.encode_queue_entry(entry),
                db=dbs["qentries"])
        if entry.state in QUEUE_SCHEDULED:
            txn.put(_schedule_key(entry), b"", db=_lane_db(dbs, entry))


def _schedule_key(entry: QueueEntry) -> bytes:
    return keys.queue_schedule_key(_ms(entry.next_attempt), entry.queue_id, entry.index)


def _lane_db(dbs, entry: QueueEntry):
    """The schedule index ``entry`` waits in: fresh until its first attempt, then retry."""
    return dbs["qretry"] if entry.attempts else dbs["qschedule"]


def _replace_entry(work: WriteTxn, entry: QueueEntry, keep_held: bool = False) -> None:
    """Store ``entry`` over its old self. With ``keep_held``, an attempt's
    outcome that is not final leaves an entry the operator held meanwhile held."""
    dbs, txn = work.dbs, work.txn
    old = _entry(txn, dbs, entry.queue_id, entry.index)
    if old is None:
        return
    if keep_held and old.state == "held" and entry.state not in QUEUE_FINAL:
        entry = replace(entry, state="held")
    if old.state in QUEUE_SCHEDULED:
        txn.delete(_schedule_key(old), db=_lane_db(dbs, old))
    txn.put(keys.queue_entry_key(entry.queue_id, entry.index), records.encode_queue_entry(entry),
            db=dbs["qentries"])
    if entry.state in QUEUE_SCHEDULED:
        txn.put(_schedule_key(entry), b"", db=_lane_db(dbs, entry))


def _delete_if_final(work: WriteTxn, queue_id: str) -> None:
    dbs, txn = work.dbs, work.txn
    entries = _entries(txn, dbs, queue_id)
    if not entries or not all(entry.state in QUEUE_FINAL for entry in entries):
        return
    for entry in entries:
        txn.delete(keys.queue_entry_key(queue_id, entry.index), db=dbs["qentries"])
    key = keys.queue_id_key(queue_id)
    txn.delete(key, db=dbs["qmessages"])
    txn.delete(key, db=dbs["qblobs"])


def _known_entries(work: WriteTxn, queue_id: str) -> list[QueueEntry]:
    if _message(work.txn, work.dbs, queue_id) is None:
        raise NotFound(f"no queued message {queue_id}")
    return _entries(work.txn, work.dbs, queue_id)


def _count_control(work: WriteTxn) -> None:
    count = work.txn.get(CONTROL_KEY, db=work.dbs["info"])
    count = 0 if count is None else int.from_bytes(bytes(count), "big")
    work.txn.put(CONTROL_KEY, keys.u64(count + 1), db=work.dbs["info"])


# ---------------------------------------------------------------- reads in any transaction


def _message(txn, dbs, queue_id: str) -> QueuedMessage | None:
    data = txn.get(keys.queue_id_key(queue_id), db=dbs["qmessages"])
    return None if data is None else records.decode_queued_message(queue_id, bytes(data))


def _entry(txn, dbs, queue_id: str, index: int) -> QueueEntry | None:
    data = txn.get(keys.queue_entry_key(queue_id, index), db=dbs["qentries"])
    return None if data is None else records.decode_queue_entry(queue_id, index, bytes(data))


def _scheduled_entries(txn, dbs) -> list[QueueEntry]:
    """Every entry in the schedule indexes (for a flush)."""
    found = []
    for db in LANES.values():
        for key in txn.cursor(db=dbs[db]).iternext(values=False):
            _, queue_id, index = keys.split_queue_schedule_key(bytes(key))
            entry = _entry(txn, dbs, queue_id, index)
            if entry is not None:
                found.append(entry)
    return found


def _entries(txn, dbs, queue_id: str) -> list[QueueEntry]:
    prefix = keys.queue_id_key(queue_id)
    cursor = txn.cursor(db=dbs["qentries"])
    found: list[QueueEntry] = []
    if not cursor.set_range(prefix):
        return found
    for key, value in cursor:
        key = bytes(key)
        if not key.startswith(prefix) or len(key) != len(prefix) + 4:
            break
        _, index = keys.split_queue_entry_key(key)
        found.append(records.decode_queue_entry(queue_id, index, bytes(value)))
    return found
