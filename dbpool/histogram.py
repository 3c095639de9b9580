"""A fixed-bucket histogram, cheap enough to observe on the pool's slow path."""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left

# Seconds: from a sub-millisecond hand-off to a long pool_timeout.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per upper bound (non-cumulative internally), plus sum and count."""

    __slots__ = ("__weakref__", "_counts", "_lock", "bounds", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._lock = threading.Lock()
        self.count = 0
        self.sum = 0.0
        _live.add(self)

    def observe(self, value: float) -> None:
        index = bisect_left(self.bounds, value)
        with self._lock:
            self._counts[index] += 1
            self.count += 1
            self.sum += value

    def snapshot(self, extra_zeros: int = 0) -> tuple[list[tuple[float, int]], int, float]:
        """Cumulative ``(upper_bound, count)`` pairs ending with +Inf, the count and the sum.

        ``extra_zeros`` adds observations of 0 that were counted elsewhere (the pool counts
        checkouts that did not wait without touching the histogram).
        """
        with self._lock:
            counts = list(self._counts)
            count, total = self.count, self.sum
        counts[0] += extra_zeros
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return cumulative, count + extra_zeros, total


# A thread of the parent may have held a histogram's lock at fork time.
_live: weakref.WeakSet[Histogram] = weakref.WeakSet()


def _renew_locks_after_fork() -> None:
    for histogram in list(_live):
        histogram._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_after_fork)
