"""One writer thread per LMDB environment, with group commit.

Callers (on the reactor thread) :meth:`EnvWriter.submit` an *operation*: a
function that takes a :class:`WriteTxn` and returns a result or raises. The
writer thread takes everything waiting (up to ``batch_max`` operations), opens
one write transaction, runs the operations in it (one that raises, e.g.
OverQuota, is left out and the others replayed without it), commits the whole
with fsync, and only then hands every caller its result or error through the
``fire`` callable (``reactor.callFromThread`` in the daemon). That is group
commit: one fsync serves the whole batch, and nothing is acknowledged before
it is durable.

When LMDB itself fails (map full, disk full, I/O error) nothing of the batch
is committed. A failure inside an operation splits the batch so that the
others are retried without it (ordering kept); a failure at commit fails
every operation of the batch with StoreTemporaryError (a map-full commit is
first retried in halves). The writer stays alive for later writes.
"""

from __future__ import annotations

import collections
import errno
import shutil
import threading
import time
from contextlib import contextmanager
from typing import Callable

import lmdb
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from mailserverd.store.errors import StoreFull, StoreTemporaryError

log = Logger()

#: Seconds the writer waits idle before it clears stale reader slots.
READER_CHECK_INTERVAL = 30.0


class WriteTxn:
    """What an operation gets: the current (nested) write transaction and the sub-databases."""

    def __init__(self, env: lmdb.Environment, dbs: dict, txn: lmdb.Transaction, keyring=None):
        self.env = env
        self.dbs = dbs
        self.txn = txn
        #: The store's sealing.Keyring when it encrypts at rest, else None.
        self.keyring = keyring
        #: Values kept in memory for the whole batch (e.g. the change-log
        #: sequence), written once by :meth:`flush` just before the commit.
        self.cached: dict = {}
        self._flushers: list[Callable[["WriteTxn"], None]] = []
        #: The record cache of appends (see shard.cached_account): key ->
        #: [db name, record, encoder, dirty].
        self.records: dict = {}

    def on_flush(self, flusher: Callable[["WriteTxn"], None]) -> None:
        """Have ``flusher(self)`` write its cached state before the batch commits."""
        self._flushers.append(flusher)

    def flush_records(self) -> None:
        """Write the dirty cached records into the transaction and empty the cache."""
        for key, (db_name, record, encode, dirty) in self.records.items():
            if dirty:
                self.txn.put(key, encode(record), db=self.dbs[db_name])
        self.records = {}

    def flush(self) -> None:
        """Write every cached value into the transaction (called by the writer)."""
        self.flush_records()
        for flusher in self._flushers:
            flusher(self)

    @contextmanager
    def nested(self):
        """Run a block in a nested transaction: committed into the current one if
        the block returns, rolled back alone if it raises (the error propagates)."""
        self.flush_records()  # the child may fail: what it caches must be droppable
        outer = self.txn
        child = self.env.begin(write=True, parent=outer)
        self.txn = child
        try:
            yield self
        except BaseException:
            child.abort()
            self.records = {}  # changed inside the child, which is rolled back
            raise
        else:
            child.commit()
        finally:
            self.txn = outer


class _WriteOp:
    __slots__ = ("apply", "deferred")

    def __init__(self, apply, deferred):
        self.apply = apply
        self.deferred = deferred


class _BatchFailure(Exception):
    """LMDB failed; nothing of the batch was committed."""

    def __init__(self, cause: BaseException, op_index: int | None):
        super().__init__(str(cause))
        self.cause = cause
        self.op_index = op_index  # the operation that raised, or None (begin/commit)


#: Free space below which a failed write is blamed on a full disk.
DISK_NEARLY_FULL = 16 * 1024 * 1024


def temporary_error_for(cause: BaseException, path: str | None = None) -> StoreTemporaryError:
    """The StoreTemporaryError a caller sees for an LMDB or OS failure in the env at ``path``.

    LMDB reports a write that ran out of disk as EIO (a short write), so an
    I/O error on a file system with almost no free space is taken as full.
    """
    if isinstance(cause, lmdb.MapFullError):
        return StoreFull("mail store is full (store_map_size reached)")
    if getattr(cause, "errno", None) == errno.ENOSPC or (path is not None and _disk_nearly_full(path)):
        return StoreFull("mail store is full (no space left on device)")
    return StoreTemporaryError(f"I/O error in the mail store: {cause}")


