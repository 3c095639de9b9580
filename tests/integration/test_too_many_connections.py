"""A full server refuses with TooManyConnectionsError (P2037), retried within pool_timeout.

The "full" server is a test user's own limit (tests/integration/full_server.py), which
the server enforces with the same refusal as a full max_connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dbpool
from dbpool import ConnectError, TooManyConnectionsError
from tests.integration.full_server import PASSWORD, USER, limited_user
from tests.servers import need, need_module

VENDORS = ["postgresql", "mysql"]
LIMIT = 2


@pytest.fixture(params=VENDORS)
def full(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, list[Any]]]:
    """(vendor, url, raw connections holding every slot the test user has)."""
    vendor: str = request.param
    need_module("psycopg" if vendor == "postgresql" else "pymysql")
    from tests.servers import MYSQL_URL, POSTGRES_URL

    need(POSTGRES_URL if vendor == "postgresql" else MYSQL_URL)
    with limited_user(vendor, LIMIT) as url:
        held = [_raw_connect(vendor, url) for _ in range(LIMIT)]
        try:
            yield vendor, url, held
        finally:
            for conn in held:
                conn.close()


def _raw_connect(vendor: str, url: str) -> Any:
    parsed = dbpool.make_url(url)
    if vendor == "postgresql":
        import psycopg

        return psycopg.connect(host=parsed.host, port=parsed.port, dbname=parsed.database,
                               user=parsed.username, password=parsed.password)  # fmt: skip
    import pymysql

    return pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                           password=parsed.password, database=parsed.database)  # fmt: skip


def test_a_full_server_raises_p2037_after_pool_timeout(
    full: tuple[str, str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    vendor, url, _ = full
    engine = dbpool.create_engine(url, pool_timeout=3, budget_check=False)
    try:
        started = time.monotonic()
        with (
            caplog.at_level("WARNING", logger="dbpool"),
            pytest.raises(TooManyConnectionsError) as caught,
        ):
            engine.connect()
        waited = time.monotonic() - started
    finally:
        engine.dispose()
    error = caught.value
    assert isinstance(error, ConnectError)
    assert error.code == "P2037"
    # Retried with backoff until pool_timeout ran out (or the next pause would not fit).
    assert 1.0 <= waited < 15, waited
    message = str(error)
    assert engine.dialect.describe() in message
    assert USER in message
    assert "connection_limit" in message and "PgBouncer" in message
    assert "docs/scaling.md" in message
    assert PASSWORD not in message
    # The driver's own refusal, kept for whoever wants the details.
    assert error.orig is not None
    assert (
        ("too many connections for role" in str(error.orig))
        if vendor == "postgresql"
        else (error.orig.args[0] == 1226)
    )
    # Counted once per refused attempt; logged once for the whole run of them.
    refusals = engine.pool.too_many_connections_total
    assert refusals >= 2  # the backoff retried
    values = {entry["key"]: entry["value"] for entry in engine.metrics.json()["counters"]}
    assert values["dbpool_pool_too_many_connections_total"] == refusals
    assert f"dbpool_pool_too_many_connections_total {refusals}" in engine.metrics.prometheus()
    warnings = [r for r in caplog.records if "Too many connections" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert PASSWORD not in caplog.text


def test_a_slot_freed_within_pool_timeout_is_taken(full: tuple[str, str, list[Any]]) -> None:
    _, url, held = full
    engine = dbpool.create_engine(url, pool_timeout=20, budget_check=False)

    def free_a_slot() -> None:
        time.sleep(1.0)
        held.pop().close()

    freer = threading.Thread(target=free_a_slot)
    freer.start()
    try:
        with engine.connect() as conn:  # refused until the slot frees, then in
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert engine.pool.too_many_connections_total >= 1
    finally:
        freer.join()
        engine.dispose()


def test_fail_fast_open_raises_p2037(full: tuple[str, str, list[Any]]) -> None:
    _, url, _ = full
    engine = dbpool.create_engine(url, budget_check=False)
    try:
        with pytest.raises(TooManyConnectionsError):
            engine.open()  # no retry: Prisma's $connect fails at once
        assert engine.pool.too_many_connections_total == 1
    finally:
        engine.dispose()


def test_odbc_drivers_raise_p2037(full: tuple[str, str, list[Any]]) -> None:
    # psqlODBC and MariaDB's ODBC driver give the server's words, not its code.
    from tests.servers import ODBC_MARIADB_DRIVER, ODBC_POSTGRES_DRIVER, need_odbc_driver

    vendor, url, _ = full
    driver = ODBC_POSTGRES_DRIVER if vendor == "postgresql" else ODBC_MARIADB_DRIVER
    need_odbc_driver(driver)
    parsed = dbpool.make_url(url)
    odbc = parsed.set(drivername="odbc", query={"driver": driver})
    engine = dbpool.create_engine(odbc, pool_timeout=0.5)
    try:
        with pytest.raises(TooManyConnectionsError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    assert caught.value.code == "P2037"
    assert PASSWORD not in str(caught.value)
    assert engine.pool.too_many_connections_total >= 1
