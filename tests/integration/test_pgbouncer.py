"""pgbouncer=true through a real PgBouncer in transaction mode (tests/pgbouncer.py starts
one with a pool of 2 server connections), with many more clients than servers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import dbpool
from dbpool import Engine, text
from tests.engines import engine_for
from tests.integration.targets import with_query
from tests.threads import run_threads

psycopg = pytest.importorskip("psycopg")


def bouncer_engine(engines: list[Engine], url: str, **settings: Any) -> Engine:
    settings.setdefault("pool_timeout", 60)
    return engine_for(engines, url, **settings)


def bouncer_pool_size(pgbouncer_url: str) -> int:
    """default_pool_size, from PgBouncer's admin console (simple query protocol only)."""
    url = dbpool.make_url(pgbouncer_url)
    with psycopg.connect(
        host=url.host, port=url.port, dbname="pgbouncer", user=url.username,
        password=url.password, autocommit=True, cursor_factory=psycopg.ClientCursor,
    ) as admin:  # fmt: skip
        for key, value, *_ in admin.execute("SHOW CONFIG").fetchall():
            if key == "default_pool_size":
                return int(value)
    raise AssertionError("PgBouncer did not report default_pool_size")


def test_pgbouncer_mode_turns_off_prepared_statements(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    with bouncer_engine(engines, with_query(pgbouncer_url, pgbouncer="true")).connect() as conn:
        assert conn.driver_connection.prepare_threshold is None
    with bouncer_engine(engines, pgbouncer_url).connect() as conn:
        assert conn.driver_connection.prepare_threshold == 5  # psycopg's default


def choreography(engine: Engine, rounds: int = 10) -> list[str]:
    """Two clients take turns, each running its own statement often enough for psycopg to
    prepare it; returns what went wrong (errors, or another client's result)."""
    problems: list[str] = []
    first, second = engine.connect(), engine.connect()
    try:
        for _ in range(rounds):
            for conn, value in ((first, 1), (second, 2)):
                for _ in range(7):
                    try:
                        got = conn.exec_driver_sql(f"SELECT {value} AS v").scalar()
                    except dbpool.DBAPIError as error:
                        problems.append(f"{getattr(error.orig, 'sqlstate', None)}: {error}")
                        conn.rollback()
                        continue
                    if got != value:
                        problems.append(f"expected {value}, got another client's {got}")
                conn.commit()
    finally:
        first.close()
        second.close()
    return problems


def test_without_pgbouncer_mode_prepared_statements_break(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    problems = choreography(bouncer_engine(engines, pgbouncer_url, connection_limit=2))
    assert problems, "prepared statements survived transaction pooling"
    assert any(p.startswith(("26000", "42P05")) or "another client" in p for p in problems)


def test_with_pgbouncer_mode_the_same_turns_never_fail(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    url = with_query(pgbouncer_url, pgbouncer="true")
    assert choreography(bouncer_engine(engines, url, connection_limit=2)) == []


def test_many_client_threads_over_few_server_connections(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    pool_size = bouncer_pool_size(pgbouncer_url)
    limit = pool_size * 4
    engine = bouncer_engine(
        engines, with_query(pgbouncer_url, pgbouncer="true"), connection_limit=limit
    )
    backends: set[int] = set()
    lock = threading.Lock()

    def work(number: int) -> None:
        for i in range(25):
            with engine.begin() as conn:
                # A transaction keeps its server connection from BEGIN to COMMIT.
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                value = conn.execute(text("SELECT :n::int + 1 AS v"), {"n": i}).scalar()
                assert value == i + 1
                assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
            with lock:
                backends.add(pid)

    run_threads(limit * 2, work)
    assert engine.status().opened_total <= limit
    assert 1 <= len(backends) <= pool_size  # every query ran on PgBouncer's few servers


def test_isolation_level_travels_with_each_transaction(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    # Nothing session-level: a serializable engine and a default one share PgBouncer's
    # server connections, and neither sees the other's level.
    url = with_query(pgbouncer_url, pgbouncer="true")
    serializable = bouncer_engine(engines, url, isolation_level="SERIALIZABLE", connection_limit=4)
    default = bouncer_engine(engines, url, connection_limit=4)
    show = text("SELECT current_setting('transaction_isolation')")

    def work(number: int) -> None:
        engine, expected = (serializable, "serializable") if number % 2 else (default, None)
        for _ in range(20):
            with engine.connect() as conn:
                level = conn.execute(show).scalar()
                conn.commit()
            assert level == expected if expected else level != "serializable"

    run_threads(8, work)


def test_ping_through_pgbouncer(pgbouncer_url: str, engines: list[Engine]) -> None:
    engine = bouncer_engine(engines, with_query(pgbouncer_url, pgbouncer="true"), pre_ping=0)
    for _ in range(5):  # pinged on every checkout
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            conn.commit()
    assert engine.status().opened_total == 1
