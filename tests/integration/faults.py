"""Fault scenarios shared by the PostgreSQL, MariaDB and ODBC fault tests.

Each scenario takes an engine and a :class:`Backends`: the server's own view of that
engine's connections through a side connection, able to kill them. :class:`ServerFaults`
runs the scenarios as tests; the test modules supply the database-specific parts (how to
list and kill backends, the driver's error classes) and the database-specific faults.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pytest

import dbpool
from dbpool import DBAPIError, Engine, OperationalError, ProgrammingError, make_url, text
from tests.engines import engine_for
from tests.integration.targets import with_query
from tests.test_misuse import wait_until

LOST = "connection to the database was lost"

# A statement that fails: (sql, params, the PEP 249 class it must raise).
Statement = tuple[str, Any, type[DBAPIError]]


class Backends(Protocol):
    """The server side of one engine's connections."""

    def ids(self) -> set[int]:
        """The ids of this engine's connections that the server still has."""

    def kill(self, ids: set[int]) -> None:
        """Kill these connections from the server side and wait until they are gone."""

    def state(self, backend: int) -> str:
        """What the backend is doing: 'active' while it runs a statement."""

    def backend_id(self, conn: dbpool.Connection) -> int:
        """The server's id of the connection behind ``conn``."""


class PostgresBackends:
    """PostgreSQL's view of one application_name's backends, through a side connection."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = make_url(url)
        self.application_name = application_name
        self.connect()

    def connect(self) -> None:
        """(Re)open the side connection, e.g. after a restart killed it."""
        import psycopg

        self.conn = psycopg.connect(
            host=self.url.host,
            port=self.url.port or 5432,
            user=self.url.username,
            dbname=self.url.database,
            autocommit=True,
            application_name=self.application_name + "-observer",
        )

    def ids(self) -> set[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (self.application_name,),
        ).fetchall()
        return {row[0] for row in rows}

    def state(self, backend: int) -> str:
        row = self.conn.execute(
            "SELECT state FROM pg_stat_activity WHERE pid = %s", (backend,)
        ).fetchone()
        return "gone" if row is None else str(row[0])

    def kill(self, ids: set[int]) -> None:
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (list(ids),)
        )
        assert wait_until(lambda: not (self.ids() & ids)), "the backends did not exit"

    def backend_id(self, conn: dbpool.Connection) -> int:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def close(self) -> None:
        self.conn.close()


@dataclass
class MariaDBBackends:
    """MariaDB's view of the connections the engines it watches open, through a side
    connection (MariaDB has no application name to find them by)."""

    url: str
    opened: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        import pymysql

        parsed = make_url(self.url)
        self.conn = pymysql.connect(
            host=parsed.host,
            port=parsed.port or 3306,
            user=parsed.username,
            password=parsed.password or "",
            database=parsed.database,
            autocommit=True,
        )

    def note(self, dbapi_connection: Any) -> None:
        """The engines' ``connect`` listener: remember the new connection's id."""
        self.opened.add(dbapi_connection.thread_id())

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
class Database:
    """One fault test's database: a URL its connections can be told apart by, the server's
    view of them, and the engines the test made (the ``engines`` fixture disposes of them)."""

    url: str
    server: Backends
    engines: list[Engine]
    on_connect: Callable[[Any], None] | None = None  # tells the server about new connections

    def engine(self, url: str | None = None, **settings: Any) -> Engine:
        settings.setdefault("pool_timeout", 10)
        engine = engine_for(self.engines, url or self.url, **settings)
        if self.on_connect is not None:
            engine.events.on("connect", self.on_connect)
        return engine


def open_connections(engine: Engine, server: Backends, count: int) -> set[int]:
    """Check out ``count`` connections at once, note their backends, return them all."""
    conns = [engine.connect() for _ in range(count)]
    try:
        return {server.backend_id(conn) for conn in conns}
    finally:
        for conn in conns:
            conn.close()


def assert_counts_match_server(engine: Engine, server: Backends) -> None:
    status = engine.status()
    assert status.busy == 0 and status.waiting == 0, status
    assert status.open == len(server.ids()), (status, server.ids())


def killing_every_idle_connection(engine: Engine, server: Backends, *, wait_window: bool) -> None:
    """Every idle connection killed: the next checkouts replace them, no caller sees an
    error, and the pool's count matches the server's."""
    limit = engine.status().connection_limit
    old = open_connections(engine, server, limit)
    assert server.ids() == old
    assert_counts_match_server(engine, server)

    server.kill(old)
    if wait_window:
        time.sleep((engine.config.pre_ping or 0) + 0.1)  # idle past the alive-bypass window
    new = open_connections(engine, server, limit)  # each checkout meets a dead connection
    assert len(new) == limit and not (new & old)
    for _ in range(20):
        with engine.connect() as conn:
            assert server.backend_id(conn) in new
    assert server.ids() == new
    assert_counts_match_server(engine, server)
    status = engine.status()
    assert (status.opened_total, status.closed_total) == (2 * limit, limit)


def killing_idle_connections_without_pre_ping(engine: Engine, server: Backends) -> None:
    """With pre_ping off, the first caller meets the dead connection; that disconnect makes
    every older connection suspect, so the other callers get validated ones."""
    limit = engine.status().connection_limit
    old = open_connections(engine, server, limit)
    server.kill(old)
    errors = 0
    conns = []
    for _ in range(limit):
        conn = engine.connect()
        conns.append(conn)
        try:
            server.backend_id(conn)
        except OperationalError as exc:
            assert exc.connection_invalidated
            assert LOST in str(exc)
            errors += 1
            conn.rollback()
    assert errors == 1
    new = {server.backend_id(conn) for conn in conns}
    assert len(new) == limit and not (new & old)
    for conn in conns:
        conn.close()
    assert server.ids() == new
    assert_counts_match_server(engine, server)


def a_killed_connection_is_detected_and_replaced(
    engine: Engine, backend_id: Callable[[dbpool.Connection], int], kill: Callable[[int], object]
) -> OperationalError:
    """The connection behind a checkout is killed: the next statement raises OperationalError
    saying the connection was lost, and after a rollback the same Connection carries on with
    a new one in the same slot. Returns the error."""
    with engine.connect() as conn:
        backend = backend_id(conn)
        conn.commit()
        kill(backend)
        with pytest.raises(OperationalError, match=LOST) as info:
            conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
        conn.rollback()
        assert backend_id(conn) != backend
    assert engine.status().open == 1
    return info.value


def pre_ping_replaces_a_killed_idle_connection(
    engine: Engine, backend_id: Callable[[dbpool.Connection], int], kill: Callable[[int], object]
) -> None:
    with engine.connect() as conn:
        backend = backend_id(conn)
        conn.commit()
    kill(backend)
    with engine.connect() as conn:
        assert backend_id(conn) != backend
    assert engine.status().opened_total == 2


def killing_a_busy_connection(engine: Engine, server: Backends, driver_error: type) -> None:
    """One checked-out connection killed: exactly its caller gets OperationalError saying
    the connection was lost; the others carry on; the count stays right."""
    first, victim, third = engine.connect(), engine.connect(), engine.connect()
    ids = [server.backend_id(c) for c in (first, victim, third)]
    server.kill({ids[1]})

    with pytest.raises(OperationalError, match=LOST) as info:
        victim.execute(text("SELECT 1"))
    assert info.value.connection_invalidated
    assert isinstance(info.value.orig, driver_error)
    assert server.backend_id(first) == ids[0]
    assert server.backend_id(third) == ids[2]
    status = engine.status()
    assert (status.open, status.busy) == (2, 2)

    victim.rollback()  # acknowledges the lost transaction; the Connection carries on
    replacement = server.backend_id(victim)
    assert replacement not in ids
    for conn in (first, victim, third):
        conn.close()
    assert server.ids() == {ids[0], ids[2], replacement}
    assert_counts_match_server(engine, server)
    assert engine.status().closed_total == 1


def killing_a_connection_mid_query(engine: Engine, server: Backends, sleep_sql: str) -> None:
    """A connection killed while it runs a long statement fails that statement at once."""
    other = engine.connect()
    other_id = server.backend_id(other)
    outcome: list[BaseException] = []
    backend: list[int] = []

    def sleeper() -> None:
        with engine.connect() as conn:
            backend.append(server.backend_id(conn))
            conn.commit()
            try:
                conn.execute(text(sleep_sql))
            except BaseException as exc:
                outcome.append(exc)

    thread = threading.Thread(target=sleeper)
    started = time.monotonic()
    thread.start()
    assert wait_until(lambda: bool(backend) and server.state(backend[0]) == "active")
    server.kill({backend[0]})
    thread.join(30)
    assert time.monotonic() - started < 30
    assert len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, OperationalError) and error.connection_invalidated, error
    assert server.backend_id(other) == other_id
    other.close()
    assert server.ids() == {other_id}
    assert_counts_match_server(engine, server)


def server_idle_timeout(engine: Engine, server: Backends) -> None:
    """The server drops connections idle for 1 s, far sooner than the pool would: checkouts
    still succeed, and the count is right whenever the server still has them."""
    limit = engine.status().connection_limit
    old = open_connections(engine, server, limit)
    assert wait_until(lambda: not server.ids()), "the server kept the idle sessions"
    assert engine.status().open == limit  # the pool has not noticed yet ...
    new = open_connections(engine, server, limit)  # ... and its callers never do
    assert not (new & old)
    assert_counts_match_server(engine, server)
    for pause in (0.2, 1.3, 0.6, 1.1, 0.05, 1.6):  # idle just under, around and over 1 s
        time.sleep(pause)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    # Compared while the server still keeps them (all just used, well inside 1 s).
    open_connections(engine, server, limit)
    assert_counts_match_server(engine, server)


def bad_statement(
    engine: Engine,
    server: Backends,
    setup: list[str],
    statement: Statement,
    driver_error: type | tuple[type, ...],
) -> None:
    """A statement the database or driver rejects raises its PEP 249 class; the same
    connection stays usable and goes back to the pool; nothing is opened or closed."""
    sql, params, error = statement
    with engine.connect() as conn:
        backend = server.backend_id(conn)
        for command in setup:
            conn.exec_driver_sql(command)
        conn.commit()
        with pytest.raises(error) as info:
            conn.exec_driver_sql(sql, params)
        assert type(info.value) is error
        assert isinstance(info.value.orig, driver_error), repr(info.value.orig)
        assert not info.value.connection_invalidated
        assert info.value.statement == sql
        conn.rollback()
        assert server.backend_id(conn) == backend
    with engine.connect() as conn:  # returned clean: the next caller gets it as it was
        assert server.backend_id(conn) == backend
        assert conn.execute(text("SELECT 2")).scalar() == 2
    status = engine.status()
    assert (status.open, status.opened_total, status.closed_total) == (1, 1, 0)
    assert server.ids() == {backend}


# Statements both PyMySQL and psycopg reject the same way (both use the pyformat style);
# a test module adds its database's own.
BAD_STATEMENTS: dict[str, Statement] = {
    "syntax": ("SELEC 1", None, ProgrammingError),
    "no-table": ("SELECT * FROM dbpool_no_such_table", None, ProgrammingError),
    "too-few": ("SELECT %s, %s", (1,), ProgrammingError),
    "too-many": ("SELECT %s", (1, 2), ProgrammingError),
    "missing-name": ("SELECT %(a)s", {"b": 1}, ProgrammingError),
}


class ServerFaults:
    """The fault tests every server runs. A test module subclasses this as a ``Test...``
    class, sets the attributes below, and supplies a ``db`` fixture giving a
    :class:`Database`."""

    driver_error: ClassVar[type]  # what the driver raises on a connection killed under it
    sleep_sql: ClassVar[str]  # a statement that runs for a minute
    idle_timeout: ClassVar[dict[str, str]]  # URL query: the server drops sessions idle 1 s

    @pytest.mark.parametrize("pre_ping", ["default", 0])
    def test_killing_every_idle_connection_costs_callers_nothing(
        self, db: Database, pre_ping: Any
    ) -> None:
        settings = {} if pre_ping == "default" else {"pre_ping": pre_ping}
        engine = db.engine(connection_limit=4, **settings)
        killing_every_idle_connection(engine, db.server, wait_window=pre_ping == "default")

    def test_without_pre_ping_one_caller_sees_the_kill_and_the_rest_are_validated(
        self, db: Database
    ) -> None:
        engine = db.engine(connection_limit=4, pre_ping=False)
        killing_idle_connections_without_pre_ping(engine, db.server)

    def test_killing_a_busy_connection_fails_only_its_caller(self, db: Database) -> None:
        killing_a_busy_connection(db.engine(connection_limit=3), db.server, self.driver_error)

    def test_killing_a_connection_mid_query_fails_that_query_at_once(self, db: Database) -> None:
        killing_a_connection_mid_query(db.engine(connection_limit=2), db.server, self.sleep_sql)

    def test_server_idle_timeout_shorter_than_the_pool(self, db: Database) -> None:
        engine = db.engine(with_query(db.url, **self.idle_timeout), connection_limit=3)
        server_idle_timeout(engine, db.server)
