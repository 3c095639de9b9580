"""The connection limit as the server sees it.

While many threads hammer a pool with ``connection_limit=K``, a separate connection keeps
counting the pool's connections in the server's own session list (pg_stat_activity,
information_schema.processlist). The count must never exceed K, and must reach K, so the
watcher demonstrably saw the pool at work. Each run goes twice, with ``dispose()`` and a
wait for the server to forget the old sessions in between, so that the opening rush is
watched twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import dbpool
from tests.integration.targets import with_query

LIMIT = 3
THREADS = 16
CHECKOUTS = 30


def hammer_and_watch(engine: dbpool.Engine, hold_sql: str, count: Callable[[], int]) -> list[int]:
    samples: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append(count())

    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(CHECKOUTS):
                with engine.connect() as conn:
                    conn.exec_driver_sql(hold_sql)  # holds the connection a moment
                    conn.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    watcher = threading.Thread(target=watch, name="watcher")
    watcher.start()
    try:
        for _ in range(2):
            workers = [threading.Thread(target=hammer) for _ in range(THREADS)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=120)
            engine.dispose()
            deadline = time.monotonic() + 15
            while samples[-1:] != [0] and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert not errors, errors[0]
    return samples


def check(samples: list[int]) -> None:
    assert len(samples) >= 20, f"the watcher only looked {len(samples)} times"
    assert max(samples) <= LIMIT, f"the server saw {max(samples)} > {LIMIT} connections"
    assert max(samples) == LIMIT, f"the pool never had {LIMIT} open: {max(samples)}"
    assert samples[-1] == 0  # dispose() closed them all


def test_postgresql(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    tag = f"dbpool-limit-{uuid.uuid4().hex[:10]}"
    engine = dbpool.create_engine(
        with_query(postgres_url, application_name=tag), connection_limit=LIMIT, pool_timeout=60
    )
    url = dbpool.make_url(postgres_url)
    with psycopg.connect(
        host=url.host, port=url.port, dbname=url.database, user=url.username,
        password=url.password, autocommit=True,
    ) as watcher:  # fmt: skip

        def count() -> int:
            row: Any = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (tag,)
            ).fetchone()
            return int(row[0])

        try:
            samples = hammer_and_watch(engine, "SELECT pg_sleep(0.002)", count)
        finally:
            engine.dispose()
    check(samples)


def test_mysql(mysql_url: str, mysql_user: tuple[str, str]) -> None:
    pymysql = pytest.importorskip("pymysql")
    user, password = mysql_user  # a user of its own tags the pool's sessions
    url = dbpool.make_url(mysql_url)
    engine = dbpool.create_engine(
        url.set(username=user, password=password), connection_limit=LIMIT, pool_timeout=60
    )
    watcher = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
        autocommit=True,
    )  # fmt: skip

    def count() -> int:
        with watcher.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s", (user,)
            )
            return int(cursor.fetchone()[0])

    try:
        samples = hammer_and_watch(engine, "SELECT SLEEP(0.002)", count)
    finally:
        engine.dispose()
        watcher.close()
    check(samples)
