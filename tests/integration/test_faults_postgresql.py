"""Server faults on a real PostgreSQL: backends terminated while idle and while busy, a
server-side idle timeout shorter than the pool's, bad statements, and a full restart under
a multi-threaded load. Each test's engine has its own application_name, so the test sees
(and kills) only its own backends, while other tests use the same server."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dbpool import (
    ArgumentError,
    ConnectError,
    DataError,
    Engine,
    IntegrityError,
    OperationalError,
    PoolTimeoutError,
    ProgrammingError,
    create_engine,
    make_url,
    text,
)
from tests.integration import faults
from tests.integration.faults import PostgresBackends as Server
from tests.integration.faults import assert_counts_match_server
from tests.integration.targets import with_query
from tests.test_misuse import assert_whole

psycopg = pytest.importorskip("psycopg")


@dataclass
class Fixture:
    url: str
    server: Server
    engines: list[Engine]

    def engine(self, url: str | None = None, **settings: Any) -> Engine:
        settings.setdefault("pool_timeout", 10)
        engine = create_engine(url or self.url, **settings)
        self.engines.append(engine)
        return engine


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Fixture]:
    name = f"dbpool-fault-{uuid.uuid4().hex[:12]}"
    server = Server(postgres_url, name)
    fixture = Fixture(with_query(postgres_url, application_name=name), server, [])
    yield fixture
    for engine in fixture.engines:
        engine.dispose()
    server.close()


# -- terminated backends, server idle timeout ------------------------------------------


@pytest.mark.parametrize("pre_ping", ["default", 0])
def test_terminating_every_idle_connection_costs_callers_nothing(
    pg: Fixture, pre_ping: Any
) -> None:
    settings = {} if pre_ping == "default" else {"pre_ping": pre_ping}
    engine = pg.engine(connection_limit=4, **settings)
    faults.killing_every_idle_connection(engine, pg.server, wait_window=pre_ping == "default")


def test_without_pre_ping_one_caller_sees_the_disconnect_and_the_rest_are_validated(
    pg: Fixture,
) -> None:
    engine = pg.engine(connection_limit=4, pre_ping=False)
    faults.killing_idle_connections_without_pre_ping(engine, pg.server)


def test_terminating_a_busy_connection_fails_only_its_caller(pg: Fixture) -> None:
    engine = pg.engine(connection_limit=3)
    faults.killing_a_busy_connection(engine, pg.server, psycopg.OperationalError)


def test_terminating_a_connection_mid_query_fails_that_query_at_once(pg: Fixture) -> None:
    engine = pg.engine(connection_limit=2)
    faults.killing_a_connection_mid_query(engine, pg.server, "SELECT pg_sleep(60)")


def test_server_idle_session_timeout_shorter_than_the_pool(pg: Fixture) -> None:
    engine = pg.engine(
        with_query(pg.url, options="-c idle_session_timeout=1000"), connection_limit=3
    )
    faults.server_idle_timeout(engine, pg.server)


# -- bad statements ------------------------------------------------------------------------

BAD_STATEMENTS = {
    "syntax": ("SELEC 1", None, ProgrammingError),
    "no-table": ("SELECT * FROM dbpool_no_such_table", None, ProgrammingError),
    "division": ("SELECT 1 / 0", None, DataError),
    "bad-cast": ("SELECT %s::int", ("abc",), DataError),
    "nul-byte": ("SELECT %s", ("a\x00b",), DataError),
    "too-few": ("SELECT %s, %s", (1,), ProgrammingError),
    "too-many": ("SELECT %s", (1, 2), ProgrammingError),
    "missing-name": ("SELECT %(a)s", {"b": 1}, ProgrammingError),
    "unadaptable": ("SELECT %s", (object(),), ProgrammingError),
    "duplicate": ("INSERT INTO dup VALUES (1)", None, IntegrityError),
}


@pytest.mark.parametrize("case", BAD_STATEMENTS)
def test_bad_statements_raise_pep249_errors_and_leave_the_pool_healthy(
    pg: Fixture, case: str
) -> None:
    engine = pg.engine(connection_limit=1)
    setup = ["CREATE TEMP TABLE dup (a int PRIMARY KEY)", "INSERT INTO dup VALUES (1)"]
    faults.bad_statement(engine, pg.server, setup, BAD_STATEMENTS[case], psycopg.Error)


def test_failed_statement_left_uncommitted_is_reset_on_return(pg: Fixture) -> None:
    engine = pg.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = pg.server.backend_id(conn)
        with pytest.raises(DataError):
            conn.execute(text("SELECT 1 / 0"))
        # No rollback: the transaction is aborted; returning the connection resets it.
    with engine.connect() as conn:
        assert pg.server.backend_id(conn) == backend
        assert conn.execute(text("SELECT 2")).scalar() == 2
    assert engine.status().closed_total == 0


def test_missing_or_mistyped_bind_parameters(pg: Fixture) -> None:
    engine = pg.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = pg.server.backend_id(conn)
        with pytest.raises(ArgumentError, match="'a'"):
            conn.execute(text("SELECT :a"), {})
        with pytest.raises(ArgumentError):
            conn.execute(text("SELECT :a"), "not a dict")  # type: ignore[arg-type]
        with pytest.raises(DataError):
            conn.execute(text("SELECT CAST(:a AS int)"), {"a": "seven"})
        conn.rollback()
        assert conn.execute(text("SELECT :a::int + 1"), {"a": 1}).scalar() == 2
        assert pg.server.backend_id(conn) == backend
    assert engine.status().opened_total == 1


# -- a full restart under load -----------------------------------------------------------


def _pg_ctl(action: str) -> None:
    command = ["pg_ctlcluster", "--skip-systemctl-redirect"]
    if action == "stop":
        command += ["--mode", "fast"]
    subprocess.run([*command, "15", "main", action], check=True, capture_output=True, timeout=120)


def _server_accepts(url: str) -> bool:
    parsed = make_url(url)
    try:
        psycopg.connect(
            host=parsed.host, port=parsed.port or 5432, user=parsed.username,
            dbname=parsed.database, connect_timeout=2,
        ).close()  # fmt: skip
    except psycopg.Error:
        return False
    return True


@pytest.fixture
def restartable(postgres_url: str) -> Callable[[str], None]:
    """pg_ctl for the local cluster; the test is skipped where this process cannot do it."""
    parsed = make_url(postgres_url)
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    if (parsed.host, parsed.port or 5432) != ("127.0.0.1", 5432):
        pytest.skip("only the local cluster 15/main is restarted")
    return _pg_ctl


@dataclass
class Call:
    started: float
    ended: float
    error: BaseException | None


def test_restart_under_load(pg: Fixture, restartable: Callable[[str], None]) -> None:
    """A restart costs at most the queries in flight plus those issued while the server is
    down; those fail fast with errors that say the server cannot be reached, reconnecting
    makes no storm of attempts, and afterwards the pool serves without another error."""
    limit, threads, pool_timeout, connect_timeout = 4, 8, 2.0, 2.0
    attempts: list[float] = []

    def counting_creator() -> Any:
        attempts.append(time.monotonic())
        return engine.dialect.connect()

    engine = create_engine(
        pg.url, creator=counting_creator, connection_limit=limit, pool_timeout=pool_timeout,
        connect_timeout=connect_timeout,
    )  # fmt: skip
    pg.engines.append(engine)
    calls: list[Call] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            started = time.monotonic()
            error: BaseException | None = None
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT pg_sleep(0.01)"))
            except Exception as exc:
                error = exc
            calls.append(Call(started, time.monotonic(), error))
            if error is not None:
                time.sleep(0.05)  # callers back off a little too; they always do

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    try:
        time.sleep(1.5)
        stopping = time.monotonic()
        restartable("stop")
        down = time.monotonic()
        time.sleep(2.5)
        starting = time.monotonic()
        restartable("start")
        up = time.monotonic()
        time.sleep(3.0)
    finally:
        stop.set()
        if not _server_accepts(pg.url):
            _pg_ctl("start")
        for thread in workers:
            thread.join(30)
    assert not any(thread.is_alive() for thread in workers), "a caller hung"

    errors = [c for c in calls if c.error is not None]
    # No hang: every call ended within the pool timeout plus one connect attempt.
    assert max(c.ended - c.started for c in calls) < pool_timeout + connect_timeout + 3
    # Before the restart, and from a moment after it, no caller saw an error.
    assert not [c for c in errors if c.ended < stopping]
    grace = 1.0  # callers backing off when it came back try again within their timeout
    after = [c for c in calls if c.started > up + grace]
    assert len(after) >= threads
    assert not [c.error for c in after if c.error is not None]
    # So the errors are at most the calls in flight when it stopped plus those issued
    # while it was down.
    in_flight = sum(1 for c in calls if c.started < stopping < c.ended)
    issued_while_down = sum(1 for c in calls if stopping <= c.started <= up + grace)
    assert len(errors) <= in_flight + issued_while_down
    assert in_flight <= threads
    # Every error raised while it was down says the server cannot be reached (or, for a
    # connection that died with it, that the connection was lost).
    reach = "Cannot connect to postgresql at 127.0.0.1:5432"
    for call in errors:
        if not down <= call.ended <= starting:
            continue
        error = call.error
        if isinstance(error, (ConnectError, PoolTimeoutError)):
            assert reach in str(error), error
        else:
            assert isinstance(error, OperationalError) and error.connection_invalidated, error
    assert any(down <= c.ended <= starting for c in errors)
    # Reconnecting backs off: per slot, at most ~8 attempts per pool_timeout.
    outage = starting - down
    while_down = sum(1 for t in attempts if down <= t <= starting)
    assert 1 <= while_down <= limit * 8 * (outage / pool_timeout + 1), (while_down, outage)
    pg.server.connect()
    assert_counts_match_server(engine, pg.server)
    assert_whole(engine.pool)
