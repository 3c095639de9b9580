"""QueuePool semantics on the fake driver: growth, limit, FIFO, timeouts, dispose, events.

Timing assertions use generous margins: these tests must pass on a loaded 2-core machine.
"""

from __future__ import annotations

import gc
import logging
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import dbpool.pool as pool_module
from dbpool import (
    ConfigError,
    PoolDisposedError,
    PooledConnection,
    PoolTimeoutError,
    QueuePool,
    ResourceClosedError,
)
from tests.fakedb import (
    FakeConnection,
    FakeDB,
    MakePool,
    OperationalError,
    assert_consistent,
    wait_for,
)


def start_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def join_all(threads: list[threading.Thread], timeout: float = 30) -> None:
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a thread is stuck"


def queue_up(pool: QueuePool, target: Callable[[], object], count: int) -> threading.Thread:
    """Start ``target`` in a thread and return once it waits in the queue (``count`` deep)."""
    thread = start_thread(target)
    assert wait_for(lambda: pool.status().waiting == count), pool.status()
    return thread


def queue_failing_waiters(
    pool: QueuePool, count: int
) -> tuple[list[BaseException], list[threading.Thread]]:
    """Queue ``count`` threads for a connection, in order; each records in the returned
    list what its ``pool.connect()`` raised (a connection it gets stays checked out)."""
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.connect()
        except BaseException as exc:
            errors.append(exc)

    return errors, [queue_up(pool, waiter, n) for n in range(1, count + 1)]


def wait_for_the_connection_back(pool: QueuePool, delay: float) -> float:
    """Check out the pool's one connection, have another thread return it after ``delay``
    seconds, and meanwhile check out again: returns how long that second checkout waited."""
    held = pool.connect()
    timer = threading.Timer(delay, held.close)
    timer.start()
    start = time.monotonic()
    with pool.connect():
        waited = time.monotonic() - start
    timer.join()
    return waited


def janitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dbpool-janitor-")]


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("connection_limit", 0),
        ("connection_limit", -1),
        ("connection_limit", "many"),
        ("connection_limit", True),
        ("pool_timeout", -1),
        ("pool_timeout", "soon"),
        ("pool_timeout", float("nan")),
        ("max_idle_connection_lifetime", -0.5),
        ("max_connection_lifetime", float("inf")),
        ("pre_ping", "sometimes"),
        ("leak_detection_threshold", -3),
    ],
)
def test_bad_settings_raise_config_error_naming_them(db: FakeDB, name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        QueuePool(db.connect, **{name: value})


def test_connection_limit_defaults_to_cores_times_two_plus_one(db: FakeDB) -> None:
    import psutil

    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    assert QueuePool(db.connect).connection_limit == cores * 2 + 1


# -- lazy start and growth --------------------------------------------------------------


def test_nothing_is_opened_before_the_first_checkout(db: FakeDB, make_pool: MakePool) -> None:
    before = len(janitor_threads())
    pool = make_pool()
    assert db.connects_attempted == 0
    assert pool.status().open == 0
    assert len(janitor_threads()) == before  # not even the janitor
    with pool.connect():
        assert db.opened == 1
    assert len(janitor_threads()) == before + 1


def test_grows_on_demand_up_to_the_limit_and_reuses(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=3)
    a = pool.connect()
    assert (db.opened, pool.status().open) == (1, 1)
    b = pool.connect()
    assert (db.opened, pool.status().open) == (2, 2)
    a.close()
    c = pool.connect()  # the idle one, not a new one
    assert db.opened == 2
    assert c.driver_connection is db.connections[0]
    b.close()
    c.close()
    assert_consistent(pool, db, busy=0)
    assert pool.status().idle == 2


def test_the_most_recently_returned_connection_is_reused_first(make_pool: MakePool) -> None:
    # LIFO reuse lets the least used connections age out under the idle lifetime.
    pool = make_pool(connection_limit=3)
    a, b, c = pool.connect(), pool.connect(), pool.connect()
    conns = [x.driver_connection for x in (a, b, c)]
    b.close()
    a.close()
    c.close()
    with pool.connect() as again:
        assert again.driver_connection is conns[2]


def test_limit_is_never_exceeded_under_load(db: FakeDB, make_pool: MakePool) -> None:
    limit = 4
    db.connect_delay = 0.002
    pool = make_pool(connection_limit=limit, pool_timeout=30)
    stop = threading.Event()
    samples: list[tuple[int, int, int]] = []

    def sample() -> None:
        while not stop.is_set():
            status = pool.status()
            samples.append((status.open, status.busy, db.live))
            time.sleep(0.0005)

    def work() -> None:
        for i in range(40):
            with pool.connect() as conn:
                assert not conn.driver_connection.closed
                time.sleep(0.0005)
            if i % 10 == 0:
                pool.connect().invalidate()  # churn: new connections keep being opened

    sampler = start_thread(sample)
    join_all([start_thread(work) for _ in range(16)])
    stop.set()
    sampler.join()
    assert len(samples) > 10
    assert max(s[0] for s in samples) <= limit
    assert max(s[1] for s in samples) <= limit
    assert max(s[2] for s in samples) <= limit
    assert max(s[1] for s in samples) == limit  # the load did fill the pool
    assert_consistent(pool, db, busy=0)


# -- fairness ---------------------------------------------------------------------------


def test_grants_are_strictly_fifo_with_staggered_arrivals(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=30)
    served: list[int] = []
    held = pool.connect()

    def waiter(number: int) -> Callable[[], None]:
        def run() -> None:
            with pool.connect():
                served.append(number)

        return run

    threads = [queue_up(pool, waiter(i), i + 1) for i in range(8)]
    held.close()
    join_all(threads)
    assert served == list(range(8))


def test_fifo_holds_with_several_connections_in_play(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=3, pool_timeout=30)
    served: list[int] = []
    lock = threading.Lock()
    held = [pool.connect() for _ in range(3)]
    release = threading.Event()

    def waiter(number: int) -> Callable[[], None]:
        def run() -> None:
            with pool.connect():
                with lock:
                    served.append(number)
                release.wait()

        return run

    threads = [queue_up(pool, waiter(i), i + 1) for i in range(6)]
    for count, conn in enumerate(held, 1):
        conn.close()
        assert wait_for(lambda count=count: len(served) == count)  # type: ignore[misc]
    assert served == [0, 1, 2]
    release.set()
    join_all(threads)
    assert sorted(served[3:]) == [3, 4, 5]


def test_a_newcomer_never_overtakes_a_waiter(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=30)
    order: list[str] = []
    held = pool.connect()

    def waiter() -> None:
        with pool.connect():
            order.append("waiter")
            time.sleep(0.05)

    thread = queue_up(pool, waiter, 1)
    # Return the connection and ask for one at once, before the waiter can even wake up:
    # a barging pool would give it straight back to this thread.
    held.close()
    with pool.connect():
        order.append("newcomer")
    join_all([thread])
    assert order == ["waiter", "newcomer"]


# -- timeouts ---------------------------------------------------------------------------


def test_timeout_fires_after_pool_timeout_not_before(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=0.5)
    with pool.connect():
        start = time.monotonic()
        with pytest.raises(PoolTimeoutError) as info:
            pool.connect()
        elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 3
    error = info.value
    assert error.code == "P2024"
    assert error.connection_limit == 1
    assert error.pool_timeout == 0.5
    assert 0.45 <= error.waited <= elapsed
    message = str(error)
    assert message.startswith("Timed out fetching a new connection from the connection pool.")
    assert "(current connection limit: 1, pool timeout: 0.5 s" in message
    assert "1 open, 1 busy, 0 waiting" in message
    status = pool.status()
    assert status.timeouts_total == 1
    assert status.waiting == 0


def test_a_connection_returned_within_the_timeout_is_granted(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=3)
    waited = wait_for_the_connection_back(pool, 0.3)
    assert 0.25 <= waited < 3
    assert pool.status().timeouts_total == 0
    assert pool.wait_histogram.count == 1
    assert pool.wait_histogram.sum >= 0.25


def test_timeout_message_counts_other_waiters(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=0.4)
    held = pool.connect()
    errors, threads = queue_failing_waiters(pool, 2)
    join_all(threads)
    held.close()
    assert [type(e) for e in errors] == [PoolTimeoutError, PoolTimeoutError]
    assert "1 waiting" in str(errors[0])  # the second was still queued behind it
    assert pool.status().timeouts_total == 2


def test_a_timeout_error_survives_pickling(make_pool: MakePool) -> None:
    # multiprocessing and Django's parallel test runner send errors between processes
    pool = make_pool(connection_limit=1, pool_timeout=0.1)
    held = pool.connect()
    with pytest.raises(PoolTimeoutError) as caught:
        pool.connect()
    held.close()
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is PoolTimeoutError and str(copy) == str(caught.value)
    assert (copy.code, copy.connection_limit, copy.pool_timeout) == ("P2024", 1, 0.1)
    assert copy.waited == caught.value.waited


def test_pool_timeout_zero_waits_without_a_deadline(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeouts: list[float | None] = []
    real_wait = pool_module._Waiter.wait

    def recording_wait(self: pool_module._Waiter, timeout: float | None) -> bool:
        timeouts.append(timeout)
        return real_wait(self, timeout)

    monkeypatch.setattr(pool_module._Waiter, "wait", recording_wait)
    pool = make_pool(connection_limit=1, pool_timeout=0)
    assert wait_for_the_connection_back(pool, 1.5) >= 1.4
    assert timeouts == [None]


@pytest.mark.slow
def test_pool_timeout_zero_waits_beyond_the_default_timeout(make_pool: MakePool) -> None:
    default = pool_module.DEFAULTS["pool_timeout"]
    pool = make_pool(connection_limit=1, pool_timeout=0)
    assert wait_for_the_connection_back(pool, default + 0.5) >= default + 0.4


def test_a_hand_off_racing_a_timeout_never_loses_the_connection(
    db: FakeDB, make_pool: MakePool
) -> None:
    # Timeouts this short expire while connections are being handed over: whichever side
    # wins, the connection must end up with the waiter or back in the pool.
    pool = make_pool(connection_limit=2, pool_timeout=0.002)
    timeouts = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal timeouts
        for i in range(300):
            try:
                with pool.connect():
                    if i % 3 == 0:
                        time.sleep(0.0005)
            except PoolTimeoutError:
                with lock:
                    timeouts += 1

    join_all([start_thread(work) for _ in range(8)])
    assert_consistent(pool, db, busy=0)
    status = pool.status()
    assert status.timeouts_total == timeouts
    assert status.idle == status.open
    for _ in range(status.connection_limit):  # every slot is usable again
        pool.connect()


# -- opening connections ----------------------------------------------------------------


def test_creation_failure_frees_the_slot(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=0)  # 0: no retries
    db.fail_connects = 1
    with pytest.raises(OperationalError):
        pool.connect()
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0
    with pool.connect():
        assert db.opened == 1


def test_creation_failure_lets_the_next_waiter_try(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=0)
    held = pool.connect()
    outcomes: dict[str, object] = {}

    def waiter(name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                with pool.connect() as conn:
                    outcomes[name] = conn.driver_connection
            except Exception as exc:
                outcomes[name] = exc

        return run

    first = queue_up(pool, waiter("first"), 1)
    second = queue_up(pool, waiter("second"), 2)
    db.fail_connects = 1
    held.invalidate()  # frees the slot: the first waiter connects (and fails) in it
    join_all([first, second])
    assert isinstance(outcomes["first"], OperationalError)
    assert isinstance(outcomes["second"], FakeConnection)
    assert_consistent(pool, db, busy=0)


def test_connect_is_retried_with_backoff_within_pool_timeout(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=10)
    db.fail_connects = 3
    start = time.monotonic()
    with pool.connect():
        elapsed = time.monotonic() - start
    assert db.connects_attempted == 4
    # Backoff: 0.05, 0.1, 0.2 s, each with up to 50 % jitter off: at least 0.175 s.
    assert 0.15 <= elapsed < 5
    assert_consistent(pool, db, busy=0)


def test_connect_retries_stop_at_pool_timeout(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=0.5)
    db.fail_connects = 10**6
    start = time.monotonic()
    with pytest.raises(OperationalError):
        pool.connect()
    elapsed = time.monotonic() - start
    assert elapsed < 3
    assert db.connects_attempted >= 3
    assert_consistent(pool, db, busy=0)


def test_a_waiter_timing_out_behind_failing_connects_hears_why(db: FakeDB) -> None:
    attempts = 0
    release = threading.Event()

    def creator() -> FakeConnection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OperationalError("connection refused")
        release.wait(10)  # the retry hangs until the test has seen the timeout
        return db.connect()

    pool = QueuePool(creator, connection_limit=1, pool_timeout=0.5)
    first = start_thread(lambda: pool.connect().close())
    assert wait_for(lambda: attempts == 2)
    with pytest.raises(PoolTimeoutError) as info:
        pool.connect()
    release.set()
    join_all([first])
    pool.dispose()
    assert "The last attempt to connect failed: connection refused" in str(info.value)
    assert "0 open" in str(info.value)


def test_open_opens_one_connection(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=3)
    pool.open()
    assert db.opened == 1
    status = pool.status()
    assert (status.open, status.idle) == (1, 1)
    pool.open()  # already open: nothing more
    assert db.opened == 1


def test_open_fails_fast(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=3, pool_timeout=10)
    db.fail_connects = 1
    start = time.monotonic()
    with pytest.raises(OperationalError):
        pool.open()
    assert time.monotonic() - start < 2
    assert db.connects_attempted == 1  # no retries
    assert_consistent(pool, db, busy=0)
    pool.open()
    assert db.opened == 1


def test_open_while_the_only_slot_is_connecting_keeps_the_limit(
    db: FakeDB, make_pool: MakePool
) -> None:
    db.connect_delay = 0.3
    pool = make_pool(connection_limit=1)
    peak = 0

    def checkout() -> None:
        with pool.connect():
            pass

    thread = start_thread(checkout)
    assert wait_for(lambda: db.connects_attempted == 1)
    pool.open()
    peak = max(peak, db.live)
    join_all([thread])
    assert db.opened == 1
    assert peak <= 1
    assert_consistent(pool, db, busy=0)


# -- validation and reset ---------------------------------------------------------------


def test_pre_ping_only_after_the_idle_window(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, ping=db.ping, pre_ping=0.3)
    pool.connect().close()
    pool.connect().close()  # idle for microseconds: no ping
    assert db.pings == 0
    time.sleep(0.4)
    pool.connect().close()
    assert db.pings == 1


def test_pre_ping_defaults_to_half_a_second_when_a_ping_is_given(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=1, ping=db.ping)
    pool.connect().close()
    pool.connect().close()
    assert db.pings == 0
    time.sleep(0.6)
    pool.connect().close()
    assert db.pings == 1


def test_pre_ping_zero_pings_every_reuse(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, ping=db.ping, pre_ping=0)
    for _ in range(3):
        pool.connect().close()
    assert db.pings == 2  # a fresh connection is not pinged


def test_pre_ping_off_never_pings(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, ping=db.ping, pre_ping=False)
    pool.connect().close()
    time.sleep(0.05)
    pool.connect().close()
    assert db.pings == 0


def test_a_failed_ping_is_replaced_transparently(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, ping=db.ping, pre_ping=0)
    pool.connect().close()
    db.ping_fails.add(1)
    with pool.connect() as conn:
        assert conn.driver_connection is db.connections[1]
    assert db.connections[0].closed
    assert_consistent(pool, db, busy=0)


def test_a_connection_idle_past_its_lifetime_is_replaced_at_checkout(
    db: FakeDB, make_pool: MakePool
) -> None:
    # Even before the janitor gets to it.
    pool = make_pool(connection_limit=1, max_connection_lifetime=0.2)
    conn = pool.connect()
    first = conn.driver_connection
    time.sleep(0.1)
    conn.close()
    record = pool._idle[0]
    record.expires_at = record.fresh_until = time.monotonic()  # expired while idle
    with pool.connect() as again:
        assert again.driver_connection is not first
    assert first.closed
    assert_consistent(pool, db, busy=0)


def test_reset_rolls_back_only_an_open_transaction(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    with pool.connect():
        pass
    assert db.rollbacks == 0  # in_transaction is False: no round trip
    with pool.connect() as conn:
        conn.cursor().execute("UPDATE t SET a = 1")
    assert db.rollbacks == 1
    assert not db.connections[0].in_transaction


def test_reset_rolls_back_when_the_driver_cannot_tell(make_pool: MakePool) -> None:
    class Opaque:
        rollbacks = 0

        def rollback(self) -> None:
            self.rollbacks += 1

        def close(self) -> None:
            pass

    conn = Opaque()
    pool = QueuePool(lambda: conn, connection_limit=1)
    pool.connect().close()
    pool.dispose()
    assert conn.rollbacks == 1


def test_a_failing_reset_discards_the_connection(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    conn = pool.connect()
    conn.cursor().execute("UPDATE t SET a = 1")
    conn.driver_connection.closed = True  # the server went away: rollback raises
    db.opened -= 1  # it is gone as far as the fake server is concerned
    conn.close()
    status = pool.status()
    assert (status.open, status.closed_total) == (0, 1)
    with pool.connect() as again:
        assert again.driver_connection is db.connections[1]


# -- invalidate -------------------------------------------------------------------------


def test_invalidate_closes_the_connection_and_frees_its_slot(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=1)
    seen: list[tuple[object, object]] = []
    pool.events.on("invalidate", lambda conn, error: seen.append((conn, error)))
    conn = pool.connect()
    driver_conn = conn.driver_connection
    error = RuntimeError("broken")
    conn.invalidate(error)
    assert driver_conn.closed
    assert seen == [(driver_conn, error)]
    assert conn.closed
    with pytest.raises(ResourceClosedError):
        conn.invalidate()
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0
    with pool.connect() as again:
        assert again.driver_connection is not driver_conn


def test_invalidate_hands_the_slot_to_a_waiter(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    held = pool.connect()
    got: list[FakeConnection] = []

    def waiter() -> None:
        with pool.connect() as conn:
            got.append(conn.driver_connection)

    thread = queue_up(pool, waiter, 1)
    held.invalidate()
    join_all([thread])
    assert got == [db.connections[1]]
    assert_consistent(pool, db, busy=0)


def test_a_disconnect_makes_older_idle_connections_suspect(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=2, ping=db.ping, pre_ping=300)
    a, b = pool.connect(), pool.connect()
    a.close()
    pool.invalidate(b._record, OperationalError("gone"), disconnect=True)  # type: ignore[arg-type]
    b._record = None
    db.ping_fails.add(1)  # the idle one is dead too
    with pool.connect() as conn:  # within the ping window, but suspect: pinged, replaced
        assert conn.driver_connection is db.connections[2]
    assert db.pings == 1
    assert_consistent(pool, db, busy=0)


# -- dispose ----------------------------------------------------------------------------


def test_dispose_closes_idle_now_and_checked_out_on_return(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=2)
    busy = pool.connect()
    pool.connect().close()
    idle_conn = db.connections[1]
    pool.dispose()
    assert idle_conn.closed
    assert not busy.driver_connection.closed  # still in use: never closed under the user
    busy_conn = busy.driver_connection
    busy.close()
    assert busy_conn.closed
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0


def test_dispose_fails_waiters_and_the_pool_stays_usable(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=30)
    held = pool.connect()
    errors, threads = queue_failing_waiters(pool, 2)
    pool.dispose()
    join_all(threads)
    assert [type(e) for e in errors] == [PoolDisposedError, PoolDisposedError]
    held.close()
    assert_consistent(pool, db, busy=0)
    with pool.connect() as conn:
        assert not conn.driver_connection.closed
    assert pool.status().open == 1


def test_dispose_restarts_the_pool_and_its_janitor(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    pool.connect().close()
    first = pool._janitor
    assert first is not None and first._thread.is_alive()
    pool.dispose()
    assert not first._thread.is_alive()
    pool.connect().close()
    assert pool._janitor is not None and pool._janitor is not first
    assert pool._janitor._thread.is_alive()


def test_dispose_with_timeout_waits_then_force_closes(
    db: FakeDB, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(connection_limit=2)
    held = pool.connect()
    start = time.monotonic()
    pool.dispose(timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 3
    assert held.driver_connection.closed
    assert "still checked out after dispose" in caplog.text
    assert_consistent(pool, db)
    held.close()  # the user returns it later: nothing is counted twice
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0


def test_dispose_with_timeout_returns_once_everything_is_back(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=2)
    held = pool.connect()
    timer = threading.Timer(0.2, held.close)
    timer.start()
    start = time.monotonic()
    pool.dispose(timeout=10)
    assert time.monotonic() - start < 5
    timer.join()
    assert db.live == 0
    assert_consistent(pool, db, busy=0)


def checkout_pinging_across_dispose(
    make_pool: MakePool, *, ping_fails: bool, dispose_timeout: float | None
) -> tuple[QueuePool, PooledConnection]:
    """A checkout takes the pool's one idle connection and pings it slowly while
    ``dispose(dispose_timeout)`` runs; returns the pool and what the checkout got."""
    pinging = threading.Event()
    release = threading.Event()

    def slow_ping(conn: FakeConnection) -> None:
        pinging.set()
        release.wait(10)
        if ping_fails:
            raise OperationalError("gone")

    pool = make_pool(connection_limit=1, ping=slow_ping, pre_ping=0)
    pool.connect().close()
    got: list[PooledConnection] = []
    thread = start_thread(lambda: got.append(pool.connect()))
    assert pinging.wait(5)
    pool.dispose(timeout=dispose_timeout)
    release.set()
    join_all([thread])
    assert len(got) == 1, "the checkout failed"
    return pool, got[0]


def test_a_slow_ping_force_closed_by_dispose_keeps_the_slot_count(
    db: FakeDB, make_pool: MakePool
) -> None:
    # dispose(timeout) closes a connection while a checkout is still pinging it; the
    # checkout must not then open a replacement in the slot dispose already freed.
    pool, conn = checkout_pinging_across_dispose(make_pool, ping_fails=True, dispose_timeout=0.05)
    status = pool.status()
    assert status.open == db.live == 1, (status, db.live)
    conn.close()
    assert_consistent(pool, db, busy=0)


def test_a_connection_pinged_across_a_dispose_is_still_retired(
    db: FakeDB, make_pool: MakePool
) -> None:
    # A checkout took an idle connection just before dispose() and pings it: passing the
    # ping must not make it a connection of the new generation.
    pool, conn = checkout_pinging_across_dispose(make_pool, ping_fails=False, dispose_timeout=None)
    driver_conn = conn.driver_connection
    conn.close()
    assert driver_conn.closed  # returned after dispose: closed, not parked
    assert_consistent(pool, db, busy=0)
    assert pool.status().open == 0


def test_a_connection_opened_across_a_dispose_is_retired(db: FakeDB, make_pool: MakePool) -> None:
    db.connect_delay = 0.3
    pool = make_pool(connection_limit=1)
    got: list[PooledConnection] = []
    thread = start_thread(lambda: got.append(pool.connect()))
    assert wait_for(lambda: db.connects_attempted == 1)
    pool.dispose()  # while the connect is in flight
    join_all([thread])
    driver_conn = got[0].driver_connection
    got[0].close()
    assert driver_conn.closed
    assert_consistent(pool, db, busy=0)
    with pool.connect():  # and the pool starts afresh
        assert pool._janitor is not None


# -- status and events ------------------------------------------------------------------


def test_status_counts(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=3, pool_timeout=0.05)
    a, b = pool.connect(), pool.connect()
    b.close()
    status = pool.status()
    assert status.connection_limit == 3
    assert (status.open, status.busy, status.idle, status.waiting) == (2, 1, 1, 0)
    assert (status.opened_total, status.closed_total, status.timeouts_total) == (2, 0, 0)
    a.invalidate()
    c, d, e = pool.connect(), pool.connect(), pool.connect()
    with pytest.raises(PoolTimeoutError):
        pool.connect()
    status = pool.status()
    assert (status.open, status.busy, status.idle) == (3, 3, 0)
    assert (status.opened_total, status.closed_total, status.timeouts_total) == (4, 1, 1)
    for conn in (c, d, e):
        conn.close()
    assert_consistent(pool, db, busy=0)


def test_status_is_frozen(make_pool: MakePool) -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        make_pool().status().open = 3  # type: ignore[misc]


def test_events_fire_outside_the_lock(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=0.05)
    fired: list[str] = []

    def listener(name: str) -> Callable[..., None]:
        def run(*args: object) -> None:
            pool.status()  # would deadlock if the pool lock were held
            fired.append(name)

        return run

    for name in ("connect", "checkout", "checkin", "close", "invalidate", "timeout"):
        pool.events.on(name, listener(name))

    def exercise() -> None:
        conn = pool.connect()
        with pytest.raises(PoolTimeoutError):
            pool.connect()
        conn.close()
        pool.connect().invalidate()

    thread = start_thread(exercise)
    thread.join(10)
    assert not thread.is_alive(), "an event listener deadlocked on the pool lock"
    assert fired == [
        "connect", "checkout", "timeout", "checkin", "checkout", "invalidate", "close",
    ]  # fmt: skip


def test_a_raising_listener_is_logged_and_ignored(
    db: FakeDB, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(connection_limit=1)

    @pool.events.on("checkout")
    def explode(conn: object) -> None:
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.ERROR, logger="dbpool"), pool.connect():
        pass
    assert "listener bug" in caplog.text
    assert_consistent(pool, db, busy=0)


def test_unknown_event_names_are_rejected(make_pool: MakePool) -> None:
    with pytest.raises(ConfigError, match='Did you mean "checkout"'):
        make_pool().events.on("chekout", print)


# -- misuse: lost and double-returned connections --------------------------------------


def test_a_garbage_collected_connection_is_reclaimed(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=5)

    def leak_one() -> None:
        pool.connect()  # the warning names this line

    with pytest.warns(ResourceWarning, match="garbage-collected without being closed") as record:
        leak_one()
        gc.collect()
    line = leak_one.__code__.co_firstlineno + 1
    assert f"test_pool.py:{line})" in str(record[0].message)
    assert wait_for(lambda: db.connections[0].closed)
    assert_consistent(pool, db, busy=0)
    with pool.connect():  # the slot is free again
        pass


def test_a_garbage_collected_connection_unblocks_a_waiter(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=10)
    holder: list[PooledConnection] = [pool.connect()]
    got: list[PooledConnection] = []
    thread = queue_up(pool, lambda: got.append(pool.connect()), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        holder.clear()
        gc.collect()
    join_all([thread])
    assert got[0].driver_connection is db.connections[1]
    got[0].close()
    assert_consistent(pool, db, busy=0)


def test_returning_twice_raises_without_corrupting_counts(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=2)
    conn = pool.connect()
    conn.close()
    with pytest.raises(ResourceClosedError):
        conn.close()
    with pytest.raises(ResourceClosedError):
        conn.driver_connection  # noqa: B018
    assert_consistent(pool, db, busy=0)
    assert pool.status().idle == 1
    a, b = pool.connect(), pool.connect()
    assert a.driver_connection is not b.driver_connection


def test_keyboard_interrupt_while_waiting_leaves_no_phantom_waiter(
    db: FakeDB, make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool(connection_limit=1)
    held = pool.connect()

    def interrupted(self: pool_module._Waiter, timeout: float | None) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(pool_module._Waiter, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.connect()
    assert pool.status().waiting == 0
    monkeypatch.undo()
    held.close()
    with pool.connect():  # the returned connection went to the idle set, not a ghost
        pass
    assert_consistent(pool, db, busy=0)


@pytest.mark.parametrize("grant", ["connection", "slot"])
def test_keyboard_interrupt_after_a_grant_gives_it_back(
    db: FakeDB, make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, grant: str
) -> None:
    pool = make_pool(connection_limit=1)
    held = pool.connect()
    real_wait = pool_module._Waiter.wait

    def granted_then_interrupted(self: pool_module._Waiter, timeout: float | None) -> bool:
        real_wait(self, timeout)
        raise KeyboardInterrupt

    monkeypatch.setattr(pool_module._Waiter, "wait", granted_then_interrupted)
    errors, threads = queue_failing_waiters(pool, 1)
    if grant == "connection":
        held.close()
    else:
        held.invalidate()
    join_all(threads)
    assert [type(e) for e in errors] == [KeyboardInterrupt]
    assert_consistent(pool, db, busy=0)
    monkeypatch.undo()
    with pool.connect():
        pass


# -- the proxy --------------------------------------------------------------------------


def test_pooled_connection_proxies_the_driver_connection(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    with pool.connect() as conn:
        driver = conn.driver_connection
        assert repr(conn).startswith("<PooledConnection checked out")
        cursor = conn.cursor()
        cursor.execute("INSERT")
        assert driver.in_transaction
        conn.commit()
        assert not driver.in_transaction
        conn.rollback()
        assert conn.number == driver.number  # other attributes come from the driver's
        assert not conn.closed
    assert conn.closed
    assert "returned" in repr(conn)


def test_a_custom_close_that_raises_still_frees_the_slot(db: FakeDB, make_pool: MakePool) -> None:
    def bad_close(conn: FakeConnection) -> None:
        conn.close()
        raise RuntimeError("close failed")

    pool = make_pool(connection_limit=1, close=bad_close)
    pool.connect().invalidate()
    status = pool.status()
    assert (status.open, status.closed_total) == (0, 1)
    with pool.connect():
        pass


def test_a_driver_close_that_raises_still_frees_the_slot(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    conn = pool.connect()
    db.close_error = True
    conn.invalidate()
    status = pool.status()
    assert (status.open, status.closed_total) == (0, 1)
    db.close_error = False
    with pool.connect():
        assert db.opened == 2
