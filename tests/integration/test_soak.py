"""Soak: a pool of 4 on the real PostgreSQL, driven by 64 threads for about 45 s while a
chaos thread terminates backends (one at a time, now and then all of them) and the
callers make every mistake a caller makes: exceptions inside transactions, bad SQL,
invalidations, connections dropped without closing, and holds longer than the tiny
pool_timeout, so that other callers time out. Afterwards the pool must be whole.

``DBPOOL_SOAK_SECONDS`` changes the duration.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from dbpool import (
    Engine,
    OperationalError,
    PoolTimeoutError,
    ProgrammingError,
    create_engine,
    text,
)
from tests.integration.faults import PostgresBackends, open_connections
from tests.integration.targets import with_query
from tests.test_misuse import wait_until

LIMIT = 4
THREADS = 64
POOL_TIMEOUT = 0.25
SECONDS = float(os.environ.get("DBPOOL_SOAK_SECONDS", "45"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(SECONDS + 120),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),  # the dropped connections
]


class UserError(Exception):
    """A bug in the caller's own code."""


@pytest.fixture
def soak(postgres_url: str) -> Iterator[tuple[Engine, PostgresBackends]]:
    name = f"dbpool-soak-{uuid.uuid4().hex[:12]}"
    server = PostgresBackends(postgres_url, name)
    engine = create_engine(
        with_query(postgres_url, application_name=name),
        connection_limit=LIMIT,
        pool_timeout=POOL_TIMEOUT,
    )
    yield engine, server
    engine.dispose()
    server.close()


def test_soak(soak: tuple[Engine, PostgresBackends]) -> None:
    engine, server = soak
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    counting = threading.Lock()  # Counter's += is not atomic across threads

    def count(kind: str) -> None:
        with counting:
            outcomes[kind] += 1

    problems: list[str] = []  # anything a caller should never see, or a broken invariant
    terminated = 0

    def one_call(rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.05:  # holds longer than pool_timeout: others time out
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                time.sleep(rng.uniform(0.3, 0.6))
            return "long-hold"
        if roll < 0.13:
            try:
                with engine.begin() as conn:
                    conn.execute(text("SELECT 1"))
                    raise UserError
            except UserError:
                return "user-error"
        if roll < 0.17:
            with engine.connect() as conn:
                try:
                    conn.execute(text("SELEC 1"))
                except ProgrammingError:
                    return "bad-sql"
            problems.append("bad SQL did not raise ProgrammingError")
        if roll < 0.20:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                conn.invalidate()
            return "invalidated"
        if roll < 0.22:
            dropped = engine.connect()
            dropped.execute(text("SELECT 1"))
            del dropped  # never closed: reclaimed by the pool
            return "dropped"
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.002)"))
            conn.commit()
        return "ok"

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                count(one_call(rng))
            except PoolTimeoutError as exc:
                count("timeout")
                well_formed = (
                    exc.code == "P2024"
                    and exc.connection_limit == LIMIT
                    and exc.pool_timeout == POOL_TIMEOUT
                    and exc.waited >= POOL_TIMEOUT - 0.01
                    and "Timed out fetching a new connection" in str(exc)
                    and f"connection limit: {LIMIT}" in str(exc)
                )
                if not well_formed:
                    problems.append(f"malformed timeout: {exc!r} waited={exc.waited}")
            except OperationalError as exc:
                if exc.connection_invalidated and "connection to the database was lost" in str(
                    exc
                ):
                    count("lost")
                else:
                    problems.append(f"unexpected: {exc!r}")
            except Exception as exc:
                problems.append(f"unexpected: {exc!r}")

    def chaos() -> None:
        nonlocal terminated
        rng = random.Random(20240611)
        while not stop.wait(rng.uniform(0.1, 0.4)):
            status = engine.status()
            if not (0 <= status.idle <= status.open <= LIMIT and status.waiting >= 0):
                problems.append(f"broken invariant: {status}")
            pids = sorted(server.ids())
            if not pids:
                continue
            victims = pids if rng.random() < 0.1 else [rng.choice(pids)]
            row = server.conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                "FROM unnest(%s::int[]) AS pid",
                (victims,),
            ).fetchone()
            terminated += int(row[0]) if row else 0

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    threads.append(threading.Thread(target=chaos))
    for thread in threads:
        thread.start()
    try:
        time.sleep(SECONDS)
    finally:
        stop.set()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a caller hung"

    assert problems == []
    # Every kind of fault happened, and the pool did real work in between.
    assert terminated > 0
    for kind in ("ok", "timeout", "lost", "user-error", "bad-sql", "invalidated", "dropped"):
        assert outcomes[kind] > 0, (kind, outcomes)
    # Each terminated backend failed at most the one caller using it; every timeout
    # counted by the pool reached exactly one caller.
    assert outcomes["lost"] <= terminated, (outcomes, terminated)
    assert engine.status().timeouts_total == outcomes["timeout"]

    # No leaked slot, no waiter left, the counts whole.
    gc.collect()
    assert wait_until(lambda: engine.status().busy == 0), engine.status()
    status = engine.status()
    assert status.waiting == 0
    assert status.idle == status.open <= LIMIT
    assert status.opened_total - status.closed_total == status.open
    # Past the pre-ping window, all LIMIT slots serve at once (dead idle ones replaced),
    # and the pool's count equals what the server sees for this application.
    time.sleep((engine.config.pre_ping or 0) + 0.1)
    backends = open_connections(engine, server, LIMIT)
    assert len(backends) == LIMIT
    status = engine.status()
    assert status.open == LIMIT == len(server.ids())
    assert server.ids() == backends
    assert status.opened_total - status.closed_total == status.open