def _disk_nearly_full(path: str) -> bool:
    try:
        return shutil.disk_usage(path).free < DISK_NEARLY_FULL
    except OSError:
        return False


class EnvWriter:
    """The single writer of one environment (see module docstring).

    ``fire(fn, *args)`` must call ``fn(*args)`` on the thread that owns the
    Deferreds (``reactor.callFromThread``; a direct call for tests/scripts
    without a reactor, which then run callbacks on the writer thread).
    Counters: ``commits`` (successful commits), ``ops_committed`` (operations
    that succeeded in a committed transaction), ``ops_failed``.
    ``after_commit``, if set, is called on the writer thread right after each
    successful commit with the batch's outcomes ``[(ok, value), ...]``, before
    any caller is told (tests use it to prove the ordering).
    ``observe_batch``, if set, is called on the writer thread after each
    successful commit with the batch's operation count and the seconds its
    transaction took from begin to durable commit (the metrics).
    """

    def __init__(self, store_env, name: str, fire: Callable, queue_max: int, batch_max: int):
        self.store_env = store_env
        self.name = name
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.commits = 0
        self.ops_committed = 0
        self.ops_failed = 0
        self.after_commit: Callable | None = None
        self.observe_batch: Callable[[int, float], None] | None = None
        self._fire = fire
        self._queue: collections.deque[_WriteOp] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ caller side

    def start(self) -> None:
        """Start the writer thread (once)."""
        self._thread = threading.Thread(target=self._run, name=f"store-writer-{self.name}",
                                        daemon=True)
        self._thread.start()

    def submit(self, apply: Callable[[WriteTxn], object]) -> Deferred:
        """Queue ``apply`` for the next batch; the Deferred fires after its commit.

        Fails at once with StoreTemporaryError when the queue holds ``queue_max``
        operations or the writer is stopping/stopped.
        """
        deferred: Deferred = Deferred()
        try:
            self.enqueue(apply, deferred)
        except StoreTemporaryError as exc:
            return fail(exc)
        return deferred

    def enqueue(self, apply: Callable[[WriteTxn], object], deferred: Deferred) -> None:
        """Queue ``apply``; ``deferred`` is fired after its commit.

        Raises StoreTemporaryError (and leaves ``deferred`` alone) when the
        writer is full, stopping or stopped. Fires nothing synchronously, so
        callers may hold their own locks.
        """
        with self._cond:
            if self._stopping or self._thread is None:
                raise StoreTemporaryError("mail store is not running")
            if len(self._queue) >= self.queue_max:
                raise StoreTemporaryError("mail store is busy, try again later")
            self._queue.append(_WriteOp(apply, deferred))
            self._cond.notify()

    def queued(self) -> int:
        """Operations waiting for the writer."""
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        """Ask the thread to finish what is queued, then exit (see :meth:`join`)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self) -> None:
        """Wait (blocking) for the thread to exit after :meth:`stop`."""
        if self._thread is not None:
            self._thread.join()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        self._reader_check()
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._process(batch)
            except BaseException as exc:  # a bug here must not strand callers
                log.failure("store writer {name} crashed on a batch", name=self.name)
                self._fire(self._fire_batch, batch, [(False, temporary_error_for(exc, self.store_env.path))] * len(batch))
            # Not kept while waiting for the next batch: its operations hold
            # their messages (megabytes for a large APPEND).
            del batch

    def _take(self) -> list[_WriteOp] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                if not self._cond.wait(timeout=READER_CHECK_INTERVAL) and not self._queue:
                    self._reader_check()
            count = min(len(self._queue), self.batch_max)
            return [self._queue.popleft() for _ in range(count)]

    def _reader_check(self) -> None:
        """Clear reader slots left by dead processes (LMDB does not on its own)."""
        try:
            self.store_env.env.reader_check()
        except lmdb.Error:
            log.failure("reader_check failed on {name}", name=self.name)

    def _process(self, batch: list[_WriteOp]) -> None:
        """Commit the batch (splitting it on an LMDB failure) and tell its callers."""
        started = time.perf_counter()
        try:
            outcomes = self._apply_and_commit(batch)
        except _BatchFailure as failure:
            if len(batch) > 1 and failure.op_index is not None:
                # One operation hit LMDB's limits: retry the others without it, in order.
                index = failure.op_index
                for part in (batch[:index], batch[index:index + 1], batch[index + 1:]):
                    if part:
                        self._process(part)
                return
            if len(batch) > 1 and isinstance(failure.cause, lmdb.MapFullError):
                half = len(batch) // 2
                self._process(batch[:half])
                self._process(batch[half:])
                return
            log.warn("store {name}: batch of {count} failed: {cause}",
                     name=self.name, count=len(batch), cause=failure.cause)
            self.ops_failed += len(batch)
            error = temporary_error_for(failure.cause, self.store_env.path)
            self._fire(self._fire_batch, batch, [(False, error)] * len(batch))
            return
        elapsed = time.perf_counter() - started
        self.commits += 1
        for ok, _ in outcomes:
            if ok:
                self.ops_committed += 1
            else:
                self.ops_failed += 1
        if self.after_commit is not None:
            try:
                self.after_commit(outcomes)
            except Exception:
                log.failure("after_commit hook of {name} failed", name=self.name)
        self._fire(self._fire_batch, batch, outcomes)
        if self.observe_batch is not None:
            try:
                self.observe_batch(len(batch), elapsed)
            except Exception:
                log.failure("observe_batch hook of {name} failed", name=self.name)

    def _apply_and_commit(self, batch: list[_WriteOp]) -> list[tuple[bool, object]]:
        """Apply the batch in one transaction and commit it once. Raises _BatchFailure.

        Operations run directly in the batch's transaction (no nested
        transaction per operation: under the GIL each extra LMDB call costs a
        thread switch, and nesting doubled them). When an operation raises its
        own error (OverQuota, NotFound, a bug), the transaction is aborted and
        the batch replayed without it: operations are functions of the
        database state, so the replay gives the others the same results, and
        the failed one leaves nothing behind. Failures are rare, so the replay
        costs nothing in the common case.
        """
        failed: dict[int, Exception] = {}
        while True:
            outcome = self._attempt(batch, failed)
            if outcome is not None:
                return outcome

    def _attempt(self, batch: list[_WriteOp], failed: dict[int, Exception]):
        """One pass over the batch skipping ``failed``; None if an op failed anew (recorded)."""
        env = self.store_env.env
        try:
            txn = env.begin(write=True)
        except lmdb.Error as exc:
            raise _BatchFailure(exc, None) from None
        work = WriteTxn(env, self.store_env.dbs, txn, self.store_env.keyring)
        outcomes: list[tuple[bool, object]] = []
        try:
            for index, op in enumerate(batch):
                if index in failed:
                    outcomes.append((False, failed[index]))
                    continue
                if not getattr(op.apply, "uses_record_cache", False):
                    work.flush_records()  # other operations read records from the transaction
                try:
                    outcomes.append((True, op.apply(work)))
                except lmdb.Error as exc:
                    raise _BatchFailure(exc, index) from None
                except Exception as exc:  # the op's own error: replay the batch without it
                    failed[index] = exc
                    txn.abort()
                    return None
            work.flush()
            txn.commit()
        except _BatchFailure:
            txn.abort()
            raise
        except (lmdb.Error, OSError) as exc:
            txn.abort()
            raise _BatchFailure(exc, None) from None
        except BaseException:
            txn.abort()
            raise
        return outcomes

    @staticmethod
    def _fire_batch(batch: list[_WriteOp], outcomes: list[tuple[bool, object]]) -> None:
        """Runs on the Deferreds' thread: tell every caller of the batch."""
        for op, (ok, value) in zip(batch, outcomes):
            if ok:
                op.deferred.callback(value)
            else:
                op.deferred.errback(value)
