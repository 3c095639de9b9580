"""Pools over a null DB-API connection, shared by pool_overhead.py and fairness.py.

With a connection that does nothing, a benchmark measures the pool alone: its
lock, its queue, its bookkeeping on checkout and on return.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from _harness import CLOSE, require_dbpool


class NullCursor:
    def execute(self, *args: object) -> None:
        pass

    def fetchall(self) -> list[tuple[object, ...]]:
        return []

    def close(self) -> None:
        pass


class NullConnection:
    """A DB-API connection that does nothing; never in a transaction."""

    in_transaction = False

    def cursor(self) -> NullCursor:
        return NullCursor()

    def rollback(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullError(Exception):
    pass


# What DBUtils wants as its creator: a DB-API "module" that declares its threadsafety.
NULL_DBAPI = SimpleNamespace(
    connect=NullConnection,
    threadsafety=1,
    OperationalError=NullError,
    InterfaceError=NullError,
    InternalError=NullError,
)


class FifoSketch:
    """The reference: a strict-FIFO pool that hands a returned connection to the head waiter."""

    def __init__(self, creator: Callable[[], Any], limit: int, timeout: float) -> None:
        self._lock = threading.Lock()
        self._idle = deque(creator() for _ in range(limit))
        self._waiters: deque[list[Any]] = deque()  # [lock held until served, connection]
        self._timeout = timeout

    def get(self) -> Any:
        with self._lock:
            if self._idle:  # idle connections exist only while nobody waits
                return self._idle.pop()
            waiter = [threading.Lock(), None]
            waiter[0].acquire()
            self._waiters.append(waiter)
        if waiter[0].acquire(timeout=self._timeout):
            return waiter[1]
        with self._lock:
            if waiter[1] is None:  # still queued: leave the queue
                self._waiters.remove(waiter)
                raise TimeoutError("pool timeout")
        return waiter[1]  # served just as the wait ran out

    def put(self, conn: Any) -> None:
        with self._lock:
            if not self._waiters:
                self._idle.append(conn)
                return
            waiter = self._waiters.popleft()
            waiter[1] = conn
        waiter[0].release()


class MinimalFifo:
    """The floor: the same strict-FIFO hand-off with explicit ``acquire()``/``release()``
    (about twice as fast as ``with`` blocks) and nothing else: no proxy, no reset, no
    lifetimes, no protection against misuse. No real pool can match it; the ratio to it is
    what a pool's guarantees and bookkeeping cost."""

    def __init__(self, creator: Callable[[], Any], limit: int, timeout: float) -> None:
        self._lock = threading.Lock()
        self._idle = deque(creator() for _ in range(limit))
        self._waiters: deque[list[Any]] = deque()  # [lock held until served, connection]
        self._timeout = timeout

    def get(self) -> Any:
        lock = self._lock
        lock.acquire()
        if self._idle:
            conn = self._idle.pop()
            lock.release()
            return conn
        waiter = [threading.Lock(), None]
        waiter[0].acquire()
        self._waiters.append(waiter)
        lock.release()
        if waiter[0].acquire(timeout=self._timeout):
            return waiter[1]
        lock.acquire()
        try:
            if waiter[1] is None:  # still queued: leave the queue
                self._waiters.remove(waiter)
                raise TimeoutError("pool timeout")
        finally:
            lock.release()
        return waiter[1]  # served just as the wait ran out

    def put(self, conn: Any) -> None:
        lock = self._lock
        lock.acquire()
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter[1] = conn
            lock.release()
            waiter[0].release()
            return
        self._idle.append(conn)
        lock.release()


@dataclass
class NullPool:
    """A pool under test: acquire() -> handle, release(handle), close()."""

    acquire: Callable[[], Any]
    release: Callable[[Any], object]
    close: Callable[[], object]
    timeout_error: type[BaseException] | None  # None: the pool cannot time out


def open_sketch(limit: int, timeout: float) -> NullPool:
    sketch = FifoSketch(NullConnection, limit, timeout)
    return NullPool(sketch.get, sketch.put, lambda: None, TimeoutError)


def open_minimal(limit: int, timeout: float) -> NullPool:
    minimal = MinimalFifo(NullConnection, limit, timeout)
    return NullPool(minimal.get, minimal.put, lambda: None, TimeoutError)


def open_dbpool(limit: int, timeout: float) -> NullPool:
    dbpool = require_dbpool()
    pool = dbpool.QueuePool(NullConnection, connection_limit=limit, pool_timeout=timeout)
    return NullPool(pool.connect, CLOSE, pool.dispose, dbpool.PoolTimeoutError)


def open_dbpool_engine(limit: int, timeout: float) -> NullPool:
    dbpool = require_dbpool()
    engine = dbpool.create_engine(
        "sqlite://",
        creator=NullConnection,
        connection_limit=limit,
        pool_timeout=timeout,
        isolation_level="AUTOCOMMIT",
    )
    return NullPool(engine.connect, CLOSE, engine.dispose, dbpool.PoolTimeoutError)


def open_sqlalchemy(limit: int, timeout: float) -> NullPool:
    import sqlalchemy.exc
    import sqlalchemy.pool

    pool = sqlalchemy.pool.QueuePool(
        NullConnection, pool_size=limit, max_overflow=0, timeout=timeout
    )
    return NullPool(pool.connect, CLOSE, pool.dispose, sqlalchemy.exc.TimeoutError)


def open_dbutils(limit: int, timeout: float) -> NullPool:
    from dbutils.pooled_db import PooledDB

    # DBUtils has no checkout timeout: blocking=True waits for as long as it takes.
    pool = PooledDB(creator=NULL_DBAPI, maxconnections=limit, blocking=True)
    return NullPool(pool.connection, CLOSE, pool.close, None)


def open_warm(opener: Callable[[int, float], NullPool], limit: int, timeout: float) -> NullPool:
    """Open a pool and check out all its connections once, so none is created while timed."""
    pool = opener(limit, timeout)
    held = [pool.acquire() for _ in range(limit)]
    for h in held:
        pool.release(h)
    return pool


def installed(names: list[str], limit: int, timeout: float) -> tuple[list[str], list[str]]:
    """The pools among ``names`` that open here, and a note for each one skipped."""
    kept, notes = [], []
    for name in names:
        try:
            NULL_POOLS[name](limit, timeout).close()
        except ImportError as exc:
            notes.append(f"skipped {name}: {exc}")
        else:
            kept.append(name)
    return kept, notes


SKETCH = "FIFO hand-off sketch"
MINIMAL = "minimal FIFO (explicit acquire/release)"
NULL_POOLS: dict[str, Callable[[int, float], NullPool]] = {
    "dbpool QueuePool": open_dbpool,
    "dbpool Engine.connect()": open_dbpool_engine,
    "SQLAlchemy QueuePool": open_sqlalchemy,
    "DBUtils PooledDB": open_dbutils,
    SKETCH: open_sketch,
    MINIMAL: open_minimal,
}
