"""Handles kept past the return of their connection cannot reach it any more.

Once a connection is back in the pool it may already be another thread's: a cursor,
a bound method or the proxy itself used afterwards must fail with an error (the
driver's own PEP 249 ``Error`` and ``dbpool.ResourceClosedError`` at once) and send
nothing. The same for an engine ``Connection`` after ``close()``; its ``Result`` holds
no driver object at all. Real drivers: tests/integration/test_stale_handles_real.py.
"""

from __future__ import annotations

import gc
import pickle
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dbpool
from dbpool import QueuePool, ResourceClosedError, create_engine, text
from dbpool.driver_errors import closed_error, closed_error_class, driver_error_class
from tests import fakedb
from tests.fakedb import FakeConnection, FakeDB, MakePool, assert_consistent
from tests.threads import in_other_thread


def assert_stale_error(error: BaseException | None, driver_error: type[BaseException]) -> None:
    assert error is not None, "a stale handle was used without an error"
    assert isinstance(error, driver_error), type(error).__mro__
    assert isinstance(error, ResourceClosedError), type(error).__mro__
    assert isinstance(error, dbpool.DBPoolError)


# -- the standalone pool's proxy ---------------------------------------------------------


def test_a_cursor_kept_past_the_return_is_closed(make_pool: MakePool, db: FakeDB) -> None:
    pool = make_pool(connection_limit=1)
    conn = pool.connect()
    cursor = conn.cursor()
    cursor.execute("INSERT 1")
    driver_conn = conn.driver_connection
    conn.close()
    with pytest.raises(fakedb.Error):
        cursor.execute("INSERT 2")
    assert driver_conn.executed == ["INSERT 1"]
    assert_consistent(pool, db, busy=0)


def test_stale_handles_from_another_thread_never_reach_the_new_holder(
    make_pool: MakePool, db: FakeDB
) -> None:
    pool = make_pool(connection_limit=1)
    stale = pool.connect()
    cursor = stale.cursor()
    cursor.execute("mine")
    stale.close()
    holder = pool.connect()  # the same driver connection, now someone else's
    driver_conn = holder.driver_connection
    assert driver_conn is db.connections[0]
    holder.cursor().execute("theirs")
    before = (list(driver_conn.executed), driver_conn.rollbacks, driver_conn.in_transaction)

    assert isinstance(in_other_thread(lambda: cursor.execute("stale")), fakedb.Error)
    for use in (
        stale.cursor,
        stale.commit,
        stale.rollback,
        lambda: stale.driver_connection,
        lambda: stale.rollbacks,  # any driver attribute, through __getattr__
        stale.close,
        stale.invalidate,
    ):
        assert_stale_error(in_other_thread(use), fakedb.InterfaceError)

    assert (driver_conn.executed, driver_conn.rollbacks, driver_conn.in_transaction) == before
    holder.close()
    assert_consistent(pool, db, busy=0)


def test_the_error_is_made_once_per_driver_and_pickles(make_pool: MakePool) -> None:
    pool = make_pool()
    conn = pool.connect()
    conn.close()
    errors = []
    for use in (conn.cursor, conn.commit):
        with pytest.raises(ResourceClosedError) as caught:
            use()
        errors.append(caught.value)
    assert type(errors[0]) is type(errors[1])
    assert type(errors[0]).__name__ == "ResourceClosedError"
    assert "returned to the pool" in str(errors[0])
    copy = pickle.loads(pickle.dumps(errors[0]))
    assert type(copy) is type(errors[0])
    assert copy.args == errors[0].args


class _Handle:
    """A connection of a creator whose module has no PEP 249 errors."""

    def cursor(self) -> Any:
        return self

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


_Handle.__module__ = "a_module_without_errors"


def test_without_a_driver_error_class_it_is_resource_closed_error_alone() -> None:
    assert driver_error_class(_Handle) is None
    pool = QueuePool(_Handle, connection_limit=1)
    try:
        conn = pool.connect()
        conn.close()
        with pytest.raises(ResourceClosedError) as caught:
            conn.cursor()
        assert type(caught.value) is ResourceClosedError
    finally:
        pool.dispose()


def test_the_driver_error_class_is_found_through_packages_and_subclasses() -> None:
    assert driver_error_class(FakeConnection) is fakedb.InterfaceError
    assert driver_error_class(sqlite3.Connection) is sqlite3.InterfaceError

    # A driver connection subclassed inside dbpool (as the MySQL dialect does): dbpool's
    # own Error is not the driver's, the base class's module has it.
    subclass = type("TrackingConnection", (FakeConnection,), {"__module__": "dbpool.dialects.x"})
    assert driver_error_class(subclass) is fakedb.InterfaceError

    error = closed_error(subclass, "gone")
    assert isinstance(error, fakedb.InterfaceError) and isinstance(error, ResourceClosedError)
    assert closed_error_class(fakedb.InterfaceError) is type(error)


