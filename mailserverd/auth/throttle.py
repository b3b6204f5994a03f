"""Brute-force throttling of logins: failures counted per IP and per account.

A key (an IP, or an account) is blocked while it has at least its limit of
failures inside the sliding window ending now. Memory is bounded: each key
keeps at most ``limit`` timestamps, and at most ``max_tracked_keys`` keys are
kept; the key touched longest ago is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from twisted.internet.interfaces import IReactorTime

#: Default cap on tracked IPs plus accounts (about 100 bytes each plus timestamps).
MAX_TRACKED_KEYS = 100_000


class LoginThrottle:
    """Counts failed logins and says when an IP or an account must wait.

    ``clock`` provides ``seconds()`` (the reactor, or a ``Clock`` in tests).
    An IP is blocked after ``failures_per_ip`` failures within ``window``
    seconds, an account after ``failures_per_account``. A success clears
    the account's failures (its owner got in), but not the IP's: a host
    holding one valid login must not reset its count against other accounts.
    """

    def __init__(self, clock: IReactorTime, failures_per_ip: int, failures_per_account: int,
                 window: float, *, max_tracked_keys: int = MAX_TRACKED_KEYS):
        self._clock = clock
        self._limits = {"ip": failures_per_ip, "account": failures_per_account}
        self._window = window
        self._max_tracked_keys = max_tracked_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def is_blocked(self, ip: str, account: str) -> bool:
        """Whether a login for ``account`` from ``ip`` must be refused now. No side effects
        other than dropping expired timestamps."""
        return self._count(("ip", ip)) >= self._limits["ip"] or (
            self._count(("account", account)) >= self._limits["account"]
        )

    def record_failure(self, ip: str, account: str) -> None:
        """Count one failed login against both ``ip`` and ``account``."""
        now = self._clock.seconds()
        for key in (("ip", ip), ("account", account)):
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=self._limits[key[0]])
            else:
                self._failures.move_to_end(key)
            times.append(now)
        self._prune()
        while len(self._failures) > self._max_tracked_keys:
            self._failures.popitem(last=False)

    def record_success(self, ip: str, account: str) -> None:
        """Forget ``account``'s failures; ``ip``'s count is kept (see the class docstring)."""
        self._failures.pop(("account", account), None)

    def tracked_keys(self) -> int:
        """How many IPs and accounts have failures inside the window."""
        self._prune()
        return len(self._failures)

    def _prune(self) -> None:
        """Forget keys whose newest failure left the window.

        Keys are ordered by their newest failure (``move_to_end`` on each), so
        only the front needs looking at: amortised constant time.
        """
        horizon = self._clock.seconds() - self._window
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times and times[-1] > horizon:
                return
            del self._failures[key]

    def _count(self, key: tuple[str, str]) -> int:
        """Failures of ``key`` inside the window; drops older ones (and the key if none remain)."""
        times = self._failures.get(key)
        if times is None:
            return 0
        horizon = self._clock.seconds() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)
