"""Hung servers and silent networks: nothing waits forever.

Two real faults that answer nothing and refuse nothing:

* a PostgreSQL backend stopped with SIGSTOP (a frozen VM or a stuck storage layer: the
  kernel still acknowledges TCP, the server says nothing). Only the backend of this
  test's own connection is ever stopped (its pid from ``pg_backend_pid()``, checked
  against the application name), and it is always continued in a ``finally``;
* a TCP proxy in front of PostgreSQL and MariaDB that stops forwarding while keeping
  both sockets open (tests/silent_proxy.py): a network partition.

Each test asserts the bound a caller meets (``validation_timeout``, ``socket_timeout``,
``connect_timeout``, ``dispose(timeout)``) with a generous margin, and that afterwards
the pool's counts are whole and match the server's. Run with ``-s`` to see the
measured times (the figures in docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from dbpool import (
    ConnectError,
    Engine,
    OperationalError,
    PoolTimeoutError,
    make_url,
    text,
)
from tests.integration import faults
from tests.integration.faults import assert_counts_match_server
from tests.integration.targets import with_query
from tests.silent_proxy import SilentProxy
from tests.test_misuse import wait_until

SLACK = 2.0  # seconds allowed beyond every bound: a loaded 2-core machine


def measured(what: str, seconds: float) -> None:
    print(f"\n[measured] {what}: {seconds:.2f} s")  # shown with pytest -s


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


# -- a PostgreSQL backend stopped with SIGSTOP ------------------------------------------------


@pytest.fixture
def pg(postgres_url: str, engines: list[Engine]) -> Iterator[faults.Database]:
    name = f"dbpool-hung-{uuid.uuid4().hex[:12]}"
    server = faults.PostgresBackends(postgres_url, name)
    yield faults.Database(with_query(postgres_url, application_name=name), server, engines)
    server.close()


def own_backend(conn: Any, server: faults.PostgresBackends) -> int:
    """The pid of the backend behind ``conn``, checked to be one of this test's own."""
    pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    assert pid in server.ids(), "not a backend of this test's application_name"
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert cmdline.read().startswith(b"postgres"), "not a PostgreSQL backend"
    return pid


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The backend ``pid`` frozen for the block; continued whatever happens."""
    try:
        os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_stopped_idle_backend_costs_a_checkout_about_validation_timeout(
    pg: faults.Database,
) -> None:
    engine = pg.engine(connection_limit=2, validation_timeout=1, pool_timeout=5)
    with engine.connect() as conn:
        frozen = own_backend(conn, pg.server)  # type: ignore[arg-type]
    time.sleep(0.7)  # idle past the pre-ping window
    with stopped(frozen):
        start = time.monotonic()
        with engine.connect() as conn:  # no error reaches the caller
            fresh = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        took = elapsed_since(start)
    measured("SIGSTOP, idle connection then checkout (validation_timeout=1)", took)
    assert fresh != frozen
    assert 0.9 <= took < 1 + SLACK
    assert engine.pool.validation_failures_total == 1
    counters = {c["key"]: c["value"] for c in engine.metrics.json()["counters"]}
    assert counters["dbpool_pool_validation_failures_total"] == 1
    assert "dbpool_pool_validation_failures_total 1" in engine.metrics.prometheus()
    # Continued, the backend finds its socket shut and exits: nothing leaks.
    assert wait_until(lambda: frozen not in pg.server.ids())
    assert_counts_match_server(engine, pg.server)
    status = engine.status()
    assert (status.opened_total, status.closed_total, status.open) == (2, 1, 1)


def test_a_backend_stopped_mid_query_fails_it_within_socket_timeout(
    pg: faults.Database, caplog: pytest.LogCaptureFixture
) -> None:
    engine = pg.engine(connection_limit=1, socket_timeout=2, pool_timeout=5)
    conn = engine.connect()
    frozen = own_backend(conn, pg.server)  # type: ignore[arg-type]
    try:
        freezer = threading.Timer(0.3, os.kill, (frozen, signal.SIGSTOP))
        freezer.start()
        start = time.monotonic()
        with pytest.raises(OperationalError) as info:
            conn.execute(text("SELECT pg_sleep(1)"))  # frozen in flight, never answered
        took = elapsed_since(start)
        freezer.join()
        measured("SIGSTOP, query in flight (socket_timeout=2)", took)
        assert 1.9 <= took < 2 + SLACK
        assert info.value.connection_invalidated
        assert "socket_timeout=2 s" in str(info.value)
        assert engine.status().open == 0  # the slot is free: the one slot serves again
        conn.rollback()
        with engine.connect() as other:
            assert other.execute(text("SELECT pg_backend_pid()")).scalar_one() != frozen
    finally:
        os.kill(frozen, signal.SIGCONT)
        conn.close()
    counters = {c["key"]: c["value"] for c in engine.metrics.json()["counters"]}
    assert counters["dbpool_client_socket_timeouts_total"] == 1
    assert "dbpool_client_socket_timeouts_total 1" in engine.metrics.prometheus()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("127.0.0.1:5432/test within socket_timeout=2 s" in m for m in warnings)
    assert wait_until(lambda: frozen not in pg.server.ids())
    assert_counts_match_server(engine, pg.server)


def test_commit_and_the_rollback_on_return_are_bounded_by_socket_timeout(
    pg: faults.Database,
) -> None:
    engine = pg.engine(connection_limit=2, socket_timeout=1, pool_timeout=5)
    committing, returning = engine.connect(), engine.connect()
    frozen = {own_backend(c, pg.server) for c in (committing, returning)}  # type: ignore[arg-type]
    for conn in (committing, returning):
        conn.execute(text("CREATE TEMPORARY TABLE t (a int)"))  # a transaction is open
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(OperationalError, match=r"socket_timeout=1 s \(commit\)"):
            committing.commit()
        took = elapsed_since(start)
        measured("SIGSTOP, commit (socket_timeout=1)", took)
        assert 0.9 <= took < 1 + SLACK

        start = time.monotonic()
        returning.close()  # its rollback meets the silence: discarded, no error raised
        took = elapsed_since(start)
        measured("SIGSTOP, rollback on return (socket_timeout=1)", took)
        assert 0.9 <= took < 1 + SLACK
        assert engine.status().open == 0
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        committing.close()
    assert engine.dialect.timeouts.socket_timeouts_total == 2
    assert wait_until(lambda: not (frozen & pg.server.ids()))
    assert_counts_match_server(engine, pg.server)


# -- a network that goes silent: the proxy ----------------------------------------------------


@dataclass
class Silenced:
    """A database reached through a SilentProxy, and the server's view of its connections."""

    db: faults.Database
    proxy: SilentProxy
    kind: str

    def engine(self, **settings: Any) -> Engine:
        return self.db.engine(**settings)


