"""Requests per token or account: a token bucket per key, sans I/O.

Each key (a token id, or an account for HTTP Basic) has a bucket of
``burst`` requests that refills at ``per_minute`` a minute; a request takes
one or is refused with the seconds until one is there (``Retry-After``,
RFC 6585 §4). Full buckets are forgotten, so memory follows the keys active
within the last refill time, not every key ever seen.
"""

from __future__ import annotations

import math
from typing import Any


class RequestRate:
    """Token buckets on ``clock`` (``seconds()``: the reactor or a ``Clock``)."""

    def __init__(self, clock: Any, per_minute: int, burst: int):
        self._clock = clock
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._sweep_at = 1024  # bucket count at which full ones are next dropped

    def take(self, key: str) -> float:
        """Count one request for ``key``: 0.0 when allowed, else the seconds
        (at least 1) until the next one would be."""
        now = self._clock.seconds()
        self._forget_full(now)
        level, at = self._buckets.get(key, (self._burst, now))
        level = min(self._burst, level + (now - at) * self._rate)
        if level < 1.0:
            self._buckets[key] = (level, now)
            return float(max(1, math.ceil((1.0 - level) / self._rate)))
        self._buckets[key] = (level - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled, each time their count doubled (amortised O(1))."""
        if len(self._buckets) < self._sweep_at:
            return
        refill = self._burst / self._rate
        self._buckets = {key: value for key, value in self._buckets.items() if now - value[1] < refill}
        self._sweep_at = max(1024, 2 * len(self._buckets))
