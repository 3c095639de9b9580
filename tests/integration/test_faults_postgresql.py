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
from tests.integration.faults import PostgresBackends, assert_counts_match_server
from tests.integration.targets import with_query
from tests.test_misuse import assert_whole

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def db(postgres_url: str, engines: list[Engine]) -> Iterator[faults.Database]:
    name = f"dbpool-fault-{uuid.uuid4().hex[:12]}"
    server = PostgresBackends(postgres_url, name)
    yield faults.Database(with_query(postgres_url, application_name=name), server, engines)
    server.close()


class TestServerFaults(faults.ServerFaults):
    """Backends terminated while idle and while busy; an idle_session_timeout of 1 s."""

    driver_error = psycopg.OperationalError
    sleep_sql = "SELECT pg_sleep(60)"
    idle_timeout = {"options": "-c idle_session_timeout=1000"}


# -- bad statements ------------------------------------------------------------------------

BAD_STATEMENTS: dict[str, faults.Statement] = {
    **faults.BAD_STATEMENTS,
    "division": ("SELECT 1 / 0", None, DataError),
    "bad-cast": ("SELECT %s::int", ("abc",), DataError),
    "nul-byte": ("SELECT %s", ("a\x00b",), DataError),
    "unadaptable": ("SELECT %s", (object(),), ProgrammingError),
    "duplicate": ("INSERT INTO dup VALUES (1)", None, IntegrityError),
}


@pytest.mark.parametrize("case", BAD_STATEMENTS)
def test_bad_statements_raise_pep249_errors_and_leave_the_pool_healthy(
    db: faults.Database, case: str
) -> None:
    engine = db.engine(connection_limit=1)
    setup = ["CREATE TEMP TABLE dup (a int PRIMARY KEY)", "INSERT INTO dup VALUES (1)"]
    faults.bad_statement(engine, db.server, setup, BAD_STATEMENTS[case], psycopg.Error)


def test_failed_statement_left_uncommitted_is_reset_on_return(db: faults.Database) -> None:
    engine = db.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = db.server.backend_id(conn)
        with pytest.raises(DataError):
            conn.execute(text("SELECT 1 / 0"))
        # No rollback: the transaction is aborted; returning the connection resets it.
    with engine.connect() as conn:
        assert db.server.backend_id(conn) == backend
        assert conn.execute(text("SELECT 2")).scalar() == 2
    assert engine.status().closed_total == 0


def test_missing_or_mistyped_bind_parameters(db: faults.Database) -> None:
    engine = db.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = db.server.backend_id(conn)
        with pytest.raises(ArgumentError, match="'a'"):
            conn.execute(text("SELECT :a"), {})
        with pytest.raises(ArgumentError):
            conn.execute(text("SELECT :a"), "not a dict")  # type: ignore[arg-type]
        with pytest.raises(DataError):
            conn.execute(text("SELECT CAST(:a AS int)"), {"a": "seven"})
        conn.rollback()
        assert conn.execute(text("SELECT :a::int + 1"), {"a": 1}).scalar() == 2
        assert db.server.backend_id(conn) == backend
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


def test_restart_under_load(db: faults.Database, restartable: Callable[[str], None]) -> None:
    """A restart costs at most the queries in flight plus those issued while the server is
    down; those fail fast with errors that say the server cannot be reached, reconnecting
    makes no storm of attempts, and afterwards the pool serves without another error."""
    limit, threads, pool_timeout, connect_timeout = 4, 8, 2.0, 2.0
    attempts: list[float] = []

    def counting_creator() -> Any:
        attempts.append(time.monotonic())
        return engine.dialect.connect()

    engine = create_engine(
        db.url, creator=counting_creator, connection_limit=limit, pool_timeout=pool_timeout,
        connect_timeout=connect_timeout,
    )  # fmt: skip
    db.engines.append(engine)
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
        if not _server_accepts(db.url):
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
    assert isinstance(db.server, PostgresBackends)
    db.server.connect()  # the restart killed its side connection
    assert_counts_match_server(engine, db.server)
    assert_whole(engine.pool)
