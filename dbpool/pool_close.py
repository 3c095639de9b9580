"""Closing connections: discarding one, invalidating one, disposing the pool.

Closing happens outside the pool lock; the slot is freed only after the connection is
closed (so the limit stays exact), and a freed slot goes to the head waiter, who opens a
connection in it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from dbpool import pool_fork
from dbpool.exc import PoolDisposedError

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

logger = logging.getLogger("dbpool")

_monotonic = time.monotonic


def discard(pool: QueuePool, record: _Record) -> None:
    """Close ``record`` and then free its slot (closing first keeps the limit exact)."""
    if close_record(pool, record):
        with pool._lock:
            pool._release_slot_locked()


def close_record(pool: QueuePool, record: _Record) -> bool:
    """Close the connection; False if someone else already did."""
    with pool._lock:
        if record.closed:
            return False
        record.closed = True
        pool._records.discard(record)
    try:
        pool._close(record.dbapi_connection)
    except Exception:  # a close that raises (driver or custom hook) must not cost a slot
        logger.debug("closing a connection failed; it is discarded anyway", exc_info=True)
    with pool._lock:
        pool._closed_total += 1
    logger.debug("closed a connection (%s)", pool.name or "pool")
    if pool.events.close:
        pool.events.fire("close", record.dbapi_connection)
    return True


def reset_failed(pool: QueuePool, record: _Record, exc: BaseException) -> None:
    """The reset of a returned connection raised: its state is unknown, never reuse it.
    Re-raises what is not an ``Exception`` (KeyboardInterrupt) once the slot is freed."""
    logger.warning("resetting a returned connection failed; it is discarded", exc_info=True)
    discard(pool, record)
    if not isinstance(exc, Exception):
        raise exc


def invalidate(pool: QueuePool, record: _Record, error: BaseException | None,
               disconnect: bool) -> None:  # fmt: skip
    """``QueuePool.invalidate()``: close a checked-out connection and free its slot."""
    if record.epoch != pool._epoch:
        pool_fork.set_aside(record)
        return
    if record.owner is not pool:
        raise pool._misplaced(record)
    logger.warning("invalidating a connection%s", f" ({error})" if error else "")
    if pool.events.invalidate:
        pool.events.fire("invalidate", record.dbapi_connection, error)
    if disconnect:
        with pool._lock:
            pool._generation += 1
            pool._suspect_below = pool._generation
    discard(pool, record)


def dispose(pool: QueuePool, timeout: float | None) -> None:
    """``QueuePool.dispose()``: close idle connections now, checked-out ones on return
    (or after ``timeout``, where they are); waiters get `PoolDisposedError`."""
    with pool._lock:
        idle = list(pool._idle)
        pool._idle.clear()
        waiters = list(pool._waiters)
        pool._waiters.clear()
        pool._generation += 1
        pool._retire_below = pool._generation
        janitor, pool._janitor = pool._janitor, None
        pool._started = False
        for waiter in waiters:
            waiter.fail(PoolDisposedError("The pool was disposed while waiting for a connection"))
    if janitor is not None:
        janitor.stop()
    for record in idle:
        discard(pool, record)
    if timeout is not None:
        _close_checked_out(pool, timeout)


def _close_checked_out(pool: QueuePool, timeout: float) -> None:
    deadline = _monotonic() + timeout
    while True:
        with pool._lock:
            left = [r for r in pool._records if r.generation < pool._retire_below]
        if not left or _monotonic() >= deadline:
            break
        time.sleep(0.01)
    for record in left:
        logger.warning("closing a connection still checked out after dispose")
        if pool._abort is not None:
            try:
                pool._abort(record.dbapi_connection)
            except Exception:
                logger.debug("shutting a connection's socket failed", exc_info=True)
        discard(pool, record)
