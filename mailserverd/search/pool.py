"""The search pool: where IMAP SEARCH, SORT and THREAD run, off the reactor.

A search reads the index and message records from LMDB and decodes stored
text: blocking work that can take long on a big mailbox, so it runs in a
thread pool of its own, bounded by ``search_threads`` (each session has at
most one command in flight, so the queue is bounded by the sessions). The
reactor keeps serving every other connection meanwhile: the interpreter
switches threads every few milliseconds however long the search.
"""

from __future__ import annotations

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

POOL_NAME = "search"


class SearchPool:
    """Runs search work off the reactor; ``direct_max`` is ``search_verify_direct_max``."""

    def __init__(self, reactor, limits):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=limits.search_threads, name=POOL_NAME)
        self.direct_max = limits.search_verify_direct_max

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        """Wait for the running searches and end the threads (reactor thread, at shutdown)."""
        self._pool.stop()

    def run(self, work, *args):
        """A Deferred firing (on the reactor) with ``work(*args)`` run in a pool thread."""
        return deferToThreadPool(self._reactor, self._pool, work, *args)