@pytest.fixture(params=["postgresql", "mysql"])
def silenced(request: pytest.FixtureRequest, engines: list[Engine]) -> Iterator[Silenced]:
    kind: str = request.param
    url = request.getfixturevalue(f"{kind}_url" if kind == "mysql" else "postgres_url")
    parsed = make_url(url)
    proxy = SilentProxy(parsed.host or "127.0.0.1", parsed.port or 0)
    through = parsed.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    server: Any
    if kind == "postgresql":
        name = f"dbpool-hung-{uuid.uuid4().hex[:12]}"
        server = faults.PostgresBackends(url, name)
        db = faults.Database(with_query(through, application_name=name), server, engines)
    else:
        server = faults.MariaDBBackends(url)
        db = faults.Database(through, server, engines, on_connect=server.note)
    try:
        yield Silenced(db, proxy, kind)
    finally:
        proxy.resume()
        for engine in engines:
            engine.dispose()
        proxy.close()
        server.close()


def backend(target: Silenced, conn: Any) -> int:
    return target.db.server.backend_id(conn)


def test_an_idle_connection_cut_off_is_replaced_within_validation_timeout(
    silenced: Silenced,
) -> None:
    engine = silenced.engine(connection_limit=2, validation_timeout=1, pool_timeout=5)
    with engine.connect() as conn:
        old = backend(silenced, conn)
    time.sleep(0.7)
    silenced.proxy.silence(new=False)  # this connection's path is gone; new ones get through
    start = time.monotonic()
    with engine.connect() as conn:
        took = elapsed_since(start)
        new = backend(silenced, conn)
    measured(f"{silenced.kind}: silent path, idle connection then checkout", took)
    assert new != old
    assert 0.9 <= took < 1 + SLACK
    assert engine.pool.validation_failures_total == 1
    silenced.proxy.resume()
    assert wait_until(lambda: old not in silenced.db.server.ids())
    assert_counts_match_server(engine, silenced.db.server)


