"""examples/django_app on dbpool's Django backend, under a real threaded server and 64 clients.

gunicorn (one gthread worker, a thread per client) serves the example project with
``connection_limit=4``; examples/django_app/loadtest.py, in a process of its own,
sends 64 keep-alive clients at the view (two queries per request) for a few seconds.
Meanwhile this test asks the database server itself, every 20 ms, how many connections
the app holds. Then, with the server still up and the load over, it checks the pool
through the app's ``/pool/`` view and the connections through the database server.
Each database gets its own ``dbpool_djapp_*`` database, dropped at the end.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dbpool import make_url
from tests.servers import need_module

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "django_app"
CLIENTS = 64
LIMIT = 4
LOAD_SECONDS = 3.0
SAMPLE_EVERY = 0.02
AT_REST_WITHIN = 10.0  # seconds for the last requests' connections to come back


@dataclass
class AppDatabase:
    """The app's DATABASE_URL, and the database server's own view of the app's connections."""

    url: str
    # states() -> one entry per server connection of the app: "idle" when it is idle
    # outside a transaction, anything else otherwise
    states: Callable[[], list[str]]
    # open_transactions() -> how many of the app's connections are inside a transaction
    open_transactions: Callable[[], int]


def database_name() -> str:
    return f"dbpool_djapp_{secrets.token_hex(4)}"


@pytest.fixture
def postgresql_app(postgres_url: str) -> Iterator[AppDatabase]:
    import psycopg

    admin = make_url(postgres_url)
    name, app_name = database_name(), f"djapp-{secrets.token_hex(6)}"
    observer = psycopg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username,
        password=admin.password, dbname=admin.database, autocommit=True,
    )  # fmt: skip
    observer.execute(f'CREATE DATABASE "{name}"')

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return observer.execute(sql, (app_name,)).fetchall()

    def states() -> list[str]:
        activity = "SELECT state FROM pg_stat_activity WHERE application_name = %s"
        return [str(state) for (state,) in rows(activity)]

    def open_transactions() -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        return int(rows(f"{sql} AND xact_start IS NOT NULL")[0][0])

    url = admin.set(database=name).update_query(
        {"connection_limit": str(LIMIT), "application_name": app_name}
    )
    try:
        yield AppDatabase(url.render_as_string(hide_password=False), states, open_transactions)
    finally:
        observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        observer.close()


@pytest.fixture
def mysql_app(mysql_url: str) -> Iterator[AppDatabase]:
    import pymysql

    admin = make_url(mysql_url)
    name = database_name()
    # Connected to no database, so that it is not one of the connections it counts.
    observer = pymysql.connect(
        host=admin.host, port=admin.port or 3306, user=admin.username,
        password=admin.password or "", autocommit=True,
    )  # fmt: skip

    def rows(sql: str, *params: object) -> list[tuple[Any, ...]]:
        with observer.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    rows(f"CREATE DATABASE `{name}`")

    def states() -> list[str]:
        processlist = "SELECT command FROM information_schema.processlist WHERE db = %s"
        return ["idle" if cmd == "Sleep" else str(cmd) for (cmd,) in rows(processlist, name)]

    def open_transactions() -> int:
        sql = (
            "SELECT count(*) FROM information_schema.innodb_trx t"
            " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
            " WHERE p.db = %s"
        )
        return int(rows(sql, name)[0][0])

    url = admin.set(database=name).update_query({"connection_limit": str(LIMIT)})
    try:
        yield AppDatabase(url.render_as_string(hide_password=False), states, open_transactions)
    finally:
        rows(f"DROP DATABASE IF EXISTS `{name}`")
        observer.close()


@pytest.fixture(params=["postgresql", "mysql"])
def app_database(request: pytest.FixtureRequest) -> AppDatabase:
    need_module("django")
    need_module("gunicorn")
    fixture: AppDatabase = request.getfixturevalue(f"{request.param}_app")
    return fixture


@functools.cache
def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"djapp_{name}", APP_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class Sampler:
    """The most app connections the server showed, asked every SAMPLE_EVERY s in a thread."""

    def __init__(self, states: Callable[[], list[str]]) -> None:
        self.states = states
        self.most = 0
        self.samples = 0
        self.error: Exception | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="djapp-sampler", daemon=True)

    def loop(self) -> None:
        try:
            while not self.stop.wait(SAMPLE_EVERY):
                self.most = max(self.most, len(self.states()))
                self.samples += 1
        except Exception as exc:  # reported by the test, not lost in this thread
            self.error = exc

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def run_checked(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{command[1:]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_64_clients_share_4_connections_without_errors(app_database: AppDatabase) -> None:
    loadtest = load_example("loadtest")
    env = {
        **os.environ,
        "DATABASE_URL": app_database.url,
        "DJANGO_SETTINGS_MODULE": "djapp.settings",
    }
    run_checked([sys.executable, "manage.py", "migrate", "-v", "0"], env)

    with loadtest.gunicorn(threads=CLIENTS, env=env) as server:
        url = server.url
        before = loadtest.get_json(url, "/pool/", 30)
        assert before["engine"].startswith("dbpool.contrib.django."), before

        load = [sys.executable, "loadtest.py", url, "--clients", str(CLIENTS)]
        load += ["--seconds", str(LOAD_SECONDS), "--warmup", "1"]
        with Sampler(app_database.states) as sampler:
            summary = loadtest_summary(run_checked(load, env))

        # The load went through: every request answered 200, and there were many.
        assert summary["errors"] == 0, summary["error_kinds"]
        assert summary["requests"] >= CLIENTS, summary
        # The database server never saw more than the limit, and did see the app.
        assert sampler.error is None, sampler.error
        assert sampler.samples >= 10
        assert 1 <= sampler.most <= LIMIT, f"server showed {sampler.most} app connections"

        # After the load: nothing checked out or waiting, no pool timeout, and every
        # server connection of the app idle outside a transaction.
        status = pool_at_rest(loadtest, url)
        assert status["busy"] == 0, status
        assert status["waiting"] == 0, status
        assert status["timeouts_total"] == 0, status
        assert 1 <= status["open"] <= LIMIT, status
        assert status["connection_limit"] == LIMIT, status
        states = app_database.states()
        assert 1 <= len(states) <= LIMIT, states
        assert set(states) == {"idle"}, states
        assert app_database.open_transactions() == 0


def pool_at_rest(loadtest: ModuleType, url: str) -> dict[str, Any]:
    """The pool's status once nothing is checked out, or the last one after AT_REST_WITHIN.

    The last answers reach the clients a moment before Django's request_finished signal
    returns their connections, so the first look may still catch one on its way back.
    """
    deadline = time.monotonic() + AT_REST_WITHIN
    while True:
        status: dict[str, Any] = loadtest.get_json(url, "/pool/", 30)["status"]
        if status["busy"] == 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def loadtest_summary(stdout: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary
