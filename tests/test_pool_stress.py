"""Stress: many threads, thousands of checkouts, errors and invalidations in user code.

Afterwards no connection may be lost or counted twice: the pool's counts, its events and
the fake server's live connections must all agree.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from dbpool import PoolTimeoutError, QueuePool
from tests.fakedb import FakeDB, OperationalError, assert_consistent

THREADS = 32
CHECKOUTS_PER_THREAD = 300  # 9,600 in all
LIMIT = 4


class UserError(Exception):
    pass


@pytest.mark.parametrize(
    "settings",
    [
        {},
        # A janitor evicting idle connections while they are handed around, pings that
        # sometimes fail, and connects that sometimes fail.
        {"max_idle_connection_lifetime": 0.005, "pre_ping": 0, "flaky": True},
        # Short pool_timeout: timeouts racing hand-offs.
        {"pool_timeout": 0.003},
    ],
    ids=["plain", "janitor-ping-flaky", "timeouts"],
)
def test_many_threads_lose_nothing(settings: dict[str, Any]) -> None:
    db = FakeDB()
    flaky = settings.pop("flaky", False)
    settings.setdefault("pool_timeout", 30)
    pool = QueuePool(db.connect, connection_limit=LIMIT, ping=db.ping, **settings)
    events: Counter[str] = Counter()
    events_lock = threading.Lock()

    def count(name: str) -> Any:
        def listener(*args: object) -> None:
            with events_lock:
                events[name] += 1

        return listener

    for name in ("connect", "checkout", "checkin", "close", "invalidate", "timeout"):
        pool.events.on(name, count(name))

    outcomes: Counter[str] = Counter()
    outcomes_lock = threading.Lock()
    peak = [0]
    failures: list[BaseException] = []

    ready = threading.Barrier(THREADS)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        mine: Counter[str] = Counter()
        ready.wait()  # everyone starts together, so they contend
        try:
            for _ in range(CHECKOUTS_PER_THREAD):
                if flaky and rng.random() < 0.02:
                    db.fail_connects = 1
                try:
                    with pool.connect() as conn:
                        driver_conn = conn.driver_connection
                        assert not driver_conn.closed
                        peak[0] = max(peak[0], db.live)
                        roll = rng.random()
                        if roll < 0.3:
                            conn.cursor().execute("UPDATE t SET a = 1")  # reset rolls back
                        if flaky and roll < 0.02:
                            db.ping_fails.add(driver_conn.number)
                        if roll < 0.1:
                            raise UserError
                        if roll < 0.15:
                            conn.invalidate()
                            mine["invalidated"] += 1
                            continue
                        time.sleep(0.0002 if roll < 0.2 else 0)  # let the others at the pool
                    mine["returned"] += 1
                except UserError:
                    mine["user errors"] += 1
                except PoolTimeoutError:
                    mine["timeouts"] += 1
                except OperationalError:  # a connect that failed
                    mine["connect errors"] += 1
        except BaseException as exc:
            failures.append(exc)
        with outcomes_lock:
            outcomes.update(mine)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(THREADS)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a worker is stuck"
    elapsed = time.monotonic() - start
    assert not failures, failures

    total = THREADS * CHECKOUTS_PER_THREAD
    assert sum(outcomes.values()) == total
    assert outcomes["user errors"] > 0
    assert outcomes["invalidated"] > 0
    assert peak[0] <= LIMIT
    assert elapsed < 30
    assert_consistent(pool, db, busy=0)
    status = pool.status()
    assert status.timeouts_total == outcomes["timeouts"] == events["timeout"]
    assert status.opened_total == events["connect"]
    assert status.closed_total == events["close"]
    assert events["invalidate"] == outcomes["invalidated"]
    assert events["checkout"] == total - outcomes["timeouts"] - outcomes["connect errors"]
    # Every checkout was either returned (checkin) or invalidated.
    assert events["checkin"] + events["invalidate"] == events["checkout"]
    # Every connection that is not idle now was closed exactly once.
    assert db.double_closes == 0
    assert sorted(c.number for c in db.open_connections()) == sorted(
        r.dbapi_connection.number for r in pool._idle
    )
    pool.dispose()
    assert db.live == 0
    assert_consistent(pool, db, busy=0)