def test_a_query_met_by_silence_fails_within_socket_timeout(silenced: Silenced) -> None:
    engine = silenced.engine(connection_limit=1, socket_timeout=1.5, pool_timeout=5)
    conn = engine.connect()
    try:
        old = backend(silenced, conn)
        conn.commit()
        silenced.proxy.silence(new=False)
        start = time.monotonic()
        with pytest.raises(OperationalError) as info:
            conn.execute(text("SELECT 1"))
        took = elapsed_since(start)
        measured(f"{silenced.kind}: silent network, query in flight", took)
        assert 1.4 <= took < 1.5 + SLACK
        assert info.value.connection_invalidated
        assert "socket_timeout=1.5 s" in str(info.value)
        assert engine.status().open == 0
        conn.rollback()
        with engine.connect() as other:  # the freed slot serves a new connection at once
            assert backend(silenced, other) != old
    finally:
        conn.close()
    silenced.proxy.resume()
    assert engine.dialect.timeouts.socket_timeouts_total == 1
    assert wait_until(lambda: old not in silenced.db.server.ids())
    assert_counts_match_server(engine, silenced.db.server)


def test_connecting_into_silence_is_bounded_by_connect_timeout(silenced: Silenced) -> None:
    silenced.proxy.silence()  # accepted, then not a byte: no startup reply, no greeting
    # psycopg waits at least 2 s whatever connect_timeout says; PyMySQL honours 1 s.
    bound = 2.0 if silenced.kind == "postgresql" else 1.0
    engine = silenced.engine(connect_timeout=1, pool_timeout=3)
    start = time.monotonic()
    with pytest.raises(ConnectError):
        engine.open()  # never retries: one attempt
    took = elapsed_since(start)
    measured(f"{silenced.kind}: engine.open() into silence (connect_timeout=1)", took)
    assert 0.9 <= took < bound + SLACK

    start = time.monotonic()
    with pytest.raises((ConnectError, PoolTimeoutError)):
        engine.connect()  # retries within pool_timeout
    took = elapsed_since(start)
    measured(f"{silenced.kind}: engine.connect() into silence (pool_timeout=3)", took)
    assert took < 3 + bound + SLACK
    silenced.proxy.resume()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    status = engine.status()
    assert (status.busy, status.waiting, status.open) == (0, 0, 1)


