"""Server faults on a real MariaDB: connections KILLed while idle and while busy, a
wait_timeout shorter than the pool's idle lifetime, and bad statements. The server's view
is limited to the connections each test's engine opened (their ids are collected through
the ``connect`` event), so other tests on the same server are never touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import dbpool
from dbpool import (
    DataError,
    Engine,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    create_engine,
    make_url,
    text,
)
from tests.integration import faults
from tests.integration.targets import with_query
from tests.test_misuse import wait_until

pymysql = pytest.importorskip("pymysql")


@dataclass
class Server:
    """The server's view of the connections of the engines made by the fixture."""

    url: str
    opened: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        parsed = make_url(self.url)
        self.conn = pymysql.connect(
            host=parsed.host,
            port=parsed.port or 3306,
            user=parsed.username,
            password=parsed.password or "",
            database=parsed.database,
            autocommit=True,
        )

    def _query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def ids(self) -> set[int]:
        if not self.opened:
            return set()
        rows = self._query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN %s", (tuple(self.opened),)
        )
        return {int(row[0]) for row in rows}

    def state(self, backend: int) -> str:
        rows = self._query(
            "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s", (backend,)
        )
        if not rows:
            return "gone"
        return "active" if rows[0][0] == "Query" else str(rows[0][0]).lower()

    def kill(self, ids: set[int]) -> None:
        for backend in ids:
            self._query("KILL CONNECTION %s", (backend,))
        assert wait_until(lambda: not (self.ids() & ids)), "the connections were not killed"

    def backend_id(self, conn: dbpool.Connection) -> int:
        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())

    def close(self) -> None:
        self.conn.close()


@dataclass
class Fixture:
    url: str
    server: Server
    engines: list[Engine]

    def engine(self, url: str | None = None, **settings: Any) -> Engine:
        settings.setdefault("pool_timeout", 10)
        engine = create_engine(url or self.url, **settings)
        engine.events.on("connect", lambda conn: self.server.opened.add(conn.thread_id()))
        self.engines.append(engine)
        return engine


@pytest.fixture
def my(mysql_url: str) -> Iterator[Fixture]:
    url = with_query(mysql_url, program_name=f"dbpool-fault-{uuid.uuid4().hex[:12]}")
    fixture = Fixture(url, Server(mysql_url), [])
    yield fixture
    for engine in fixture.engines:
        engine.dispose()
    fixture.server.close()


# -- KILLed connections, server idle timeout -------------------------------------------


@pytest.mark.parametrize("pre_ping", ["default", 0])
def test_killing_every_idle_connection_costs_callers_nothing(my: Fixture, pre_ping: Any) -> None:
    settings = {} if pre_ping == "default" else {"pre_ping": pre_ping}
    engine = my.engine(connection_limit=4, **settings)
    faults.killing_every_idle_connection(engine, my.server, wait_window=pre_ping == "default")


def test_without_pre_ping_one_caller_sees_the_kill_and_the_rest_are_validated(
    my: Fixture,
) -> None:
    engine = my.engine(connection_limit=4, pre_ping=False)
    faults.killing_idle_connections_without_pre_ping(engine, my.server)


def test_killing_a_busy_connection_fails_only_its_caller(my: Fixture) -> None:
    engine = my.engine(connection_limit=3)
    faults.killing_a_busy_connection(engine, my.server, pymysql.OperationalError)


def test_killing_a_connection_mid_query_fails_that_query_at_once(my: Fixture) -> None:
    engine = my.engine(connection_limit=2)
    faults.killing_a_connection_mid_query(engine, my.server, "SELECT SLEEP(60)")


def test_server_wait_timeout_shorter_than_the_pool(my: Fixture) -> None:
    engine = my.engine(
        with_query(my.url, init_command="SET SESSION wait_timeout=1"), connection_limit=3
    )
    faults.server_idle_timeout(engine, my.server)


# -- bad statements ------------------------------------------------------------------------

SETUP = [
    "CREATE TEMPORARY TABLE t (a TINYINT, s VARCHAR(2), u INT UNIQUE)",
    "INSERT INTO t (u) VALUES (1)",
]
BAD_STATEMENTS = {
    "syntax": ("SELEC 1", None, ProgrammingError),
    "no-table": ("SELECT * FROM dbpool_no_such_table", None, ProgrammingError),
    "out-of-range": ("INSERT INTO t (a) VALUES (1000)", None, DataError),
    "not-a-number": ("INSERT INTO t (a) VALUES (%s)", ("abc",), DataError),
    "too-long": ("INSERT INTO t (s) VALUES (%s)", ("toolong",), DataError),
    "too-few": ("SELECT %s, %s", (1,), ProgrammingError),
    "too-many": ("SELECT %s", (1, 2), ProgrammingError),
    "missing-name": ("SELECT %(a)s", {"b": 1}, ProgrammingError),
    "unsendable": ("SELECT %s", ({"x": 1},), ProgrammingError),
    "duplicate": ("INSERT INTO t (u) VALUES (1)", None, IntegrityError),
}


@pytest.mark.parametrize("case", BAD_STATEMENTS)
def test_bad_statements_raise_pep249_errors_and_leave_the_pool_healthy(
    my: Fixture, case: str
) -> None:
    engine = my.engine(connection_limit=1)
    # PyMySQL rejects some parameters itself with KeyError/TypeError: still ProgrammingError.
    driver_error = (pymysql.Error, KeyError, TypeError)
    faults.bad_statement(engine, my.server, SETUP, BAD_STATEMENTS[case], driver_error)


def test_division_by_zero_is_pymysqls_operational_error_and_harmless(my: Fixture) -> None:
    engine = my.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = my.server.backend_id(conn)
        for command in SETUP:
            conn.exec_driver_sql(command)
        # PyMySQL files error 1365 under OperationalError; it is not a disconnect.
        with pytest.raises(OperationalError, match="Division by 0") as info:
            conn.exec_driver_sql("INSERT INTO t (a) VALUES (1 / 0)")
        assert not info.value.connection_invalidated
        conn.rollback()
        assert my.server.backend_id(conn) == backend
    assert engine.status().closed_total == 0
