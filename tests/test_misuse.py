"""Caller mistakes: forgotten connections, leaks, double returns, use after close, errors in
user code, reset and close failures, threads that die holding a connection and
KeyboardInterrupt while waiting. Every test ends by checking that the pool's counts are
whole: nothing lost, nobody left waiting.
"""

from __future__ import annotations

import gc
import logging
import re
import signal
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import (
    ArgumentError,
    PoolTimeoutError,
    QueuePool,
    ResourceClosedError,
    create_engine,
    text,
)

# -- a small fake driver ---------------------------------------------------------------


class FakeConnection:
    """Just enough DB-API to pool; counts what happened to it and can be told to fail."""

    def __init__(self) -> None:
        self.closed = False
        self.rollbacks = 0
        self.fail_rollback: BaseException | None = None
        self.fail_close: BaseException | None = None

    def cursor(self) -> Any:
        if self.closed:
            raise RuntimeError("closed")
        return None

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        if self.closed:
            raise RuntimeError("rollback on a closed connection")
        self.rollbacks += 1
        if self.fail_rollback is not None:
            raise self.fail_rollback

    def close(self) -> None:
        self.closed = True
        if self.fail_close is not None:
            raise self.fail_close


class FakeDriver:
    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []

    def connect(self) -> FakeConnection:
        conn = FakeConnection()
        self.connections.append(conn)
        return conn

    @property
    def live(self) -> int:
        return sum(not c.closed for c in self.connections)


# -- helpers -----------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def assert_whole(pool: QueuePool, *, open_: int | None = None) -> None:
    """Nothing checked out, nobody waiting, and (optionally) this many connections open."""
    status = pool.status()
    assert status.busy == 0, status
    assert status.waiting == 0, status
    assert status.idle == status.open, status
    if open_ is not None:
        assert status.open == open_, status


def assert_closed_and_replaced(pool: QueuePool, lost: FakeConnection) -> None:
    """``lost`` is closed and its slot free again: the next checkout opens a new one."""
    assert lost.closed
    assert_whole(pool, open_=0)
    with pool.connect() as conn:
        assert conn.driver_connection is not lost
    assert_whole(pool, open_=1)


def new_pool(driver: FakeDriver, **settings: Any) -> QueuePool:
    settings.setdefault("pool_timeout", 5)
    return QueuePool(driver.connect, **settings)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dbpool.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'misuse.db'}", pool_timeout=5)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER)")
    yield engine
    engine.dispose()


def count_rows(engine: dbpool.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def run_in_thread(target: Callable[[], Any], timeout: float = 20.0) -> list[Any]:
    """Run ``target`` in a daemon thread; return [result] or [exception] (empty if it hangs)."""
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome


# -- garbage-collected checkouts --------------------------------------------------------


def _forget_engine_connection(engine: dbpool.Engine) -> tuple[sqlite3.Connection, int]:
    conn = engine.connect()
    line = sys._getframe().f_lineno - 1
    conn.execute(text("INSERT INTO t VALUES (1)"))  # left uncommitted
    return conn.driver_connection, line


@pytest.mark.parametrize("janitor", [True, False], ids=["janitor", "no-janitor"])
def test_gc_engine_connection_is_reclaimed_with_a_warning_naming_the_checkout(
    tmp_path: Path, janitor: bool
) -> None:
    lifetime = 300 if janitor else 0  # no lifetimes and no leak detection: no janitor thread
    engine = create_engine(
        f"sqlite:///{tmp_path / 'gc.db'}", max_idle_connection_lifetime=lifetime, pool_timeout=5
    )
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER)")
    with pytest.warns(ResourceWarning) as caught:
        raw, line = _forget_engine_connection(engine)
        gc.collect()
    messages = [str(w.message) for w in caught]
    assert any(f"{__file__}:{line}" in m for m in messages), messages
    # Reclaimed by the pool itself, without waiting for another checkout.
    assert wait_until(lambda: engine.status().open == 0), engine.status()
    with pytest.raises(sqlite3.ProgrammingError):
        raw.execute("SELECT 1")  # the driver connection was closed ...
    assert count_rows(engine) == 0  # ... so its uncommitted insert is gone
    assert_whole(engine.pool, open_=1)
    status = engine.status()
    assert status.closed_total == status.opened_total - 1
    engine.dispose()


