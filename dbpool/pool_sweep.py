"""The janitor's sweep and leak tracking.

Each time the janitor wakes (janitor.py) it takes the idle connections past their idle
or total lifetime out of the pool, reports checkouts held longer than
``leak_detection_threshold`` (once each, with the stack where they were checked out),
and learns when to look next. With leak detection on, a checkout records its stack here.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

logger = logging.getLogger("dbpool")


def sweep_locked(pool: QueuePool, now: float) -> tuple[list[_Record], float]:
    """``QueuePool.sweep_locked()``: the expired idle records, and when to look again."""
    expired: list[_Record] = []
    keep: deque[_Record] = deque()
    due = math.inf
    max_idle = pool._max_idle
    for record in pool._idle:
        deadline = record.expires_at
        if max_idle:
            deadline = min(deadline, record.last_used + max_idle)
        if deadline <= now:
            expired.append(record)
        else:
            keep.append(record)
            due = min(due, deadline)
    if expired:
        pool._idle = keep
    if pool._leak_threshold:
        due = min(due, _report_leaks_locked(pool, now))
    return expired, due


def track_checkout(pool: QueuePool, record: _Record) -> None:
    """Remember when and where ``record`` was checked out (leak detection is on)."""
    record.checked_out_at = time.monotonic()
    record.leak_reported = False
    record.stack = "".join(traceback.format_stack(limit=16)[:-2])
    with pool._lock:
        janitor = pool._janitor
        if janitor is not None and record.checked_out_at + pool._leak_threshold < janitor.due:
            janitor.wake_locked()


def _report_leaks_locked(pool: QueuePool, now: float) -> float:
    due = math.inf
    idle = set(pool._idle)
    for record in pool._records:
        if record in idle or record.leak_reported or record.stack is None:
            continue
        held_until = record.checked_out_at + pool._leak_threshold
        if held_until <= now:
            record.leak_reported = True
            logger.warning(
                "a connection has been checked out for more than %g s "
                "(leak_detection_threshold); it was checked out at:\n%s",
                pool._leak_threshold,
                record.stack,
            )
        else:
            due = min(due, held_until)
    return due
