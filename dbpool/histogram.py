"""A fixed-bucket histogram, cheap enough to observe on every statement.

``observe()`` only appends the value to a list (atomic in CPython, no lock taken);
the values are sorted into buckets in batches, under the lock, by the observer that
fills the batch and by every read (``count``, ``sum``, ``snapshot()``), so reads are
exact. The engine's statement path does what ``observe()`` does itself, on ``pending``
and ``fold()``, to save a call per statement."""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_right

# Seconds: from a sub-millisecond hand-off to a long pool_timeout.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Observations kept before one observer sorts them into buckets: bounds the memory of a
# histogram nobody reads, and makes the sorting a rare, batched cost.
BATCH = 256


class Histogram:
    """Counts per upper bound (non-cumulative internally), plus sum and count."""

    __slots__ = ("__weakref__", "_count", "_counts", "_lock", "_sum", "bounds", "pending")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._lock = threading.Lock()
        self.pending: list[float] = []
        self._count = 0
        self._sum = 0.0
        _live.add(self)

    def observe(self, value: float) -> None:
        # The hot path (every statement): list.append is atomic, so no lock here.
        pending = self.pending
        pending.append(value)
        if len(pending) >= BATCH:
            self.fold()

    def fold(self) -> None:
        """Sort the pending observations into their buckets."""
        pending, counts = self.pending, self._counts
        with self._lock:  # one folder at a time; observers only ever append
            # The slice and the delete are each one atomic operation: a value appended
            # between them lies past `taken` and waits for the next fold.
            taken = len(pending)
            if not taken:
                return
            values = pending[:taken]
            del pending[:taken]
            values.sort()
            # Bucket i counts the values in (bounds[i-1], bounds[i]], the last one the rest.
            below = 0
            for i, bound in enumerate(self.bounds):
                upto = bisect_right(values, bound)
                counts[i] += upto - below
                below = upto
            counts[-1] += taken - below
            self._count += taken
            self._sum += sum(values)

    @property
    def count(self) -> int:
        """How many values were observed."""
        self.fold()
        return self._count

    @property
    def sum(self) -> float:
        """The sum of the observed values."""
        self.fold()
        return self._sum

    def snapshot(self, extra_zeros: int = 0) -> tuple[list[tuple[float, int]], int, float]:
        """Cumulative ``(upper_bound, count)`` pairs ending with +Inf, the count and the sum.

        ``extra_zeros`` adds observations of 0 that were counted elsewhere (the pool counts
        checkouts that did not wait without touching the histogram).
        """
        self.fold()
        with self._lock:
            counts = list(self._counts)
            count, total = self._count, self._sum
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