def test_gc_pooled_connection_is_reclaimed_with_a_warning_naming_the_checkout() -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1, max_idle_connection_lifetime=0)
    conn = pool.connect()
    line = sys._getframe().f_lineno - 1
    raw = conn.driver_connection
    with pytest.warns(ResourceWarning, match=re.escape(f"{__file__}:{line}")):
        del conn
        gc.collect()
    assert wait_until(lambda: raw.closed)
    assert wait_until(lambda: pool.status().open == 0), pool.status()
    with pool.connect() as again:
        assert again.driver_connection is not raw
    assert_whole(pool, open_=1)
    assert driver.live == 1
    pool.dispose()


@pytest.mark.parametrize("janitor", [True, False], ids=["janitor", "no-janitor"])
def test_gc_connection_in_a_reference_cycle_is_reclaimed(janitor: bool) -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1, max_idle_connection_lifetime=300 if janitor else 0)
    holder: dict[str, Any] = {}
    holder["self"] = holder  # only the cycle collector can free this
    holder["conn"] = pool.connect()
    del holder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert wait_until(lambda: pool.status().open == 0), pool.status()
    assert driver.live == 0
    pool.dispose()


def test_gc_inside_the_pools_critical_section_still_frees_the_slot_for_a_waiter() -> None:
    """The collector can run while the collecting thread holds the pool lock (an allocation
    inside the pool's critical section triggers it). The orphan's slot must still reach a
    waiter that is already queued, with no janitor and no new caller to notice it."""
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1, pool_timeout=0, max_idle_connection_lifetime=0)
    holder: dict[str, Any] = {"conn": pool.connect()}
    waiter = threading.Thread(target=lambda: results.extend(run_in_thread(_checkout_and_return)))
    results: list[Any] = []

    def _checkout_and_return() -> bool:
        with pool.connect():
            return True

    waiter.start()
    assert wait_until(lambda: pool.status().waiting == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pool._lock:  # as if the collector ran inside the pool's critical section
            holder.clear()
    waiter.join(20)
    assert results == [True]
    assert wait_until(lambda: pool.status().busy == 0)
    assert_whole(pool, open_=1)
    assert driver.live == 1
    pool.dispose()


# -- leak detection ------------------------------------------------------------------------


def _hold_and_capture(engine: dbpool.Engine, caplog: pytest.LogCaptureFixture) -> int:
    conn = engine.connect()
    line = sys._getframe().f_lineno - 1
    try:
        assert wait_until(lambda: "leak_detection_threshold" in caplog.text), caplog.text
    finally:
        conn.close()
    return line


@pytest.mark.parametrize("how", ["url", "keyword"])
def test_leak_detection_logs_a_warning_with_the_checkout_stack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    url = f"sqlite:///{tmp_path / 'leak.db'}"
    if how == "url":
        engine = create_engine(url + "?leak_detection_threshold=0.2")
    else:
        engine = create_engine(url, leak_detection_threshold=0.2)
    assert engine.config.leak_detection_threshold == 0.2
    caplog.set_level(logging.WARNING, logger="dbpool")
    line = _hold_and_capture(engine, caplog)
    leaks = [r for r in caplog.records if "leak_detection_threshold" in r.getMessage()]
    assert len(leaks) == 1  # reported once per checkout, not on every janitor pass
    assert leaks[0].levelno == logging.WARNING
    message = leaks[0].getMessage()
    assert f'File "{__file__}", line {line}, in _hold_and_capture' in message
    assert "test_leak_detection_logs_a_warning_with_the_checkout_stack" in message
    assert_whole(engine.pool, open_=1)
    engine.dispose()


def test_leak_detection_is_quiet_for_connections_returned_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'leak.db'}", leak_detection_threshold=1)
    caplog.set_level(logging.WARNING, logger="dbpool")
    for _ in range(20):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    time.sleep(2.0)  # twice the threshold with nothing checked out
    assert "leak_detection_threshold" not in caplog.text
    engine.dispose()


def test_leak_detection_off_by_default_starts_no_tracking(engine: dbpool.Engine) -> None:
    assert engine.config.leak_detection_threshold == 0
    with engine.connect() as conn:
        assert conn._record is not None
        assert conn._record.stack is None  # no stack captured: checkout stays cheap


