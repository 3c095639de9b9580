"""Stale handles on the real drivers: psycopg, PyMySQL and sqlite3.

A standalone ``QueuePool`` of one connection hands the same driver connection to a
second caller; a second thread then uses what the first caller kept: its cursor, its
proxy, a driver method it took through the proxy, a server-side cursor. Each use must
fail with an error that is the driver's own ``Error`` (and, from the proxy, also
``dbpool.ResourceClosedError``) and leave no trace in the new holder's session: each
case tries to leave a mark there (a session variable, a temporary table) that the
holder then looks for. Results of the engine API outlive their connection without
holding any driver object.
"""

from __future__ import annotations

import gc
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import QueuePool, ResourceClosedError, create_engine, make_url, text
from tests.threads import in_other_thread


@dataclass
class Driver:
    """One real driver: how to connect, and how to leave and look for a session mark."""

    module: Any
    connect: Callable[[], Any]
    mark_sql: str  # leaves a mark in the session it runs in
    marked_sql: str  # a truthy first column when the mark is there
    execute_method: bool  # whether the driver connection has .execute()


@pytest.fixture(params=["psycopg", "pymysql", "sqlite3"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Driver:
    name = request.param
    if name == "psycopg":
        url = request.getfixturevalue("postgres_url")
        import psycopg

        return Driver(
            psycopg,
            lambda: psycopg.connect(url),
            "SELECT set_config('dbpool.stale_mark', 'reached', false)",
            "SELECT coalesce(current_setting('dbpool.stale_mark', true), '') <> ''",
            execute_method=True,
        )
    if name == "pymysql":
        parsed = make_url(request.getfixturevalue("mysql_url"))
        import pymysql

        def connect() -> Any:
            return pymysql.connect(
                host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                password=parsed.password or "", database=parsed.database,
            )  # fmt: skip

        return Driver(
            pymysql, connect, "SET @dbpool_stale_mark = 'reached'",
            "SELECT @dbpool_stale_mark IS NOT NULL", execute_method=False,
        )  # fmt: skip
    path = tmp_path / "stale.db"
    return Driver(
        sqlite3,
        lambda: sqlite3.connect(path, check_same_thread=False),
        "CREATE TEMP TABLE dbpool_stale_mark (x)",
        "SELECT count(*) FROM sqlite_temp_master WHERE name = 'dbpool_stale_mark'",
        execute_method=True,
    )


@pytest.fixture
def pool(driver: Driver) -> Iterator[QueuePool]:
    pool = QueuePool(driver.connect, connection_limit=1, pool_timeout=30)
    yield pool
    pool.dispose()


def marked(driver: Driver, holder: Any) -> bool:
    cursor = holder.cursor()
    try:
        cursor.execute(driver.marked_sql)
        return bool(cursor.fetchone()[0])
    finally:
        cursor.close()


def test_the_mark_is_seen_when_left(driver: Driver, pool: QueuePool) -> None:
    # The check the other tests rely on can fail: a mark left in a session is found there.
    with pool.connect() as conn:
        conn.cursor().execute(driver.mark_sql)
        assert marked(driver, conn)


def test_stale_handles_used_from_another_thread_reach_nothing(
    driver: Driver, pool: QueuePool
) -> None:
    stale = pool.connect()
    raw = stale.driver_connection
    cursor = stale.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    kept_execute = stale.execute if driver.execute_method else None
    stale.close()

    holder = pool.connect()
    assert holder.driver_connection is raw  # the same driver connection, someone else's now
    try:
        error = in_other_thread(lambda: cursor.execute(driver.mark_sql))
        assert isinstance(error, driver.module.Error), repr(error)

        uses: list[Callable[[], Any]] = [
            stale.cursor,
            stale.commit,
            stale.rollback,
            lambda: stale.driver_connection,
        ]
        if kept_execute is not None:
            uses.append(lambda: kept_execute(driver.mark_sql))
        for use in uses:
            error = in_other_thread(use)
            assert isinstance(error, driver.module.Error), repr(error)
            assert isinstance(error, ResourceClosedError), repr(error)

        assert not marked(driver, holder)
        check = holder.cursor()
        check.execute("SELECT 2")
        assert check.fetchone()[0] == 2
    finally:
        holder.close()


def test_a_psycopg_server_side_cursor_is_closed_at_return(postgres_url: str) -> None:
    import psycopg

    pool = QueuePool(lambda: psycopg.connect(postgres_url), connection_limit=1)
    try:
        stale = pool.connect()
        portal = stale.cursor(name="dbpool_stale_portal")
        portal.execute("SELECT generate_series(1, 100000)")
        assert len(portal.fetchmany(10)) == 10
        stale.close()
        with pool.connect() as holder:
            check = holder.cursor()
            check.execute("SELECT count(*) FROM pg_cursors")  # opens a transaction
            assert check.fetchone()[0] == 0
            error = in_other_thread(lambda: portal.fetchmany(10))
            # Refused by the client: a FETCH sent to the server would fail there and
            # abort the holder's transaction.
            assert isinstance(error, psycopg.InterfaceError), repr(error)
            status = holder.driver_connection.info.transaction_status
            assert status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        pool.dispose()


def test_a_pymysql_unbuffered_cursor_is_finished_at_return(mysql_url: str) -> None:
    import pymysql
    import pymysql.cursors

    parsed = make_url(mysql_url)
    pool = QueuePool(
        lambda: pymysql.connect(
            host=parsed.host, port=parsed.port or 3306, user=parsed.username,
            password=parsed.password or "", database=parsed.database,
        ),
        connection_limit=1,
    )  # fmt: skip
    try:
        stale = pool.connect()
        streaming = stale.cursor(pymysql.cursors.SSCursor)
        streaming.execute("SELECT seq FROM seq_1_to_100000")
        assert streaming.fetchone() == (1,)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stale.close()  # the cursor is closed first, draining its rows in step
            with pool.connect() as holder:
                rows: list[Any] = []
                error = in_other_thread(lambda: rows.append(streaming.fetchone()))
                # A finished unbuffered cursor has nothing more to give and reads nothing.
                assert isinstance(error, pymysql.Error) or rows == [None], (error, rows)
                check = holder.cursor()
                check.execute("SELECT 2")
                assert check.fetchone() == (2,)
        # Not left to PyMySQL to discard when the next command (the reset) finds it.
        assert not [w for w in caught if "unbuffered" in str(w.message)]
    finally:
        pool.dispose()


# -- the engine API: results outlive their connection ------------------------------------


def _driver_objects_reachable(root: object, package: str) -> list[object]:
    found, seen, todo = [], set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type) or callable(obj):
            continue
        seen.add(id(obj))
        if type(obj).__module__.partition(".")[0] == package:
            found.append(obj)
        todo.extend(gc.get_referents(obj))
    return found


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_an_engine_result_holds_no_driver_object(
    request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("postgres_url" if backend == "postgresql" else "mysql_url")
    numbers = (
        "SELECT generate_series(1, 20000) AS n"
        if backend == "postgresql"
        else "SELECT seq AS n FROM seq_1_to_20000"
    )
    engine = create_engine(url, connection_limit=1)
    try:
        package = engine.dialect.driver.partition(".")[0]
        with engine.connect() as conn:
            result = conn.execute(text(numbers))
            assert _driver_objects_reachable(conn, package)  # the search finds them
            assert _driver_objects_reachable(result, package) == []
        with engine.connect() as holder:
            assert holder.execute(text("SELECT 7")).scalar() == 7
            assert [row.n for row in result][-1] == 20000
        stale_use = in_other_thread(lambda: conn.execute(text("SELECT 1")))
        assert isinstance(stale_use, ResourceClosedError)
        assert isinstance(stale_use, dbpool.DBPoolError)
    finally:
        engine.dispose()
