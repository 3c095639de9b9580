"""The janitor: one background thread per pool that retires idle and old connections.

What it does each time it wakes is the pool's ``sweep_locked`` (pool_sweep.py); this
module is the thread: when to wake, and closing what the sweep took out.

It sleeps until the earliest deadline among the idle connections (no polling) and is
woken early by the pool when a connection arrives that is due sooner. It holds only a
weak reference to its pool, so a forgotten pool is still collected, and it closes
connections outside the pool lock.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING

from dbpool import pool_close, pool_orphans

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

logger = logging.getLogger("dbpool")
_numbers = itertools.count(1)


class Janitor:
    """Retires connections past ``max_idle_connection_lifetime`` / ``max_connection_lifetime``,
    reclaims garbage-collected checkouts and reports leaks."""

    def __init__(self, pool: QueuePool, lock: threading.Lock) -> None:
        self._pool_ref = weakref.ref(pool)
        self._lock = lock
        self._cond = threading.Condition(lock)
        self._stopped = False
        # When the janitor will next look; read by the pool under the lock to decide
        # whether to wake it. -inf while it is busy (it will look again anyway).
        self.due = -math.inf
        name = f"dbpool-janitor-{next(_numbers)}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._finalizer = weakref.finalize(pool, self._pool_collected)

    def start(self) -> None:
        self._thread.start()

    def wake_locked(self) -> None:
        """Wake the janitor; the caller holds the pool lock."""
        self.due = -math.inf
        self._cond.notify()

    def stop(self) -> None:
        """Stop the thread and wait for it (unless called from the janitor itself)."""
        self._finalizer.detach()  # else a pool disposed and restarted often piles them up
        with self._lock:
            self._stopped = True
            self._cond.notify()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout=10)

    def _pool_collected(self) -> None:
        # Runs when the pool is garbage-collected, possibly in the janitor thread while it
        # holds the lock (it may drop the last reference): never block on the lock here.
        self._stopped = True
        if self._lock.acquire(False):
            try:
                self._cond.notify()
            finally:
                self._lock.release()

    def _run(self) -> None:
        with self._lock:
            while not self._stopped:
                pool = self._pool_ref()
                if pool is None:
                    return
                try:
                    expired, due = pool.sweep_locked(time.monotonic())
                    if expired or pool._orphans:
                        self._lock.release()
                        try:
                            self._retire(pool, expired)
                        finally:
                            self._lock.acquire()
                        continue
                except Exception:
                    logger.exception("the janitor hit an error; it carries on")
                    due = time.monotonic() + 1.0
                del pool
                if self._stopped:
                    return
                self.due = due
                self._cond.wait(None if due == math.inf else max(0.0, due - time.monotonic()))
                self.due = -math.inf

    @staticmethod
    def _retire(pool: QueuePool, expired: list[_Record]) -> None:
        if expired:
            logger.debug("the janitor retires %d idle connection(s)", len(expired))
        for record in expired:
            try:
                pool_close.discard(pool, record)
            except Exception:
                logger.exception("the janitor could not close a connection; carrying on")
        pool_orphans.reclaim(pool)
