"""Starting a pool and opening its connections: the slow path of a checkout.

A connection is opened in a slot the caller reserved under the lock (pool.py). Failed
attempts are retried with exponential backoff and jitter until the caller's deadline;
a server that refuses because it is full (`TooManyConnectionsError`) is counted and
warned about once per run of refusals, not once per attempt. Also here: the lazy start
(the janitor, the INFO line), ``QueuePool.open()``, and the `PoolTimeoutError` a waiter
gets when its ``pool_timeout`` runs out.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any

from dbpool.exc import PoolTimeoutError, TooManyConnectionsError
from dbpool.janitor import Janitor

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

logger = logging.getLogger("dbpool")

_monotonic = time.monotonic

# The first reconnect attempt waits this long; each further one twice as long, up to the cap.
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0
# While the server keeps refusing because it is full, its WARNING repeats at most this often.
FULL_WARNING_EVERY = 60.0


def start_locked(pool: QueuePool) -> bool:
    """Start the janitor if the pool is not running; True if it was started now (the
    caller logs that after releasing the lock: log handlers do I/O)."""
    if pool._started:
        return False
    pool._started = True
    if pool._max_idle or pool._max_lifetime or pool._leak_threshold:
        pool._janitor = Janitor(pool, pool._lock)
        pool._janitor.start()
    return True


def log_start(pool: QueuePool) -> None:
    name = f"{pool.name} " if pool.name else ""
    logger.info("Starting a %spool with %d connections", name, pool._limit)


def open_pool(pool: QueuePool) -> None:
    """``QueuePool.open()``: start the pool and open one connection now, without retries."""
    with pool._lock:
        started = start_locked(pool)
        running = bool(pool._idle) or pool._slots - pool._connecting > 0
        full = pool._slots >= pool._limit
        if not (running or full):
            pool._slots += 1
            pool._connecting += 1
    if started:
        log_start(pool)
    if running:
        return
    if full:  # every slot is being opened by other callers: queue for one like anyone
        pool.checkin(pool.checkout())
    else:
        pool.checkin(pool._open(None, retry=False))


def connect(pool: QueuePool, deadline: float | None, retry: bool) -> Any:
    """Make a DB-API connection in a slot the caller holds; give the slot back on failure.

    Retries back off exponentially with jitter until ``deadline``; without a deadline
    (``pool_timeout=0``) or with ``retry=False`` the first failure is raised.
    """
    delay = BACKOFF_FIRST
    while True:
        try:
            return pool._creator()
        except BaseException as exc:
            pool._last_connect_error = str(exc) or type(exc).__name__
            if isinstance(exc, TooManyConnectionsError):
                server_refused(pool, exc)
            remaining = math.inf if deadline is None else deadline - _monotonic()
            pause = delay * random.uniform(0.5, 1.0)
            if not (retry and isinstance(exc, Exception) and deadline is not None
                    and remaining > pause):  # fmt: skip
                with pool._lock:
                    pool._connecting -= 1
                    pool._release_slot_locked()
                raise
            logger.debug("connecting failed, retrying in %.2f s", pause)
            time.sleep(pause)
            delay = min(delay * 2, BACKOFF_CAP)


def expires_at(pool: QueuePool, now: float) -> float:
    """When a connection opened at ``now`` reaches ``max_connection_lifetime``."""
    lifetime = pool._max_lifetime
    # A little negative jitter so connections opened together do not expire together.
    return now + lifetime * (1 - 0.1 * random.random()) if lifetime else math.inf


def opened(pool: QueuePool, record: _Record, now: float) -> None:
    """Count a connection just opened in a slot the caller holds; it is checked out to it."""
    conn = record.dbapi_connection
    with pool._lock:
        record.owner = pool
        pool._records.add(record)
        pool._connecting -= 1
        pool._opened_total += 1
        pool._last_connect_error = None
        refused_since, pool._refused_since = pool._refused_since, None
    if refused_since is not None:
        logger.info("the server at %s accepts connections again after refusing them "
                    "for %.1f s", pool._where, now - refused_since)  # fmt: skip
    logger.debug("opened a connection (%s)", pool.name or "pool")
    if pool.events.connect:
        pool.events.fire("connect", conn)


def server_refused(pool: QueuePool, error: TooManyConnectionsError) -> None:
    """Count a refusal by a full server; warn once per run of them (a spike refuses
    hundreds of attempts a second across threads: the log gets one line, then one a
    minute with the count while the server stays full)."""
    now = _monotonic()
    with pool._lock:
        pool._too_many_connections_total += 1
        pool._refused_unreported += 1
        if pool._refused_since is None:
            pool._refused_since = now
        elif now - pool._refused_warned_at < FULL_WARNING_EVERY:
            return
        pool._refused_warned_at = now
        count, pool._refused_unreported = pool._refused_unreported, 0
    if count == 1:
        logger.warning("%s", error)
    else:
        logger.warning("%s (refused %d times since the last warning)", error, count)


def timed_out(pool: QueuePool, waited: float) -> PoolTimeoutError:
    """The error for a waiter whose ``pool_timeout`` ran out (already out of the queue):
    observed, fired to the ``timeout`` listeners and logged."""
    pool.wait_histogram.observe(waited)
    if pool.events.timeout:
        pool.events.fire("timeout", waited)
    status = pool.status()
    message = (
        "Timed out fetching a new connection from the connection pool. "
        f"(current connection limit: {pool._limit}, pool timeout: {pool._timeout:g} s, "
        f"waited {waited:.2f} s; {status.open} open, {status.busy} busy, "
        f"{status.waiting} waiting)"
    )
    if pool._last_connect_error and status.open < pool._limit:
        message += f" The last attempt to connect failed: {pool._last_connect_error}"
    error = PoolTimeoutError(
        message, connection_limit=pool._limit, pool_timeout=pool._timeout, waited=waited
    )
    logger.warning("%s", error)
    return error