def test_a_cursor_made_by_a_driver_method_is_closed_too_and_bound_methods_expire() -> None:
    # sqlite3's Connection.execute() returns a new cursor that steps lazily: after the
    # return its fetch would run on the connection another thread now holds.
    pool = QueuePool(
        lambda: sqlite3.connect(":memory:", check_same_thread=False), connection_limit=1
    )
    try:
        conn = pool.connect()
        execute = conn.execute
        rows = execute("SELECT 1 UNION ALL SELECT 2")
        assert rows.fetchone() == (1,)
        conn.close()
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            rows.fetchone()
        with pytest.raises(ResourceClosedError) as caught:
            execute("CREATE TABLE reached (x)")
        assert isinstance(caught.value, sqlite3.Error)
        with pool.connect() as holder:
            tables = holder.execute("SELECT name FROM sqlite_master").fetchall()
            assert tables == []
    finally:
        pool.dispose()


def test_invalidate_closes_the_connection_and_its_cursors(make_pool: MakePool, db: FakeDB) -> None:
    pool = make_pool(connection_limit=1)
    conn = pool.connect()
    cursor = conn.cursor()
    driver_conn = conn.driver_connection
    conn.invalidate()
    assert driver_conn.closed and cursor.closed
    with pytest.raises(fakedb.Error):
        cursor.execute("stale")
    with pytest.raises(fakedb.InterfaceError):
        conn.commit()
    assert_consistent(pool, db, busy=0)


class _SlotCursor:
    """A cursor type without weak reference support (as some C drivers' cursors are)."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _SlotConnection(FakeConnection):
    def cursor(self) -> Any:
        return _SlotCursor()


@pytest.mark.parametrize("weakrefable", [True, False], ids=["weakref", "no-weakref"])
def test_a_long_checkout_does_not_keep_the_cursors_it_dropped(
    make_pool: MakePool, db: FakeDB, weakrefable: bool
) -> None:
    if not weakrefable:
        pool = QueuePool(lambda: _SlotConnection(db, 0), connection_limit=1)
    else:
        pool = make_pool(connection_limit=1)
    try:
        conn = pool.connect()
        kept = [conn.cursor() for _ in range(3)]
        for _ in range(1000):
            conn.cursor()  # made and dropped at once
        assert conn._cursors is not None
        assert len(conn._cursors) < 64
        conn.close()
        assert all(cursor.closed for cursor in kept)
    finally:
        pool.dispose()


def test_closing_cursors_that_fail_to_close_still_returns_the_connection(
    make_pool: MakePool, db: FakeDB
) -> None:
    pool = make_pool(connection_limit=1)
    conn = pool.connect()
    cursor = conn.cursor()

    def broken_close() -> None:
        raise fakedb.OperationalError("close failed")

    cursor.close = broken_close  # type: ignore[method-assign]
    conn.close()
    assert_consistent(pool, db, busy=0)
    with pool.connect() as again:
        again.cursor().execute("SELECT 1")


# -- the engine's Connection and Result ----------------------------------------------------


@pytest.fixture
def fake_engine(db: FakeDB) -> Iterator[dbpool.Engine]:
    engine = create_engine(
        "sqlite://", creator=db.connect, connection_limit=1, isolation_level="AUTOCOMMIT"
    )
    yield engine
    engine.dispose()


def test_engine_connection_closed_is_refused_from_another_thread_while_reused(
    fake_engine: dbpool.Engine, db: FakeDB
) -> None:
    stale = fake_engine.connect()
    stale.exec_driver_sql("mine")
    stale.close()
    holder = fake_engine.connect()  # the same driver connection
    driver_conn = holder.driver_connection
    assert driver_conn is db.connections[0]
    before = (list(driver_conn.executed), driver_conn.rollbacks)
    for use in (
        lambda: stale.execute(text("SELECT 1")),
        lambda: stale.exec_driver_sql("stale"),
        lambda: stale.driver_connection,
        stale.begin,
        stale.commit,
        stale.rollback,
        stale.invalidate,
    ):
        error = in_other_thread(use)
        assert isinstance(error, ResourceClosedError), error
    assert (driver_conn.executed, driver_conn.rollbacks) == before
    holder.exec_driver_sql("theirs")
    holder.close()
    assert driver_conn.executed[-1] == "theirs"


def _driver_objects_reachable(root: object) -> list[object]:
    """sqlite3 objects reachable from ``root`` through instances (not through classes,
    functions or modules, which reach everything)."""
    found, seen, todo = [], set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, Callable)):  # type: ignore[arg-type]
            continue
        seen.add(id(obj))
        if isinstance(obj, (sqlite3.Connection, sqlite3.Cursor)):
            found.append(obj)
        todo.extend(gc.get_referents(obj))
    return found


def test_a_result_holds_no_driver_object_and_reads_after_close() -> None:
    # Results are fetched when the statement runs (dbpool/result.py), so a result that
    # outlives its connection has nothing that could touch the returned connection.
    engine = create_engine("sqlite://", connection_limit=1)
    try:
        with engine.connect() as conn:
            result = conn.execute(
                text(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                    "WHERE i < 5000) SELECT i FROM n"
                )
            )
            assert _driver_objects_reachable(conn)  # the search does find them
            assert _driver_objects_reachable(result) == []
        assert result.fetchone() == (1,)
        with engine.connect() as holder:
            holder.execute(text("CREATE TABLE t (x)"))
            assert len(result.fetchall()) == 4999
            assert holder.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        engine.dispose()
