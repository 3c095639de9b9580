"""Django's own test runner on the dbpool backends, checked from the database server.

Each test runs ``python -m django test`` on tests/django_support/runner_tests.py (a
TestCase and a TransactionTestCase, threads, select_for_update) in a subprocess, then
asks the server whether the test database is gone (or kept, with ``--keepdb``) and
whether any session is left on it. PostgreSQL refuses to drop a database that a
session is connected to, so a pool still holding the test database fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.servers import MYSQL_URL, POSTGRES_URL, admin_query, need, need_module

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]
NAME = "dbpool_dj_runner"
TEST_NAME = f"test_{NAME}"


class Server:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.query = partial(admin_query, backend)

    def databases(self) -> set[str]:
        if self.backend == "postgresql":
            return {str(r[0]) for r in self.query("SELECT datname FROM pg_database")}
        return {str(r[0]) for r in self.query("SHOW DATABASES")}

    def sessions_on(self, name: str) -> int:
        if self.backend == "postgresql":
            sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
        else:
            sql = f"SELECT count(*) FROM information_schema.processlist WHERE db = '{name}'"
        count = self.query(sql)[0][0]
        return int(str(count))

    def drop(self, name: str) -> None:
        if self.backend == "postgresql":
            self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            self.query(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    backend = request.param
    if backend == "postgresql":
        need_module("psycopg")
        need(POSTGRES_URL)
    else:
        need_module("pymysql")
        need(MYSQL_URL)
    server = Server(backend)
    for name in (TEST_NAME, f"{TEST_NAME}_1", f"{TEST_NAME}_2"):
        server.drop(name)
    yield server
    for name in (TEST_NAME, f"{TEST_NAME}_1", f"{TEST_NAME}_2"):
        server.drop(name)


def run_tests(backend: str, *args: str, sqlite_dir: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DBPOOL_DJ_BACKEND=backend, DBPOOL_DJ_NAME=NAME, PYTHONPATH=str(ROOT))
    if sqlite_dir is not None:
        env["DBPOOL_DJ_SQLITE_DIR"] = str(sqlite_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "django", "test", "tests.django_support.runner_tests",
         "--settings=tests.django_support.settings", "--noinput", "-v", "2", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Ran 8 tests" in output and "\nOK" in output, output
    return output


def test_runner_creates_and_destroys_the_test_database(server: Server) -> None:
    output = run_tests(server.backend)
    assert f"Creating test database for alias 'default' ('{TEST_NAME}')" in output
    assert f"Destroying test database for alias 'default' ('{TEST_NAME}')" in output
    assert TEST_NAME not in server.databases()
    assert server.sessions_on(TEST_NAME) == 0


def test_keepdb_keeps_and_reuses_the_test_database(server: Server) -> None:
    first = run_tests(server.backend, "--keepdb")
    assert f"Preserving test database for alias 'default' ('{TEST_NAME}')" in first
    assert TEST_NAME in server.databases()
    second = run_tests(server.backend, "--keepdb")
    assert f"Using existing test database for alias 'default' ('{TEST_NAME}')" in second
    assert TEST_NAME in server.databases()
    # The runner's process has ended: its pool took every session with it.
    assert server.sessions_on(TEST_NAME) == 0


def test_parallel_runner_clones_the_test_database(server: Server) -> None:
    if server.backend == "mysql" and shutil.which("mysqldump") is None:
        pytest.skip("Django clones a MySQL test database with the mysqldump client")
    # PostgreSQL: CREATE DATABASE ... TEMPLATE needs the source free of sessions.
    output = run_tests(server.backend, "--parallel", "2")
    assert "Cloning test database for alias 'default'" in output
    assert not {TEST_NAME, f"{TEST_NAME}_1", f"{TEST_NAME}_2"} & server.databases()


def test_runner_on_a_sqlite_file(tmp_path: Path) -> None:
    output = run_tests("sqlite", sqlite_dir=tmp_path)
    assert "Destroying test database for alias 'default'" in output
    test_file = tmp_path / f"{NAME}-test"
    assert not test_file.exists()