def test_dispose_with_a_connection_stuck_in_a_silent_query(silenced: Silenced) -> None:
    engine = silenced.engine(connection_limit=2, pool_timeout=5)  # socket_timeout: none
    conn = engine.connect()
    conn.execute(text("SELECT 1"))
    conn.commit()
    outcome: list[BaseException | None] = []
    ended = threading.Event()

    def stuck() -> None:
        try:
            conn.execute(text("SELECT 1"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            ended.set()

    silenced.proxy.silence()
    worker = threading.Thread(target=stuck, daemon=True)
    worker.start()
    assert not ended.wait(0.5)  # it hangs: nothing else bounds it
    start = time.monotonic()
    engine.dispose(timeout=1)
    took = elapsed_since(start)
    measured(f"{silenced.kind}: dispose(timeout=1) with a query stuck in silence", took)
    assert 0.9 <= took < 1 + SLACK
    assert ended.wait(SLACK), "the stuck query was not woken"
    assert isinstance(outcome[0], OperationalError)
    conn.close()
    status = engine.status()
    assert (status.open, status.busy, status.waiting) == (0, 0, 0)
    silenced.proxy.resume()
    assert wait_until(lambda: not silenced.db.server.ids())


def test_many_threads_through_an_outage_get_an_answer_or_a_bounded_error(
    silenced: Silenced,
) -> None:
    settings = {
        "connection_limit": 4,
        "pool_timeout": 3,
        "connect_timeout": 2,
        "validation_timeout": 1,
        "socket_timeout": 1.5,
        "pre_ping": 0.2,
    }
    engine = silenced.engine(**settings)
    # The longest a call may take: queued, then a pre-ping that meets the silence, then a
    # connect attempt started just before the deadline (psycopg's minimum is 2 s), then
    # the statement.
    bound = 3 + 1 + 2 + 1.5
    calls: list[tuple[float, float, BaseException | None]] = []  # (start, took, error)
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            start = time.monotonic()
            error: BaseException | None = None
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1")).scalar_one()
                    time.sleep(0.02)
            except (PoolTimeoutError, OperationalError, ConnectError) as exc:
                error = exc
            except BaseException as exc:  # anything else fails the test below
                error = exc
            with lock:
                calls.append((start, elapsed_since(start), error))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(16)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(2)
    silenced.proxy.silence()
    silent_at = time.monotonic()
    time.sleep(4)
    silenced.proxy.resume()
    resumed_at = time.monotonic()
    time.sleep(bound + 4)
    stop.set()
    for thread in threads:
        thread.join(timeout=bound + SLACK)
    assert not any(thread.is_alive() for thread in threads), "a caller is still waiting"

    unexpected = [e for _, _, e in calls if e is not None and not isinstance(
        e, (PoolTimeoutError, OperationalError, ConnectError))]  # fmt: skip
    assert not unexpected, unexpected[:3]
    longest = max(took for _, took, _ in calls)
    measured(f"{silenced.kind}: 16 threads, pool of 4, 4 s outage: longest call", longest)
    assert longest < bound + SLACK
    before = [e for start, took, e in calls if start + took < silent_at]
    assert before and not any(before)
    # Once the network is back, every call started after the slowest ones drained succeeds.
    after = [e for start, _, e in calls if start > resumed_at + bound]
    assert after and not any(after), [e for e in after if e][:3]
    errors = sum(1 for _, _, e in calls if e is not None)
    print(f"[measured] {silenced.kind}: {len(calls)} calls, {errors} errors during the outage")
    assert wait_until(lambda: engine.status().busy == 0)
    assert_counts_match_server(engine, silenced.db.server)
    del began


def test_closing_connections_cut_off_never_blocks(silenced: Silenced) -> None:
    """The janitor and dispose() close connections whose server does not answer at once."""
    engine = silenced.engine(connection_limit=2, max_idle_connection_lifetime=0.5)
    conns = [engine.connect() for _ in range(2)]
    for conn in conns:
        conn.execute(text("SELECT 1"))
        conn.close()
    silenced.proxy.silence()
    start = time.monotonic()
    assert wait_until(lambda: engine.status().open == 0, timeout=0.5 + SLACK)
    measured(f"{silenced.kind}: janitor retires 2 connections cut off (lifetime 0.5)",
             elapsed_since(start))  # fmt: skip
    assert engine.status().closed_total == 2

    silenced.proxy.resume()
    with engine.connect() as first, engine.connect() as second:
        first.execute(text("SELECT 1"))
        second.execute(text("SELECT 1"))
    silenced.proxy.silence()
    start = time.monotonic()
    engine.dispose()
    took = elapsed_since(start)
    measured(f"{silenced.kind}: dispose() of 2 idle connections cut off", took)
    assert took < SLACK
    assert engine.status().open == 0


EXIT_SCRIPT = """
import sys, time
import dbpool
from dbpool import text

engine = dbpool.create_engine(sys.argv[1], socket_timeout=1, validation_timeout=1,
                              connect_timeout=1, pool_timeout=2, pre_ping=0)

@engine.before_exit
def last_words():
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except dbpool.DBPoolError as exc:
        print("hook failed after", round(time.monotonic() - started, 2), type(exc).__name__,
              flush=True)

with engine.connect() as conn:
    conn.execute(text("SELECT 1"))
held = engine.connect()  # checked out at exit, in a transaction
held.execute(text("SELECT 1"))
print("ready", flush=True)
sys.stdin.readline()
"""


def test_interpreter_exit_and_before_exit_hooks_are_bounded(silenced: Silenced) -> None:
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT, silenced.db.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        silenced.proxy.silence()
        start = time.monotonic()
        child.stdin.write("\n")
        child.stdin.flush()
        # The hook's checkout meets the silence: a pre-ping of 1 s, then connect attempts
        # within pool_timeout=2 (psycopg waits at least 2 s per attempt). Then the exit.
        out, err = child.communicate(timeout=2 + 2 + 1 + 2 * SLACK)
        took = elapsed_since(start)
    finally:
        child.kill()
        child.wait()
    measured(f"{silenced.kind}: interpreter exit with a hook meeting silence", took)
    assert child.returncode == 0, err
    assert "hook failed after" in out
    assert took < 2 + 2 + 1 + SLACK