# -- used after close, returned twice, returned to another pool ------------------------


def test_engine_connection_used_after_close(engine: dbpool.Engine) -> None:
    conn = engine.connect()
    conn.close()
    conn.close()  # closing again is allowed and does nothing
    for use in (
        lambda: conn.execute(text("SELECT 1")),
        lambda: conn.exec_driver_sql("SELECT 1"),
        lambda: conn.driver_connection,
        conn.begin,
        conn.commit,
        conn.invalidate,
    ):
        with pytest.raises(ResourceClosedError, match="closed"):
            use()
    assert conn.closed
    assert_whole(engine.pool, open_=1)
    with engine.connect() as again:  # the one connection is still there, usable
        assert again.execute(text("SELECT 1")).scalar() == 1


def test_pooled_connection_returned_twice_or_used_after_close() -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=2)
    conn = pool.connect()
    conn.close()
    with pytest.raises(ResourceClosedError, match="already been returned"):
        conn.close()
    with pytest.raises(ResourceClosedError, match="already been returned"):
        conn.invalidate()
    with pytest.raises(ResourceClosedError):
        conn.cursor()
    with pytest.raises(ResourceClosedError):
        conn.commit()
    assert "returned" in repr(conn)
    assert_whole(pool, open_=1)
    with pool.connect() as a, pool.connect() as b:  # both slots still usable
        assert a.driver_connection is not b.driver_connection
    assert_whole(pool, open_=2)
    pool.dispose()


def test_record_checked_in_twice_raises_and_counts_stay_right() -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=2)
    record = pool.checkout()
    pool.checkin(record)
    with pytest.raises(ResourceClosedError, match="already been returned"):
        pool.checkin(record)
    with pytest.raises(ResourceClosedError, match="already been returned"):
        pool.invalidate(record)
    assert_whole(pool, open_=1)
    first, second = pool.checkout(), pool.checkout()
    assert first is not second  # a corrupt idle list would hand the same one out twice
    pool.checkin(first)
    pool.checkin(second)
    assert_whole(pool, open_=2)
    assert driver.live == 2
    pool.dispose()


def test_record_returned_to_another_pool_raises_and_counts_stay_right() -> None:
    driver = FakeDriver()
    mine, other = new_pool(driver, connection_limit=1), new_pool(driver, connection_limit=1)
    record = mine.checkout()
    with pytest.raises(ArgumentError, match="another pool"):
        other.checkin(record)
    with pytest.raises(ArgumentError, match="another pool"):
        other.invalidate(record)
    assert other.status().open == 0
    assert mine.status().busy == 1
    assert not record.dbapi_connection.closed
    mine.checkin(record)
    assert_whole(mine, open_=1)
    assert_whole(other, open_=0)
    mine.dispose()


# -- exceptions in user code, reset and close --------------------------------------------


def test_exception_inside_connect_rolls_back_and_returns(engine: dbpool.Engine) -> None:
    with pytest.raises(ValueError):
        with engine.connect() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            int("not a number")  # a bug in the caller's code
    assert conn.closed
    assert count_rows(engine) == 0
    assert_whole(engine.pool, open_=1)


def test_exception_inside_begin_rolls_back_and_returns(engine: dbpool.Engine) -> None:
    with pytest.raises(KeyError):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            raise KeyError("boom")
    assert count_rows(engine) == 0
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert count_rows(engine) == 1
    assert_whole(engine.pool, open_=1)


class _RollbackFails(sqlite3.Connection):
    failure: BaseException | None = None

    def rollback(self) -> None:
        if _RollbackFails.failure is not None:
            raise _RollbackFails.failure
        super().rollback()


