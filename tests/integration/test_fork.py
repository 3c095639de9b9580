"""Fork safety with real PostgreSQL connections in parent and child at once.

After ``os.fork()`` (and in multiprocessing with the fork start method) the child's pool
starts empty and opens its own connections; the parent's connections, idle or checked out
with a transaction open, are never touched by the child (not even when the child closes
a Connection object it inherited, or exits normally), so they keep working in the parent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import Engine, create_engine, text
from tests.integration.targets import with_query

psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def app_url(postgres_url: str) -> str:
    return with_query(postgres_url, application_name=f"dbpool-fork-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def engine(app_url: str) -> Iterator[Engine]:
    engine = create_engine(app_url, connection_limit=3, pool_timeout=10)
    yield engine
    engine.dispose()


def backend_pid(conn: dbpool.Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def server_pids(url: str) -> set[int]:
    app = dbpool.make_url(url).query["application_name"]
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return {row[0] for row in rows}


def wait_for_child(pid: int, timeout: float = 60) -> int:
    """The child's exit status; kills it (and fails) if it does not end in time."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child {pid} hung")


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child; return what it returned (or raise what it raised)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            try:
                payload = {"result": body()}
                code = 0
            except BaseException as exc:
                payload = {"error": repr(exc)}
            os.write(write_end, json.dumps(payload).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + 60
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while time.monotonic() < deadline:
            if select.select([pipe], [], [], 0.1)[0]:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    assert wait_for_child(pid, max(5.0, deadline - time.monotonic())) == 0, chunks
    payload = json.loads(b"".join(chunks))
    assert "error" not in payload, payload["error"]
    result: dict[str, Any] = payload["result"]
    return result


def parent_with_connections(engine: Engine) -> tuple[dbpool.Connection, int, set[int]]:
    """One connection checked out with a transaction open (a row inserted into a temporary
    table, uncommitted) and two idle ones; returns the busy one, its pid, the idle pids."""
    busy = engine.connect()
    busy_pid = backend_pid(busy)
    busy.execute(text("CREATE TEMP TABLE parent_session (a int)"))
    busy.commit()
    busy.execute(text("INSERT INTO parent_session VALUES (1)"))  # left uncommitted
    idle = [engine.connect(), engine.connect()]
    idle_pids = {backend_pid(conn) for conn in idle}
    for conn in idle:
        conn.close()
    status = engine.status()
    assert (status.open, status.busy, status.idle) == (3, 1, 2)
    return busy, busy_pid, idle_pids


def assert_parent_unharmed(
    engine: Engine, busy: dbpool.Connection, busy_pid: int, idle_pids: set[int]
) -> None:
    # The checked-out connection: same backend, its transaction still open and intact.
    assert backend_pid(busy) == busy_pid
    busy.commit()
    assert busy.execute(text("SELECT count(*) FROM parent_session")).scalar() == 1
    busy.close()
    # The idle ones come back with their backends alive (pinged: they have been idle).
    time.sleep((engine.config.pre_ping or 0) + 0.1)
    conns = [engine.connect() for _ in range(3)]
    assert {backend_pid(conn) for conn in conns} == idle_pids | {busy_pid}
    for conn in conns:
        conn.close()
    status = engine.status()
    assert (status.open, status.opened_total, status.closed_total) == (3, 3, 0)


def test_os_fork_child_pool_starts_empty_and_parent_connections_keep_working(
    engine: Engine, app_url: str
) -> None:
    busy, busy_pid, idle_pids = parent_with_connections(engine)
    parent_pids = idle_pids | {busy_pid}

    def child() -> dict[str, Any]:
        status = engine.status()
        conns = [engine.connect() for _ in range(3)]  # the whole limit: none inherited
        pids = [backend_pid(conn) for conn in conns]
        for conn in conns:
            conn.close()
        refused = []
        for use in (lambda: busy.execute(text("SELECT 1")), busy.commit, busy.rollback):
            try:
                use()
            except dbpool.ResourceClosedError as exc:
                refused.append("before os.fork()" in str(exc))
        busy.close()  # the parent's checked-out Connection: must not touch its socket
        after = engine.status()
        engine.dispose()
        return {
            "start": [status.open, status.busy, status.idle, status.waiting],
            "pids": pids,
            "after": [after.open, after.busy, after.idle],
            "refused": refused,
        }

    result = in_child(child)
    assert result["start"] == [0, 0, 0, 0]
    assert len(set(result["pids"])) == 3
    assert not set(result["pids"]) & parent_pids
    assert result["after"] == [3, 0, 3]
    assert result["refused"] == [True, True, True]  # the child cannot use the parent's
    assert server_pids(app_url) == parent_pids  # the child's are closed, the parent's live
    assert_parent_unharmed(engine, busy, busy_pid, idle_pids)


def test_parent_and_child_use_their_pools_at_the_same_time(engine: Engine, app_url: str) -> None:
    busy, busy_pid, idle_pids = parent_with_connections(engine)
    stop = threading.Event()
    parent_queries = []

    def parent_load() -> None:
        while not stop.is_set():
            with engine.connect() as conn:
                parent_queries.append(backend_pid(conn))

    def child() -> dict[str, Any]:
        pids = set()
        for _ in range(200):
            with engine.connect() as conn:
                pids.add(backend_pid(conn))
        return {"pids": sorted(pids)}

    thread = threading.Thread(target=parent_load)
    thread.start()
    try:
        result = in_child(child)
    finally:
        stop.set()
        thread.join(30)
    assert not set(result["pids"]) & (idle_pids | {busy_pid})
    assert set(parent_queries) <= idle_pids
    assert len(parent_queries) > 0
    assert_parent_unharmed(engine, busy, busy_pid, idle_pids)


_worker_engine: Engine | None = None


def _worker_task(_: int) -> tuple[int, int, int]:
    assert _worker_engine is not None
    opened_before = _worker_engine.status().open
    with _worker_engine.connect() as conn:
        return os.getpid(), opened_before, backend_pid(conn)


def test_multiprocessing_fork_workers_get_fresh_pools(engine: Engine) -> None:
    global _worker_engine
    busy, busy_pid, idle_pids = parent_with_connections(engine)
    _worker_engine = engine
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(2) as workers:
            results = workers.map(_worker_task, range(12), chunksize=1)
    finally:
        _worker_engine = None
    worker_pids = {pid for pid, _, _ in results}
    assert os.getpid() not in worker_pids
    assert all(opened <= 1 for _, opened, _ in results)  # never more than their own one
    backends = {backend for _, _, backend in results}
    assert not backends & (idle_pids | {busy_pid})
    assert len(backends) == len(worker_pids)  # one connection per worker, reused
    assert_parent_unharmed(engine, busy, busy_pid, idle_pids)


def test_standalone_pool_connection_is_not_usable_in_the_child(app_url: str) -> None:
    engine = create_engine(app_url, connection_limit=1)
    try:
        proxy = engine.pool.connect()
        cursor = proxy.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        parent_pid = cursor.fetchone()[0]

        def child() -> dict[str, Any]:
            try:
                proxy.cursor()
            except dbpool.ResourceClosedError:
                refused = True
            else:
                refused = False
            proxy.close()  # forgotten, not reset: nothing is sent
            with engine.pool.connect() as own:
                cursor = own.cursor()
                cursor.execute("SELECT pg_backend_pid()")
                return {"refused": refused, "pid": cursor.fetchone()[0]}

        result = in_child(child)
        assert result["refused"]
        assert result["pid"] != parent_pid
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == parent_pid
        proxy.close()
    finally:
        engine.dispose()


def test_multiprocessing_fork_process_inherits_nothing(engine: Engine) -> None:
    busy, busy_pid, idle_pids = parent_with_connections(engine)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def target() -> None:
        status = engine.status()
        with engine.connect() as conn:
            queue.put((status.open, status.idle, backend_pid(conn)))

    process = context.Process(target=target)
    process.start()
    opened, idle, backend = queue.get(timeout=60)
    process.join(60)
    assert process.exitcode == 0
    assert (opened, idle) == (0, 0)
    assert backend not in idle_pids | {busy_pid}
    assert_parent_unharmed(engine, busy, busy_pid, idle_pids)


def test_fork_while_other_threads_hold_the_pool_lock(engine: Engine) -> None:
    """Forking at an arbitrary moment of other threads' checkouts (the pool lock may be held,
    waiters queued): the child's pool still works at once."""
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

    threads = [threading.Thread(target=hammer) for _ in range(5)]  # more than the limit
    for thread in threads:
        thread.start()
    try:
        for _ in range(8):
            time.sleep(0.05)
            result = in_child(lambda: {"pid": backend_pid(engine.connect())})
            assert result["pid"] > 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    status = engine.status()
    assert (status.busy, status.waiting) == (0, 0)


CHILD_EXITS_NORMALLY = """
import os, sys, time
import dbpool
from dbpool import text

engine = dbpool.create_engine(URL, connection_limit=3)
pid_of = lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
busy = engine.connect()
busy_pid = pid_of(busy)
busy.execute(text("CREATE TEMP TABLE parent_session (a int)"))
busy.commit()
busy.execute(text("INSERT INTO parent_session VALUES (1)"))
with engine.connect() as idle:
    idle_pid = pid_of(idle)

child = os.fork()
if child == 0:
    with engine.connect() as conn:
        assert pid_of(conn) not in (busy_pid, idle_pid)
    busy.close()
    sys.exit(0)  # a normal interpreter exit: atexit, finalizers, garbage collection

_, status = os.waitpid(child, 0)
assert os.waitstatus_to_exitcode(status) == 0
assert pid_of(busy) == busy_pid
busy.commit()
assert busy.execute(text("SELECT count(*) FROM parent_session")).scalar() == 1
busy.close()
time.sleep(0.6)
with engine.connect() as idle:
    assert pid_of(idle) in (busy_pid, idle_pid)
engine.dispose()
print("parent ok")
"""


def test_child_exiting_normally_leaves_the_parent_connections_alone(app_url: str) -> None:
    code = f"URL = {app_url!r}\n" + textwrap.dedent(CHILD_EXITS_NORMALLY)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stderr == ""
    assert result.returncode == 0
    assert result.stdout.strip() == "parent ok"
