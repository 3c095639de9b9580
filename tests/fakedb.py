"""A small fake DB-API 2 driver for testing pool logic without a database.

``FakeDB`` plays the driver module: ``db.connect()`` returns a ``FakeConnection``.
Failures are configured on the instance, and it counts what the pool did::

    db = FakeDB()
    db.fail_connects = 2          # the next two connect() calls raise OperationalError
    pool = QueuePool(db.connect, connection_limit=2, ping=db.ping)
    ...
    assert db.live == pool.status().open

Every counter is updated under one lock, so threads can share a ``FakeDB``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbpool import QueuePool

# The ``make_pool`` fixture (tests/conftest.py): QueuePool settings -> a pool on ``db``.
MakePool = Callable[..., "QueuePool"]


class Error(Exception):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    pass


class InterfaceError(Error):
    pass


class ProgrammingError(DatabaseError):
    pass


class FakeCursor:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.closed = False

    def execute(self, sql: str, params: Any = None) -> None:
        if self.closed:
            raise ProgrammingError("the cursor is closed")
        self.connection._check_open()
        self.connection.in_transaction = True
        self.connection.executed.append(sql)

    def fetchall(self) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    """One fake connection; ``in_transaction`` turns true when a statement runs."""

    def __init__(self, db: FakeDB, number: int) -> None:
        self.db = db
        self.number = number
        self.closed = False
        self.in_transaction = False
        self.rollbacks = 0
        self.executed: list[str] = []

    def _check_open(self) -> None:
        if self.closed:
            raise OperationalError(f"connection {self.number} is closed")

    def cursor(self) -> FakeCursor:
        self._check_open()
        return FakeCursor(self)

    def commit(self) -> None:
        self._check_open()
        self.in_transaction = False

    def rollback(self) -> None:
        self._check_open()
        self.in_transaction = False
        self.rollbacks += 1
        self.db._count("rollbacks")

    def close(self) -> None:
        if self.db.close_error:
            raise OperationalError("close failed")
        self.db._closed(self)

    def __repr__(self) -> str:
        return f"<FakeConnection {self.number}{' closed' if self.closed else ''}>"


class FakeDB:
    """The driver module, its failure switches and its counters."""

    def __init__(self) -> None:
        # Re-entrant: a garbage-collected connection may be closed by the pool from inside
        # any allocation, even one made while this thread holds the lock.
        self._lock = threading.RLock()
        self._numbers = itertools.count(1)
        # Failure switches.
        self.fail_connects = 0  # how many of the next connect() calls raise
        self.connect_delay = 0.0  # seconds each connect() takes
        self.close_error = False  # close() raises (and leaves the connection open)
        self.ping_fails: set[int] = set()  # numbers of the connections whose ping fails
        # Counters.
        self.connects_attempted = 0
        self.opened = 0
        self.closes = 0
        self.rollbacks = 0
        self.pings = 0
        self.double_closes = 0  # must stay 0: the pool closes each connection once
        self.connections: list[FakeConnection] = []  # every one ever opened

    def connect(self) -> FakeConnection:
        with self._lock:
            self.connects_attempted += 1
            failing = self.fail_connects > 0
            if failing:
                self.fail_connects -= 1
        if self.connect_delay:
            time.sleep(self.connect_delay)
        if failing:
            raise OperationalError("could not connect to the fake server")
        with self._lock:
            conn = FakeConnection(self, next(self._numbers))
            self.connections.append(conn)
            self.opened += 1
        return conn

    def ping(self, conn: FakeConnection) -> None:
        self._count("pings")
        conn._check_open()
        if conn.number in self.ping_fails:
            raise OperationalError(f"connection {conn.number} is gone")

    @property
    def live(self) -> int:
        """Connections opened and not closed."""
        with self._lock:
            return self.opened - self.closes

    def open_connections(self) -> list[FakeConnection]:
        with self._lock:
            return [c for c in self.connections if not c.closed]

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _closed(self, conn: FakeConnection) -> None:
        with self._lock:
            if conn.closed:
                self.double_closes += 1
                return
            conn.closed = True
            self.closes += 1


def wait_for(condition: Any, timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(interval)
    return True


def assert_consistent(pool: Any, db: FakeDB, *, busy: int | None = None) -> None:
    """The invariants that must hold whenever no checkout or return is in flight."""
    status = pool.status()
    assert 0 <= status.open <= status.connection_limit, status
    assert status.open == status.busy + status.idle, status
    assert status.busy >= 0, status
    assert status.waiting == 0, status
    assert status.opened_total - status.closed_total == status.open, status
    assert db.live == status.open, (db.live, status)
    assert db.opened == status.opened_total, (db.opened, status)
    assert db.double_closes == 0
    if busy is not None:
        assert status.busy == busy, status
