"""``engine.direct()`` on the real servers, and through a real PgBouncer in transaction
mode: what the pooler breaks (LISTEN/NOTIFY, session advisory locks, session settings,
server-side prepared statements) works on the direct connection.

The server's own view tells whether a direct connection is open: on PostgreSQL the
``application_name`` the direct URL tags it with, on MariaDB its ``CONNECTION_ID()`` in
the process list (``performance_schema``, which would show connection attributes, is off
by default there).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

import dbpool
from dbpool import Engine, text
from tests.engines import engine_for
from tests.fakedb import wait_for
from tests.integration.targets import with_query
from tests.servers import admin_query
from tests.threads import run_threads

TAG = "dbpool_direct"


def tagged(prefix: str = TAG) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# -- both servers: open on demand, closed after the block, no slot taken ------------------


class Server:
    """One test server as the tests see it: its URL and how it counts connections."""

    def __init__(self, vendor: str, url: str) -> None:
        self.vendor = vendor
        self.url = url

    def direct_url(self, name: str) -> str:
        """The server's URL, tagged ``name`` on PostgreSQL."""
        if self.vendor == "postgresql":
            return with_query(self.url, application_name=name)
        return self.url

    def session_id(self, conn: dbpool.Connection) -> int:
        postgresql = self.vendor == "postgresql"
        sql = "SELECT pg_backend_pid()" if postgresql else "SELECT CONNECTION_ID()"
        return int(conn.exec_driver_sql(sql).scalar())

    def is_open(self, session_id: int) -> bool:
        if self.vendor == "postgresql":
            sql = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {session_id}"
        else:
            sql = f"SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = {session_id}"
        return int(admin_query(self.vendor, sql)[0][0]) > 0

    def qualified(self, table: str) -> str:
        """``table`` as admin_query() names it (its MySQL connection has no database)."""
        if self.vendor == "postgresql":
            return table
        return f"{dbpool.make_url(self.url).database}.{table}"

    def tagged_count(self, name: str) -> int:
        """PostgreSQL only: connections carrying application_name ``name``."""
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'"
        return int(admin_query("postgresql", sql)[0][0])


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Server:
    fixture = "postgres_url" if request.param == "postgresql" else "mysql_url"
    return Server(request.param, request.getfixturevalue(fixture))


@pytest.fixture
def table(server: Server) -> Iterator[str]:
    name = tagged()
    admin_query(server.vendor, f"CREATE TABLE {server.qualified(name)} (a INTEGER)")
    yield name
    admin_query(server.vendor, f"DROP TABLE IF EXISTS {server.qualified(name)}")


def closed_soon(server: Server, session_id: int) -> bool:
    """The server ends a session a moment after the client closes it."""
    return wait_for(lambda: not server.is_open(session_id), timeout=10)


def test_direct_opens_on_demand_and_closes_after_the_block(
    server: Server, engines: list[Engine]
) -> None:
    name = tagged()
    engine = engine_for(engines, server.url, direct_url=server.direct_url(name))
    with engine.direct() as conn:
        session = server.session_id(conn)
        assert server.is_open(session)
        if server.vendor == "postgresql":
            assert server.tagged_count(name) == 1
    assert conn.closed
    assert closed_soon(server, session)
    status = engine.status()
    assert (status.open, status.opened_total) == (0, 0)  # the pool was never started


def test_direct_takes_no_pool_slot(server: Server, engines: list[Engine]) -> None:
    engine = engine_for(engines, server.url, direct_url=server.direct_url(tagged()),
                        connection_limit=1, pool_timeout=1)  # fmt: skip
    with engine.connect() as pooled:  # the pool's only slot
        pooled_session = server.session_id(pooled)
        with engine.direct() as direct:
            direct_session = server.session_id(direct)
            assert direct_session != pooled_session
            assert engine.status().busy == 1 and engine.status().open == 1
    assert closed_soon(server, direct_session)
    assert server.is_open(pooled_session)  # back in the pool, still open
    assert engine.status().idle == 1


def test_commit_as_you_go_and_rollback_on_close(
    server: Server, table: str, engines: list[Engine]
) -> None:
    engine = engine_for(engines, server.url, direct_url=server.direct_url(tagged()))
    with engine.direct() as conn:
        conn.execute(text(f"INSERT INTO {table} (a) VALUES (:a)"), {"a": 1})
        conn.commit()
        conn.execute(text(f"INSERT INTO {table} (a) VALUES (:a)"), {"a": 2})
        conn.rollback()
        conn.execute(text(f"INSERT INTO {table} (a) VALUES (:a)"), {"a": 3})  # never committed
    with engine.direct() as conn, conn.begin():
        conn.execute(text(f"INSERT INTO {table} (a) VALUES (4)"))
    rows = admin_query(server.vendor, f"SELECT a FROM {server.qualified(table)} ORDER BY a")
    assert rows == [(1,), (4,)]


