"""docs/deployment.md's recipe, run: gunicorn with examples/gunicorn/gunicorn.conf.py.

gunicorn serves examples/gunicorn/app.py (a TPC-B-like bank transfer per request on
dbpool) against PostgreSQL with the example configuration, on at most 4 CPUs (the
configuration makes one worker per CPU it may use). The test checks that every worker
is pinned to a CPU of its own, both as the workers report it (``/worker``) and as the
kernel shows the processes, that the threads per worker equal the pool's
``connection_limit``, and that concurrent requests are served and keep the books
balanced. The files shown in docs/deployment.md must be these files, word for word.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dbpool import make_url
from tests.servers import need_module

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gunicorn"
DOC = ROOT / "docs" / "deployment.md"
LIMIT = 2  # connection_limit per worker, and so threads per worker
MAX_CPUS = 4  # workers = CPUs; more would only make the test slower
STARTUP = 20.0

pytestmark = pytest.mark.slow

# pgbench -i -s 1, made in SQL so the test does not need the pgbench program
TABLES = """
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp,
                              filler char(22));
INSERT INTO pgbench_branches SELECT 1, 0;
INSERT INTO pgbench_tellers SELECT t, 1, 0 FROM generate_series(1, 10) t;
INSERT INTO pgbench_accounts SELECT a, 1, 0 FROM generate_series(1, 100000) a;
"""


def test_docs_show_the_example_files() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name in ("gunicorn.conf.py", "app.py"):
        text = (EXAMPLE / name).read_text(encoding="utf-8")
        assert text in doc, f"docs/deployment.md must show examples/gunicorn/{name} as it is"


@pytest.fixture
def bank(postgres_url: str) -> Iterator[tuple[str, Any]]:
    """A database with the pgbench tables; yields the app's DATABASE_URL and an admin
    connection to it."""
    import psycopg

    admin = make_url(postgres_url)
    name = f"dbpool_deploy_{secrets.token_hex(4)}"
    server = psycopg.connect(postgres_url, autocommit=True)
    server.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name)
    try:
        target = url.render_as_string(hide_password=False)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(TABLES)
            app_url = url.update_query(
                {"connection_limit": str(LIMIT), "application_name": "dbpool_deploy_test"}
            ).render_as_string(hide_password=False)
            yield app_url, conn
    finally:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.close()


def get(port: int, path: str) -> tuple[int, Any]:
    """One request on a connection of its own (so the kernel may pick any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, json.loads(body) if response.status == 200 else body


def children_cpus(pid: int) -> dict[int, set[int]]:
    """The gunicorn workers (children of the arbiter) and their CPUs, as the kernel says."""
    import psutil

    return {
        child.pid: set(os.sched_getaffinity(child.pid)) for child in psutil.Process(pid).children()
    }


def test_pinned_workers_serve_requests(bank: tuple[str, Any]) -> None:
    need_module("gunicorn")
    url, db = bank
    allowed = sorted(os.sched_getaffinity(0))[:MAX_CPUS]
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    command = [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
        "--bind", f"fd://{listener.fileno()}", "--log-level", "warning",
        "app:application",
    ]  # fmt: skip
    env = dict(os.environ, DATABASE_URL=url, TPCB_SCALE="1")
    server = subprocess.Popen(
        command,
        cwd=EXAMPLE,
        env=env,
        pass_fds=[listener.fileno()],
        preexec_fn=lambda: os.sched_setaffinity(0, allowed),  # as taskset would
    )
    listener.close()
    try:
        deadline = time.monotonic() + STARTUP
        reports: dict[int, dict[str, Any]] = {}
        # New connections until every worker has answered (the kernel spreads them).
        while len(reports) < len(allowed):
            assert server.poll() is None, f"gunicorn exited with {server.returncode}"
            assert time.monotonic() < deadline, f"workers that answered: {reports}"
            try:
                status, body = get(port, "/worker")
            except OSError:
                time.sleep(0.1)  # still starting
                continue
            assert status == 200, body
            reports[body["pid"]] = body

        cpus = [tuple(report["cpus"]) for report in reports.values()]
        assert all(len(c) == 1 for c in cpus), f"each worker on one CPU: {reports}"
        assert sorted(c[0] for c in cpus) == allowed, f"one worker per CPU: {reports}"
        assert children_cpus(server.pid) == {pid: set(r["cpus"]) for pid, r in reports.items()}
        assert all(r["pool"]["connection_limit"] == LIMIT for r in reports.values())

        with ThreadPoolExecutor(max_workers=8) as clients:
            answers = list(clients.map(lambda _: get(port, "/transfer"), range(200)))
        assert [status for status, _ in answers] == [200] * 200
        books = db.execute(
            "SELECT (SELECT count(*) FROM pgbench_history),"
            " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
            " (SELECT sum(abalance) FROM pgbench_accounts),"
            " (SELECT sum(tbalance) FROM pgbench_tellers),"
            " (SELECT sum(bbalance) FROM pgbench_branches)"
        ).fetchone()
        assert books[0] == 200
        assert books[1] == books[2] == books[3] == books[4], books
        for _ in range(2 * len(allowed)):  # the pools stayed within their limit
            status, body = get(port, "/worker")
            assert status == 200, body
            assert body["pool"]["open"] <= LIMIT, body
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
