"""reap_idle_after on the real servers: zombies of killed processes are ended, nothing else.

Zombies are made by tests/integration/full_server.py: processes connected through a
proxy that goes silent, then SIGKILLed, so their sessions stay on the server, idle. The
"full" server is a test user's own connection limit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest

import dbpool
from dbpool import TooManyConnectionsError
from tests.integration.full_server import (
    OTHER_APP,
    OTHER_USER,
    PASSWORD,
    limited_user,
    session_ids,
    sessions,
    vendor_url,
    wait_until,
    zombies,
)
from tests.servers import MYSQL_URL, POSTGRES_URL, admin_query, need, need_module

pytestmark = pytest.mark.slow  # child processes and idle ages: several seconds each

OLDER_THAN = 1.0  # reap_idle_after of the tests


@pytest.fixture(params=["postgresql", "mysql"])
def vendor(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    need_module("psycopg" if name == "postgresql" else "pymysql")
    need(POSTGRES_URL if name == "postgresql" else MYSQL_URL)
    return name


@pytest.fixture
def engines() -> Iterator[list[dbpool.Engine]]:
    made: list[dbpool.Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def idle_for(vendor: str, ids: set[int], seconds: float) -> bool:
    """Whether every session in ``ids`` has been idle on the server for over ``seconds``."""
    ages = {int(row[0]): float(row[2]) for row in sessions(vendor)}
    return all(ages.get(i, 0.0) > seconds for i in ids)


def test_zombies_are_reaped_and_the_new_instance_connects(
    vendor: str, engines: list[dbpool.Engine], caplog: pytest.LogCaptureFixture
) -> None:
    # Two killed instances left one zombie each; the user's limit is 3, so a new
    # instance that needs 3 connections gets only 1 ... unless it cleans up: its first
    # connection ends the zombies (they are ours: same user, same application name).
    with limited_user(vendor, 3) as url, zombies(vendor, url, 2) as dead:
        wait_until(lambda: idle_for(vendor, dead, OLDER_THAN), what="the zombies to age")
        engine = dbpool.create_engine(url, connection_limit=3, pool_timeout=10,
                                      reap_idle_after=OLDER_THAN)  # fmt: skip
        engines.append(engine)
        with caplog.at_level(logging.WARNING, logger="dbpool"):
            held = [engine.connect() for _ in range(3)]
        for conn in held:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert not session_ids(vendor) & dead, "a zombie survived"
        for conn in held:
            conn.close()
        assert engine.status().open == 3
        reaped = [r.getMessage() for r in caplog.records if "reaped" in r.getMessage()]
        assert len(reaped) == 1 and "reaped 2 idle connections" in reaped[0], reaped
        assert engine.dialect.describe() in reaped[0]
        assert PASSWORD not in caplog.text


def test_a_refused_open_reaps_through_an_idle_connection_of_the_pool(
    vendor: str, engines: list[dbpool.Engine]
) -> None:
    # A running instance (limit 2) holds one connection busy when a sibling instance
    # freezes and leaves a zombie: the user is full. The instance's second open is
    # refused; there is no idle connection to reap through and a fresh one is refused
    # too, so it backs off. When its first connection comes back, the next refusal reaps
    # through it, and the waiting caller gets in, well within pool_timeout.
    with limited_user(vendor, 2) as url:
        engine = dbpool.create_engine(url, connection_limit=2, pool_timeout=30,
                                      reap_idle_after=OLDER_THAN)  # fmt: skip
        engines.append(engine)
        first = engine.connect()
        first.exec_driver_sql("SELECT 1")
        with zombies(vendor, url, 1) as dead:
            got: list[Any] = []
            errors: list[BaseException] = []

            def second() -> None:
                try:
                    with engine.connect() as conn:
                        got.append(conn.exec_driver_sql("SELECT 1").scalar())
                except BaseException as exc:  # reported below
                    errors.append(exc)

            caller = threading.Thread(target=second)
            caller.start()
            wait_until(lambda: engine.pool.too_many_connections_total >= 1, what="a refusal")
            wait_until(lambda: idle_for(vendor, dead, OLDER_THAN + 0.5), what="the zombie")
            assert caller.is_alive() and not got  # still refused: nothing to reap through
            first.close()  # now the pool has an idle connection
            caller.join(timeout=25)
            assert not errors, errors
            assert got == [1]
            assert not session_ids(vendor) & dead
        status = engine.status()
        assert (status.open, status.busy, status.idle) == (2, 0, 2)


def test_busy_and_other_applications_connections_are_left_alone(
    vendor: str, engines: list[dbpool.Engine]
) -> None:
    import psycopg
    import pymysql

    def connect(url: str) -> Any:
        parsed = dbpool.make_url(url)
        if vendor == "postgresql":
            return psycopg.connect(
                host=parsed.host, port=parsed.port, dbname=parsed.database,
                user=parsed.username, application_name=parsed.query["application_name"],
                autocommit=True,
            )  # fmt: skip
        return pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                               password=PASSWORD, database=parsed.database,
                               autocommit=True)  # fmt: skip

    def run(conn: Any, sql: str) -> Any:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall()

    sleep = "SELECT pg_sleep(60)" if vendor == "postgresql" else "SELECT SLEEP(60)"
    with limited_user(vendor, 10) as url:
        # Another application (PostgreSQL: same user, other application_name; MariaDB,
        # whose program names are not visible: another user), idle for long.
        other = connect(vendor_url(vendor, app=OTHER_APP) if vendor == "postgresql" else
                        vendor_url(vendor, user=OTHER_USER))  # fmt: skip
        busy = connect(url)  # ours, in a long statement
        keep = [other, busy]
        if vendor == "postgresql":  # ours, idle in a transaction: not idle
            in_transaction = connect(url)
            in_transaction.autocommit = False
            run(in_transaction, "SELECT 1")
            keep.append(in_transaction)
        busy_id = int(busy.info.backend_pid if vendor == "postgresql" else busy.thread_id())

        def busy_state() -> str:
            states = {int(row[0]): str(row[1]) for row in sessions(vendor)}
            return states.get(busy_id, "gone")

        def long_statement() -> None:
            with suppress(Exception):  # cancelled below, once the reaper has run
                run(busy, sleep)

        try:
            worker = threading.Thread(target=long_statement)
            worker.start()
            with zombies(vendor, url, 1) as dead:
                wait_until(lambda: idle_for(vendor, dead, OLDER_THAN + 0.5), what="zombie")
                assert busy_state() in ("active", "Query")  # busy for longer than that
                ids = session_ids(vendor) | session_ids(vendor, user=OTHER_USER)
                engine = dbpool.create_engine(url, reap_idle_after=OLDER_THAN)
                engines.append(engine)
                with engine.connect() as conn:  # the first connection cleans up
                    conn.exec_driver_sql("SELECT 1")
                after = session_ids(vendor) | session_ids(vendor, user=OTHER_USER)
                assert ids - after == dead  # exactly the zombie went
                assert busy_state() in ("active", "Query")
            admin_query(vendor, f"SELECT pg_cancel_backend({busy_id})" if vendor == "postgresql"
                        else f"KILL QUERY {busy_id}")  # fmt: skip
            worker.join(timeout=10)
            for conn in keep:  # all still alive
                assert run(conn, "SELECT 1")[0][0] == 1
        finally:
            for conn in keep:
                conn.close()


def test_reap_idle_after_zero_reaps_nothing(vendor: str, engines: list[dbpool.Engine]) -> None:
    with limited_user(vendor, 2) as url, zombies(vendor, url, 1) as dead:
        wait_until(lambda: idle_for(vendor, dead, OLDER_THAN), what="the zombie to age")
        engine = dbpool.create_engine(url, connection_limit=2, pool_timeout=1.5)
        engines.append(engine)
        with engine.connect(), pytest.raises(TooManyConnectionsError) as caught:
            engine.connect()
        assert caught.value.code == "P2037"
        assert PASSWORD not in str(caught.value)
        assert dead <= session_ids(vendor)  # the zombie is still there
