"""Token buckets per key, sans I/O: the one rate limiter of the server.

Each key (an HTTP token or account, a client IP's network) has a bucket of
``burst`` events that refills at ``per_second`` events a second; an event
takes one or is refused with the seconds until one is there (HTTP's
``Retry-After``, RFC 6585 §4). Full buckets are forgotten, so memory follows
the keys active within the last refill time, and never more than
``keys_max`` keys are kept (the bucket touched longest ago goes first: a
flood of new keys can cost a forgotten key its debt, never the server its
memory).
"""

from __future__ import annotations

import math
from typing import Any

#: Default cap on keys tracked by one set of buckets (about 150 bytes each).
KEYS_MAX = 100_000


class TokenBuckets:
    """Token buckets on ``clock`` (``seconds()``: the reactor or a ``Clock``)."""

    def __init__(self, clock: Any, per_second: float, burst: int, *, keys_max: int = KEYS_MAX):
        self._clock = clock
        self._rate = float(per_second)
        self._burst = float(burst)
        self._keys_max = keys_max
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, at), oldest first
        self._sweep_at = min(1024, keys_max)  # bucket count at which full ones are next dropped

    @classmethod
    def per_minute(cls, clock: Any, per_minute: int, burst: int, **options: Any) -> "TokenBuckets":
        """Buckets refilling at ``per_minute`` events a minute."""
        return cls(clock, per_minute / 60.0, burst, **options)

    def take(self, key: str) -> float:
        """Count one event for ``key``: 0.0 when allowed, else the seconds
        (at least 1) until the next one would be."""
        now = self._clock.seconds()
        self._forget_full(now)
        level, at = self._buckets.pop(key, (self._burst, now))
        level = min(self._burst, level + (now - at) * self._rate)
        if level < 1.0:
            self._buckets[key] = (level, now)
            return float(max(1, math.ceil((1.0 - level) / self._rate)))
        self._buckets[key] = (level - 1.0, now)
        return 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled, each time their count doubled (amortised O(1));
        past ``keys_max``, the least recently touched."""
        if len(self._buckets) < self._sweep_at:
            return
        refill = self._burst / self._rate
        self._buckets = {key: value for key, value in self._buckets.items() if now - value[1] < refill}
        while len(self._buckets) >= self._keys_max:
            del self._buckets[next(iter(self._buckets))]
        self._sweep_at = min(max(1024, 2 * len(self._buckets)), self._keys_max)