@pytest.mark.parametrize(
    "failure", [sqlite3.OperationalError("disk I/O error"), KeyboardInterrupt()]
)
def test_rollback_failing_on_close_discards_the_connection_and_keeps_the_slot(
    tmp_path: Path, failure: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'rb.db'}", connect_args={"factory": _RollbackFails}
    )
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER)")
    conn = engine.connect()
    raw = conn.driver_connection
    conn.execute(text("INSERT INTO t VALUES (1)"))
    _RollbackFails.failure = failure
    try:
        with pytest.raises(type(failure)) if isinstance(failure, KeyboardInterrupt) else _noop():
            conn.close()
    finally:
        _RollbackFails.failure = None
    assert conn.closed
    with pytest.raises(sqlite3.ProgrammingError):
        raw.execute("SELECT 1")  # discarded, not returned in an unknown state
    assert_whole(engine.pool, open_=0)
    assert count_rows(engine) == 0
    assert_whole(engine.pool, open_=1)
    engine.dispose()


class _noop:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


@pytest.mark.parametrize(
    "failure", [RuntimeError("reset failed"), KeyboardInterrupt()], ids=["error", "interrupt"]
)
def test_reset_failing_on_checkin_keeps_the_slot(failure: BaseException) -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1)
    conn = pool.connect()
    raw = conn.driver_connection
    raw.fail_rollback = failure
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            conn.close()
    else:
        conn.close()
    assert_closed_and_replaced(pool, raw)
    pool.dispose()


def test_keyboard_interrupt_during_pre_ping_keeps_the_slot() -> None:
    driver = FakeDriver()
    interrupt = [True]

    def ping(conn: FakeConnection) -> None:
        if interrupt.pop() if interrupt else False:
            raise KeyboardInterrupt

    pool = QueuePool(driver.connect, connection_limit=1, pool_timeout=2, ping=ping, pre_ping=0)
    with pool.connect() as conn:
        first = conn.driver_connection
    with pytest.raises(KeyboardInterrupt):
        pool.connect()  # interrupted mid-ping: the connection's state is unknown
    assert_closed_and_replaced(pool, first)
    pool.dispose()


def test_driver_close_failing_keeps_the_slot() -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1)
    conn = pool.connect()
    raw = conn.driver_connection
    raw.fail_rollback = RuntimeError("reset failed")
    raw.fail_close = RuntimeError("close failed too")
    conn.close()
    assert_whole(pool, open_=0)
    with pool.connect():
        pass
    conn = pool.connect()
    conn.driver_connection.fail_close = RuntimeError("close failed")
    conn.invalidate()
    assert_whole(pool, open_=0)
    assert pool.status().closed_total == 2
    pool.dispose()


def test_custom_close_raising_keeps_the_slot() -> None:
    driver = FakeDriver()

    def close(conn: FakeConnection) -> None:
        conn.closed = True
        raise RuntimeError("close hook failed")

    pool = QueuePool(driver.connect, connection_limit=1, pool_timeout=2, close=close)
    conn = pool.connect()
    conn.invalidate()
    assert_whole(pool, open_=0)
    with pool.connect():
        pass
    pool.dispose()
    assert_whole(pool, open_=0)


# -- threads that die holding a connection -------------------------------------------------


@pytest.mark.parametrize("janitor", [True, False], ids=["janitor", "no-janitor"])
@pytest.mark.parametrize("how", ["return", "raise"])
def test_thread_dying_with_a_connection_frees_it_for_a_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, janitor: bool, how: str
) -> None:
    # pool_timeout=0: the waiter would wait forever if the dead thread's slot were lost.
    engine = create_engine(
        f"sqlite:///{tmp_path / 'dead.db'}",
        connection_limit=1,
        pool_timeout=0,
        max_idle_connection_lifetime=300 if janitor else 0,
    )
    died: list[str] = []  # not the exception itself: its traceback would keep the frame alive
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(repr(args.exc_value)))
    warnings.simplefilter("ignore", ResourceWarning)
    holding, go = threading.Event(), threading.Event()

    def holder() -> None:
        conn = engine.connect()
        conn.execute(text("SELECT 1"))
        holding.set()
        go.wait()
        if how == "raise":
            raise RuntimeError("the thread dies")

    dead = threading.Thread(target=holder, daemon=True)
    dead.start()
    assert holding.wait(10)

    def waiter() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT 2")).scalar_one())

    waiting = threading.Thread(target=lambda: results.extend(run_in_thread(waiter)))
    results: list[Any] = []
    waiting.start()
    assert wait_until(lambda: engine.status().waiting == 1)
    go.set()
    dead.join(10)
    waiting.join(20)
    assert results == [2]
    assert len(died) == (1 if how == "raise" else 0)
    assert wait_until(lambda: engine.status().busy == 0)
    assert_whole(engine.pool, open_=1)
    engine.dispose()


