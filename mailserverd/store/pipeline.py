"""What happens to a write before it reaches its writer: parsing, and keeping call order.

A message is parsed into its IMAP facts (and hashed) by a bounded pool of
worker processes (see parseworker.py), off the reactor and the writer threads
and outside their GIL. Parsing takes different times,
so an :class:`OrderedSubmitter` per writer keeps the promise that writes to
one shard are applied in the order they were called: each write takes a slot
when it is called and slots are handed to the writer strictly in order, each
once its operation is ready.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd.store.errors import StoreTemporaryError
from mailserverd.store.parseworker import ParseWorker

log = Logger()


class ParsePool:
    """A bounded pool of parse workers, each a thread driving a worker process.

    Each thread hands its messages to its own :class:`ParseWorker` (another
    core: no GIL shared) and passes the result on from that thread. At most
    ``queue_max`` jobs may be waiting or running; more are refused at once
    with StoreTemporaryError. Worker processes start on first use, so a store
    opened only for administration never starts one.
    """

    def __init__(self, threads: int, queue_max: int):
        self._threads_wanted = threads
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._queue_max = queue_max
        self._lock = threading.Lock()
        self._pending = 0

    def start(self) -> None:
        for number in range(self._threads_wanted):
            worker = ParseWorker(f"store-parse-{number}")
            thread = threading.Thread(target=self._work, args=(worker,), name=worker.name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Let queued jobs finish, then stop the threads (blocking)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def prepare(self, raw: bytes, then: Callable, otherwise: Callable) -> None:
        """Compute ``(blob_id, facts)`` of ``raw`` in the pool, then call
        ``then(prepared)`` there (in the pool thread: it must be thread-safe,
        as :meth:`OrderedSubmitter.fill` is). If preparing or ``then`` fails,
        ``otherwise(failure)`` is called instead, also in the pool thread.
        Raises StoreTemporaryError at once when the pool is full or stopped.

        Handing the result to the writer from the pool thread, rather than
        through the reactor, saves a thread hop per message.
        """
        with self._lock:
            if self._pending >= self._queue_max or not self._threads:
                raise StoreTemporaryError("mail store is busy, try again later")
            self._pending += 1
        self._jobs.put((raw, then, otherwise))

    def _work(self, worker: ParseWorker) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                worker.stop()
                return
            raw, then, otherwise = job
            try:
                then(worker.parse(raw))
            except BaseException:  # a bug must not strand the caller
                otherwise(Failure())
            finally:
                with self._lock:
                    self._pending -= 1
                # Not kept while waiting for the next job: the message may be
                # megabytes (a large APPEND) and is the writer's now.
                del job, raw, then, otherwise


class _Slot:
    __slots__ = ("deferred", "apply", "error", "done")

    def __init__(self):
        self.deferred: Deferred = Deferred()
        self.apply = None
        self.error = None
        self.done = False


class OrderedSubmitter:
    """Hands writes to one EnvWriter in the order they were called (see module docstring)."""

    def __init__(self, writer, fire: Callable):
        self.writer = writer
        self._fire = fire
        self._slots: collections.deque[_Slot] = collections.deque()
        self._lock = threading.Lock()
        self._idle_waiters: list[Deferred] = []

    def reserve(self) -> _Slot:
        """Take the next place in line. Raises StoreTemporaryError when the writer's
        queue plus the writes waiting here reach its bound."""
        with self._lock:
            if len(self._slots) + self.writer.queued() >= self.writer.queue_max:
                raise StoreTemporaryError("mail store is busy, try again later")
            slot = _Slot()
            self._slots.append(slot)
            return slot

    def fill(self, slot: _Slot, apply: Callable) -> None:
        """The slot's operation is ready; submit it once every earlier slot is."""
        slot.apply = apply
        slot.done = True
        self._flush()

    def cancel(self, slot: _Slot, error) -> None:
        """The slot's write failed before reaching the writer; fail its Deferred in turn."""
        slot.error = error
        slot.done = True
        self._flush()

    def submit(self, apply: Callable) -> Deferred:
        """Reserve and fill at once; the Deferred fires after the commit."""
        try:
            slot = self.reserve()
        except StoreTemporaryError as exc:
            return fail(exc)
        self.fill(slot, apply)
        return slot.deferred

    def idle(self) -> Deferred:
        """A Deferred that fires when no slot is waiting (for a clean stop)."""
        with self._lock:
            if not self._slots:
                return succeed(None)
            waiter: Deferred = Deferred()
            self._idle_waiters.append(waiter)
            return waiter

    def _flush(self) -> None:
        ready = []
        with self._lock:
            while self._slots and self._slots[0].done:
                slot = self._slots.popleft()
                if slot.apply is not None:
                    # enqueue under the lock so that the writer sees the call order;
                    # the writer fires the slot's own Deferred after the commit
                    try:
                        self.writer.enqueue(slot.apply, slot.deferred)
                    except StoreTemporaryError as exc:
                        slot.error = exc
                        ready.append(slot)
                else:
                    ready.append(slot)
            waiters = self._idle_waiters if not self._slots else []
            if waiters:
                self._idle_waiters = []
        if ready or waiters:
            # _flush may run in a parse thread: Deferreds fire on their own thread.
            self._fire(self._tell, ready, waiters)

    @staticmethod
    def _tell(failed: list[_Slot], waiters: list[Deferred]) -> None:
        for slot in failed:
            error = slot.error
            slot.deferred.errback(error if isinstance(error, Failure) else Failure(error))
        for waiter in waiters:
            waiter.callback(None)
