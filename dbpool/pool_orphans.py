"""Orphans: checked-out connections that were garbage-collected instead of returned.

A proxy's ``__del__`` reports its record here. The pool warns (`ResourceWarning`, naming
where it was checked out), closes the connection (it may be inside a transaction: never
reused) and frees its slot at once, handing it to the head waiter if there is one.
"""

from __future__ import annotations

import _thread
import sys
import warnings
from types import CodeType
from typing import TYPE_CHECKING

from dbpool import pool_close, pool_fork

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record


def orphaned(pool: QueuePool, record: _Record, code: CodeType | None, line: int) -> None:
    """``QueuePool.orphaned()``: warn, then reclaim the slot of a collected checkout.

    This runs inside ``__del__``, possibly while this very thread holds the pool lock
    (the garbage collector can run anywhere), so it never blocks on the lock.
    """
    where = f" (checked out at {code.co_filename}:{line})" if code else ""
    warnings.warn(
        f"A dbpool connection was garbage-collected without being closed{where}; "
        "its slot has been reclaimed. Use 'with engine.connect() as conn:'.",
        ResourceWarning,
        stacklevel=3,
    )
    if record.epoch != pool._epoch:
        pool_fork.set_aside(record)
        return
    if sys.is_finalizing():
        # The process is ending and its sockets close with it. The lock may be held
        # forever by a daemon thread (the janitor) that the shutdown froze: never wait.
        return
    pool._orphans.append(record)
    # A free lock means this thread is not inside the pool's critical section: reclaim
    # now, so a waiter gets the slot at once. Otherwise the janitor or the next
    # slow-path checkout does it.
    if pool._lock.acquire(False):
        janitor = pool._janitor
        if janitor is not None:
            janitor.wake_locked()
        pool._lock.release()
        reclaim(pool)
    else:
        # Collected inside a critical section: a helper reclaims once the lock is free,
        # so a waiter never waits for a slot that nobody would free. A bare thread:
        # threading.Thread.start() waits for the thread and takes threading's own lock,
        # either of which could deadlock here.
        _thread.start_new_thread(reclaim, (pool,))


def reclaim(pool: QueuePool) -> None:
    """Close the orphans reported so far and free their slots (outside the lock)."""
    while pool._orphans:
        try:
            record = pool._orphans.popleft()
        except IndexError:
            return
        pool_close.discard(pool, record)
