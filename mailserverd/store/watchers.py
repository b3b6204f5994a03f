"""Callbacks run when a user's mail changed: the store's push to idling sessions.

The store calls :meth:`ChangeWatchers.notify` once a write that touched a
user's mailboxes is durably committed, on the thread its Deferred fires on
(the reactor thread in the daemon). Only writes made through this process's
store are seen; changes other processes make (the CLI) are found by whoever
watches through the change log, as before.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger(namespace="mailserverd.store")


class ChangeWatchers:
    """Watch callbacks by user id; each called with no arguments after a commit."""

    def __init__(self) -> None:
        self._by_user: dict[int, set[Callable[[], None]]] = {}

    def watch(self, user_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each committed change of ``user_id``'s mail,
        until the returned function is called (it may be called twice)."""
        self._by_user.setdefault(user_id, set()).add(callback)

        def unwatch() -> None:
            callbacks = self._by_user.get(user_id)
            if callbacks is not None:
                callbacks.discard(callback)
                if not callbacks:
                    del self._by_user[user_id]

        return unwatch

    def notify(self, user_id: int) -> None:
        """Run the callbacks of ``user_id``; one that raises is logged, the rest still run."""
        for callback in list(self._by_user.get(user_id, ())):
            try:
                callback()
            except Exception:  # a watcher's bug must not fail the writer's caller
                log.failure("change-watcher-failed user_id={user_id}", user_id=user_id)

    def notify_after(self, deferred: Deferred, user_id: int) -> Deferred:
        """``deferred``, which on success first notifies ``user_id``'s watchers."""
        def committed(result):
            self.notify(user_id)
            return result

        return deferred.addCallback(committed)
