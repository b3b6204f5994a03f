"""Followers of the shards' change logs: a position per shard, batches off the reactor.

A :class:`LogFollower` (the spam trainer; the search indexer has the same
shape) keeps, per shard, the change-log sequence number it has followed,
stored by its own writes in the same transaction as what it derived, so a
restart resumes where it stopped. Each round builds batches in a one-thread
pool of its own (decoding messages is CPU work) and commits them through the
shard's writer; a failed round is logged and the next one retries.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mailserverd.store.errors import StoreTemporaryError

log = Logger(namespace="mailserverd.store")

#: Change records read from the log at a time.
CHANGES_PER_READ = 1000


def changes_after(store, shard_number: int, after_seq: int):
    """Yield shard ``shard_number``'s change records after ``after_seq``, in
    order, read in pages (a caller may stop at any record). Any thread."""
    while True:
        changes = store.read_changes(shard_number, after_seq, CHANGES_PER_READ)
        if not changes:
            return
        yield from changes
        after_seq = changes[-1].seq


class LogFollower:
    """Follows every shard's change log; subclasses say what a batch is.

    Subclasses define :meth:`position` (the shard's followed seq),
    :meth:`build_batch` (pool thread: the next batch after a position, as
    ``(upto_seq, ...)``, or None) and :meth:`commit` (reactor thread: a
    Deferred that writes it, durable when it fires). ``interval`` is the name
    of the limit giving the seconds between rounds; ``pool_name`` names the
    thread pool.
    """

    interval = ""
    pool_name = ""

    def __init__(self, store, limits, reactor):
        self.store = store
        self.limits = limits
        self.reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name=self.pool_name)
        self._call = None
        self._running = False
        self._round = None

    def position(self, shard_number: int) -> int:
        raise NotImplementedError

    def build_batch(self, shard_number: int, after_seq: int):
        raise NotImplementedError

    def commit(self, shard_number: int, batch):
        raise NotImplementedError

    def lag(self) -> int:
        """Change-log records not followed yet, over all shards."""
        return sum(self.store.last_seq(n) - self.position(n) for n in range(self.store.shards))

    @inlineCallbacks
    def catch_up(self):
        """Follow every change logged before the call. The next batch is built
        while the last one commits (the log, not what is derived, is read)."""
        if self._pool.joined:  # stopped before: a ThreadPool does not start twice
            self._pool = ThreadPool(minthreads=0, maxthreads=1, name=self.pool_name)
        self._pool.start()
        for number in range(self.store.shards):
            target = self.store.last_seq(number)
            position = self.position(number)
            building = self._build(number, position) if position < target else None
            while building is not None:
                batch = yield building
                if batch is None:
                    break
                committed = self.commit(number, batch)
                position = batch[0]
                building = self._build(number, position) if position < target else None
                try:
                    yield committed
                except BaseException:
                    if building is not None:
                        building.addErrback(lambda _: None)  # abandoned with the round
                    raise

    def _build(self, shard_number: int, position: int) -> Deferred:
        return deferToThreadPool(self.reactor, self._pool, self.build_batch, shard_number, position)

    def start(self) -> None:
        """Follow now, then every ``limits.<interval>`` seconds until :meth:`stop`."""
        self._running = True
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self._running:
            self._call = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._round = self.catch_up()
        self._round.addErrback(self._failed)
        self._round.addBoth(lambda _: self._schedule(getattr(self.limits, self.interval)))

    def _failed(self, failure) -> None:
        """Log a failed round (the next one retries): the store's own temporary
        failures (a full disk, a writer backlog) in one line, anything else whole."""
        if failure.check(StoreTemporaryError):
            log.warn("log-follower-retry pool={pool} error={error}", pool=self.pool_name,
                     error=str(failure.value))
        else:
            log.failure("log-follower-error pool={pool}", failure, pool=self.pool_name)

    def stop(self):
        """Stop following; returns a Deferred that fires when the current round ended."""
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        done, self._round = self._round, None
        if done is None or done.called:
            self._pool.stop()
            return succeed(None)
        stopped: Deferred = Deferred()
        done.addBoth(lambda _: (self._pool.stop(), stopped.callback(None)))
        return stopped
