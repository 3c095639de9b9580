"""The janitor thread: idle and lifetime eviction, jitter, weak reference, no polling.

Lifetimes here are short (tenths of a second) and every wait for the janitor is generous,
so a loaded machine makes these tests slower, never red.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
import weakref
from typing import Any

import pytest

from dbpool import QueuePool
from tests.fakedb import FakeConnection, FakeDB, MakePool, assert_consistent, wait_for


@pytest.fixture
def pool_defaults() -> dict[str, Any]:
    return {"connection_limit": 4}


def janitor_thread(pool: QueuePool) -> threading.Thread:
    janitor = pool._janitor
    assert janitor is not None
    return janitor._thread


def count_sweeps(pool: QueuePool) -> list[int]:
    """Count the janitor's sweeps (it calls ``pool.sweep_locked`` each time it wakes)."""
    counter = [0]
    real = pool.sweep_locked

    def counting(now: float) -> Any:
        counter[0] += 1
        return real(now)

    pool.sweep_locked = counting  # type: ignore[method-assign]
    return counter


# -- eviction ---------------------------------------------------------------------------


def test_idle_connections_are_closed_after_the_idle_lifetime(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(max_idle_connection_lifetime=0.2)
    a, b = pool.connect(), pool.connect()
    a.close()
    b.close()
    returned = time.monotonic()
    assert wait_for(lambda: db.live == 0, timeout=10)
    assert time.monotonic() - returned >= 0.15
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0  # even if that leaves none open
    with pool.connect() as conn:  # the next checkout opens one again
        assert conn.driver_connection is db.connections[2]


def test_idle_connections_are_kept_within_the_idle_lifetime(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(max_idle_connection_lifetime=2)
    pool.connect().close()
    time.sleep(0.5)
    assert db.live == 1
    assert pool.status().idle == 1


def test_using_a_connection_restarts_its_idle_clock(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, max_idle_connection_lifetime=0.6)
    for _ in range(6):
        pool.connect().close()
        time.sleep(0.15)  # 0.9 s in all: longer than the lifetime, but never idle that long
    assert db.opened == 1
    assert wait_for(lambda: db.live == 0, timeout=10)


def test_idle_connections_past_their_lifetime_are_retired(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(max_idle_connection_lifetime=0, max_connection_lifetime=0.3)
    pool.connect().close()
    opened = time.monotonic()
    assert wait_for(lambda: db.live == 0, timeout=10)
    assert time.monotonic() - opened >= 0.25  # 0.3 s less at most 10 % jitter
    assert_consistent(pool, db, busy=0)


def test_a_busy_connection_is_retired_on_return_never_mid_use(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(max_idle_connection_lifetime=0, max_connection_lifetime=0.2)
    conn = pool.connect()
    driver_conn = conn.driver_connection
    time.sleep(0.6)  # three lifetimes
    assert not driver_conn.closed
    conn.close()
    assert driver_conn.closed  # at once, on return
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0


def test_a_connection_expiring_before_the_janitor_wakes_still_goes_on_time(
    db: FakeDB, make_pool: MakePool
) -> None:
    # The janitor sleeps until the earliest deadline it knows of. A connection returned
    # with an earlier one must wake it, or it lingers past its lifetime.
    pool = make_pool(max_idle_connection_lifetime=300, max_connection_lifetime=3)
    older = pool.connect()  # expires 2.7 to 3.0 s from now
    time.sleep(1.5)
    newer = pool.connect()  # expires 4.2 to 4.5 s from the start
    newer.close()
    janitor = pool._janitor
    assert janitor is not None
    assert wait_for(lambda: janitor.due > time.monotonic())  # asleep till newer's deadline
    older_conn = older.driver_connection
    older.close()
    assert wait_for(lambda: older_conn.closed, timeout=10)
    assert not db.connections[1].closed  # closed by its own deadline, not the newer one's


def test_lifetimes_are_jittered_downwards(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=20, max_connection_lifetime=100)
    held = [pool.connect() for _ in range(20)]
    lifetimes = [r.expires_at - r.created_at for r in pool._records]
    assert all(90 <= life <= 100 for life in lifetimes), lifetimes
    assert len(set(lifetimes)) > 10  # they do not all expire together
    for conn in held:
        conn.close()


# -- the thread -------------------------------------------------------------------------


def test_one_named_daemon_thread_per_pool(make_pool: MakePool) -> None:
    first, second = make_pool(), make_pool()
    first.connect().close()
    second.connect().close()
    threads = {janitor_thread(first), janitor_thread(second)}
    assert len(threads) == 2
    for thread in threads:
        assert re.fullmatch(r"dbpool-janitor-\d+", thread.name)
        assert thread.daemon
        assert thread.is_alive()


def test_no_janitor_when_nothing_expires(make_pool: MakePool) -> None:
    pool = make_pool(max_idle_connection_lifetime=0, max_connection_lifetime=0)
    pool.connect().close()
    assert pool._janitor is None


def test_dispose_stops_and_joins_the_thread(make_pool: MakePool) -> None:
    pool = make_pool()
    pool.connect().close()
    thread = janitor_thread(pool)
    pool.dispose()
    assert not thread.is_alive()  # joined before dispose returned


def test_restarting_a_pool_does_not_accumulate_janitors(make_pool: MakePool) -> None:
    from dbpool.janitor import Janitor

    pool = make_pool()
    for _ in range(20):
        pool.connect().close()
        pool.dispose()
    gc.collect()
    assert sum(isinstance(o, Janitor) for o in gc.get_objects()) <= 1


def test_the_janitor_holds_only_a_weak_reference(db: FakeDB) -> None:
    pool = QueuePool(db.connect, connection_limit=2)
    pool.connect().close()
    thread = janitor_thread(pool)
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
    thread.join(10)
    assert not thread.is_alive()


def test_the_janitor_survives_a_failing_close(db: FakeDB, make_pool: MakePool) -> None:
    closed: list[FakeConnection] = []

    def failing_close(conn: FakeConnection) -> None:
        conn.close()
        closed.append(conn)
        raise RuntimeError("close failed")

    pool = make_pool(max_idle_connection_lifetime=0.2, close=failing_close)
    pool.connect().close()
    assert wait_for(lambda: len(closed) == 1, timeout=10)
    assert wait_for(lambda: pool.status().open == 0)  # the slot was freed all the same
    pool.connect().close()  # and it keeps working
    assert wait_for(lambda: len(closed) == 2, timeout=10)
    assert janitor_thread(pool).is_alive()
    assert_consistent(pool, db, busy=0)


def test_the_janitor_survives_an_error_in_a_sweep(
    db: FakeDB, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(max_idle_connection_lifetime=0.2)
    real = pool.sweep_locked
    failed = []

    def fail_once(now: float) -> Any:
        if not failed:
            failed.append(now)
            raise RuntimeError("sweep bug")
        return real(now)

    pool.sweep_locked = fail_once  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="dbpool"):
        pool.connect().close()
        assert wait_for(lambda: db.live == 0, timeout=10)
    assert failed
    assert "the janitor hit an error" in caplog.text


# -- no polling -------------------------------------------------------------------------


def test_an_idle_pool_janitor_sleeps(make_pool: MakePool) -> None:
    pool = make_pool()  # idle lifetime 300 s: nothing is due for minutes
    pool.connect().close()
    sweeps = count_sweeps(pool)
    time.sleep(1)
    assert sweeps[0] <= 1


@pytest.mark.parametrize(
    "settings",
    [
        {"max_idle_connection_lifetime": 300},
        {"max_idle_connection_lifetime": 0, "max_connection_lifetime": 300},
        {"max_idle_connection_lifetime": 0, "leak_detection_threshold": 300},
    ],
    ids=["idle", "lifetime", "leak-detection"],
)
def test_busy_traffic_does_not_wake_the_janitor(
    make_pool: MakePool, settings: dict[str, float]
) -> None:
    # One connection stays checked out throughout, so the janitor always has a deadline
    # (its leak report) no later than anything the traffic below brings.
    pool = make_pool(connection_limit=3, **settings)
    held = pool.connect()
    pool.connect().close()
    time.sleep(0.1)  # let it settle on its first deadline
    sweeps = count_sweeps(pool)
    for _ in range(100):
        a = pool.connect()
        pool.connect().close()
        a.close()
        time.sleep(0.002)  # room for a woken janitor to run
    held.close()
    assert sweeps[0] <= 3  # not one per return, as when every return woke it


def test_the_janitor_is_woken_early_for_a_lost_connection(db: FakeDB, make_pool: MakePool) -> None:
    import warnings

    pool = make_pool(connection_limit=1)
    pool.connect().close()
    time.sleep(0.1)  # the janitor now sleeps for 300 s

    def leak() -> None:
        pool.connect()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        leak()
        gc.collect()
    assert wait_for(lambda: db.live == 0)
    assert_consistent(pool, db, busy=0)


# -- leak detection ---------------------------------------------------------------------


def test_a_connection_held_too_long_is_reported_once(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(leak_detection_threshold=0.2)
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        conn = pool.connect()
        assert wait_for(lambda: "checked out for more than" in caplog.text, timeout=10)
        time.sleep(0.3)
        conn.close()
    reports = [r for r in caplog.records if "checked out for more than" in r.getMessage()]
    assert len(reports) == 1
    assert "test_a_connection_held_too_long_is_reported_once" in reports[0].getMessage()


def test_a_connection_returned_in_time_is_not_reported(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(leak_detection_threshold=0.5)
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        pool.connect().close()
        time.sleep(0.8)
    assert "checked out for more than" not in caplog.text