def test_many_threads_dying_with_connections_lose_no_slot() -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=3, pool_timeout=10)
    warnings.simplefilter("ignore", ResourceWarning)

    def careless() -> None:
        conn = pool.connect()
        time.sleep(0.001)
        del conn

    threads = [threading.Thread(target=careless) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert wait_until(lambda: pool.status().busy == 0), pool.status()
    assert_whole(pool)
    assert driver.live == pool.status().open
    with pool.connect(), pool.connect(), pool.connect():
        pass
    pool.dispose()


# -- KeyboardInterrupt inside a wait ---------------------------------------------------------


@pytest.fixture
def sigint_raises(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], threading.Timer]:
    """Returns a function that delivers a real SIGINT to the main thread after a delay."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident
    assert main is not None
    timers: list[threading.Timer] = []

    def schedule(delay: float) -> threading.Timer:
        timer = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        timers.append(timer)
        return timer

    yield schedule  # type: ignore[misc]
    for timer in timers:
        timer.cancel()
        timer.join()
    signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_while_waiting_leaves_no_phantom_waiter(
    sigint_raises: Callable[[float], threading.Timer],
) -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1, pool_timeout=0)  # wait forever
    held = pool.connect()
    main = threading.main_thread().ident or 0

    def interrupt_once_waiting() -> None:
        assert wait_until(lambda: pool.status().waiting == 1)
        signal.pthread_kill(main, signal.SIGINT)

    killer = threading.Thread(target=interrupt_once_waiting, daemon=True)
    killer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.connect()
    killer.join(10)
    assert time.monotonic() - started < 10
    assert pool.status().waiting == 0
    # The connection now goes idle (not to a phantom waiter) and serves the next caller.
    raw = held.driver_connection
    held.close()
    assert_whole(pool, open_=1)
    with pool.connect() as conn:
        assert conn.driver_connection is raw
    assert_whole(pool, open_=1)
    assert driver.live == 1
    pool.dispose()


def test_keyboard_interrupt_racing_hand_offs_never_loses_a_slot(
    sigint_raises: Callable[[float], threading.Timer],
) -> None:
    """The interrupt lands around the moment the connection is handed over: either the
    waiter got it first (and returns it) or the pool takes it back; never lost."""
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1, pool_timeout=5)
    warnings.simplefilter("ignore", ResourceWarning)
    interrupted_waiting = interrupted_later = 0
    for i in range(40):
        held = pool.connect()
        releaser = threading.Timer(0.02, held.close)
        releaser.start()
        timer = sigint_raises(0.015 + (i % 10) * 0.002)
        try:
            conn = pool.connect()
        except KeyboardInterrupt:
            interrupted_waiting += 1
        else:
            try:
                timer.join()  # the signal lands here at the latest
                time.sleep(0.01)
            except KeyboardInterrupt:
                interrupted_later += 1
            conn.close()
        releaser.join()
        assert wait_until(lambda: pool.status().busy == 0), (i, pool.status())
        assert pool.status().waiting == 0, (i, pool.status())
    assert interrupted_waiting + interrupted_later == 40
    assert_whole(pool)
    with pool.connect():
        pass
    assert driver.live == pool.status().open == 1
    pool.dispose()


def test_pool_timeout_is_well_formed_after_an_interrupted_waiter(
    sigint_raises: Callable[[float], threading.Timer],
) -> None:
    driver = FakeDriver()
    pool = new_pool(driver, connection_limit=1, pool_timeout=0.3)
    held = pool.connect()
    sigint_raises(0.05)
    with pytest.raises(KeyboardInterrupt):
        pool.connect()
    with pytest.raises(PoolTimeoutError) as info:
        pool.connect()
    assert info.value.code == "P2024"
    assert info.value.connection_limit == 1
    assert info.value.pool_timeout == 0.3
    assert info.value.waited >= 0.3
    status = pool.status()
    assert status.waiting == 0
    assert status.timeouts_total == 1
    held.close()
    assert_whole(pool, open_=1)
    pool.dispose()