def test_errors_leave_nothing_open(server: Server, table: str, engines: list[Engine]) -> None:
    name = tagged()
    engine = engine_for(engines, server.url, direct_url=server.direct_url(name))
    with pytest.raises(dbpool.ProgrammingError), engine.direct() as conn:
        session = server.session_id(conn)
        conn.execute(text(f"INSERT INTO {table} (a) VALUES (1)"))
        conn.exec_driver_sql("SELECT * FROM dbpool_direct_no_such_table")
    assert closed_soon(server, session)
    assert admin_query(server.vendor, f"SELECT a FROM {server.qualified(table)}") == []
    # A direct URL that cannot connect: ConnectError, and the block never runs.
    missing = dbpool.make_url(server.direct_url(name)).set(database="dbpool_direct_missing")
    engine = engine_for(engines, server.url, direct_url=missing)
    with pytest.raises(dbpool.ConnectError), engine.direct():
        pytest.fail("the block must not run")
    if server.vendor == "postgresql":
        assert wait_for(lambda: server.tagged_count(name) == 0, timeout=10)


# -- PostgreSQL through PgBouncer in transaction mode, with direct_url the real server -------


@pytest.fixture
def bounced(pgbouncer_url: str, postgres_url: str, engines: list[Engine]) -> Engine:
    """An engine on PgBouncer (pgbouncer=true) whose direct URL is the server itself."""
    return engine_for(
        engines,
        with_query(pgbouncer_url, pgbouncer="true"),
        direct_url=with_query(postgres_url, application_name=tagged()),
        pool_timeout=60,
    )


def test_direct_on_a_bounced_engine_goes_to_the_server(bounced: Engine) -> None:
    assert bounced.config.pgbouncer
    assert bounced.direct_url is not None and bounced.direct_url.port == 5432
    name = bounced.direct_url.query["application_name"]
    with bounced.direct() as conn:
        assert conn.exec_driver_sql("SHOW application_name").scalar() == name
        assert conn.driver_connection.prepare_threshold == 5  # pgbouncer mode is off here
    with bounced.connect() as pooled:
        assert pooled.driver_connection.prepare_threshold is None


def test_listen_notify_round_trip(bounced: Engine) -> None:
    channel = tagged()
    with bounced.direct() as listener:
        listener.exec_driver_sql(f"LISTEN {channel}")
        listener.commit()  # LISTEN takes effect at commit
        with bounced.begin() as pooled:  # through PgBouncer: NOTIFY needs no session
            pooled.execute(text("SELECT pg_notify(:channel, :payload)"),
                           {"channel": channel, "payload": "hello"})  # fmt: skip
        received = list(listener.driver_connection.notifies(timeout=10, stop_after=1))
    assert [(n.channel, n.payload) for n in received] == [(channel, "hello")]


def advisory_lock_holders(key: int) -> list[int]:
    sql = (
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        f"AND ((classid::bigint << 32) | objid::bigint) = {key}"
    )
    return [int(row[0]) for row in admin_query("postgresql", sql)]


def test_session_advisory_lock_is_held_across_transactions(bounced: Engine) -> None:
    key = uuid.uuid4().int % 2**31
    with bounced.direct() as conn:
        pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        for _ in range(3):  # transactions come and go; the session's lock stays
            conn.execute(text("SELECT 1")).all()
            conn.commit()
            assert advisory_lock_holders(key) == [pid]
        with bounced.begin() as other:  # through PgBouncer: another session
            assert other.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                 {"key": key}).scalar() is False  # fmt: skip
        assert conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key}).scalar()
        conn.commit()
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})  # closing frees it
    assert wait_for(lambda: advisory_lock_holders(key) == [], timeout=10)


def test_session_setting_persists(bounced: Engine) -> None:
    with bounced.direct() as conn:
        conn.exec_driver_sql("SET statement_timeout = '4321ms'")
        conn.commit()
        for _ in range(3):
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "4321ms"
            conn.commit()


def test_server_side_prepared_statement(bounced: Engine) -> None:
    statement = tagged()
    with bounced.direct() as conn:
        conn.exec_driver_sql(f"PREPARE {statement} (integer) AS SELECT $1 + 1")
        conn.commit()
        for value in range(3):
            assert conn.exec_driver_sql(f"EXECUTE {statement} ({value})").scalar() == value + 1
            conn.commit()
        # psycopg's own server-side preparation works too (it is off on the bounced pool).
        for _ in range(7):
            assert conn.execute(text("SELECT :v::int * 2"), {"v": 21}).scalar() == 42
        assert conn.driver_connection.prepared_max > 0


def test_two_threads_in_direct_get_two_sessions(bounced: Engine) -> None:
    both_inside = threading.Barrier(2)
    pids: list[int] = []

    def work(number: int) -> None:
        with bounced.direct() as conn:
            pids.append(int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()))
            both_inside.wait(timeout=30)

    run_threads(2, work)
    assert len(set(pids)) == 2
