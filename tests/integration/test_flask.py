"""dbpool.contrib.flask on real Flask and real servers.

The app under test is examples/flask_app.py (its factory and its ``db``), with a few
views added per test. What a request did to its connection is checked on the server
itself: pg_stat_activity and information_schema (innodb_trx, processlist) on the test
servers, and the file's write lock for SQLite. Each server gets a database of its own
(``dbpool_fl_<hex>``), dropped when the module is done.
"""

from __future__ import annotations

import gc
import http.client
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask, request
from werkzeug.serving import WSGIRequestHandler, make_server

import dbpool
from dbpool import make_url, text
from dbpool.contrib.flask import DBPool
from tests.integration.targets import with_query
from tests.servers import MYSQL_URL, POSTGRES_URL, need, need_module

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4
CLIENTS = 64
REQUESTS_PER_CLIENT = 6
SETTLE = 15.0  # seconds for a server to forget closed sessions; usually milliseconds


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_app", ROOT / "examples" / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flask finds the app's root path through it
    spec.loader.exec_module(module)
    return module


example = load_example()
db: DBPool = example.db


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


# -- the servers, as the tests see them from outside the pool -----------------------------


class SQLiteServer:
    name = "sqlite"
    hold_sql = "SELECT 1"

    def __init__(self, path: Path) -> None:
        self.path = path

    def app_url(self, tag: str) -> str:
        return f"sqlite:///{self.path}"

    def session_id(self, conn: dbpool.Connection) -> int:
        return id(conn.driver_connection)

    def in_transaction(self, session: int) -> bool:
        """Whether some connection holds a write transaction open (its RESERVED lock)."""
        observer = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            observer.execute("BEGIN IMMEDIATE")
            observer.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return True
        finally:
            observer.close()

    def count(self, body: str) -> int:
        observer = sqlite3.connect(self.path)
        try:
            row = observer.execute("SELECT COUNT(*) FROM notes WHERE body = ?", (body,)).fetchone()
            return int(row[0])
        finally:
            observer.close()


class PostgresServer:
    name = "postgresql"
    hold_sql = "SELECT pg_sleep(0.005)"

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.database = f"dbpool_fl_{uuid.uuid4().hex[:10]}"
        admin = make_url(admin_url)
        self._connect_args: dict[str, Any] = {"host": admin.host, "port": admin.port or 5432,
                              "user": admin.username, "password": admin.password}  # fmt: skip
        with psycopg.connect(dbname=admin.database, autocommit=True,
                             **self._connect_args) as conn:  # fmt: skip
            # template0: nobody can be connected to it, while another test on the server
            # may be connected to template1, which would make CREATE DATABASE fail.
            conn.execute(f'CREATE DATABASE "{self.database}" TEMPLATE template0')
        self.url = admin.set(database=self.database).render_as_string(hide_password=False)
        self.observer = psycopg.connect(dbname=self.database, autocommit=True,
                                        application_name="dbpool-fl-observer",
                                        **self._connect_args)  # fmt: skip

    def app_url(self, tag: str) -> str:
        return with_query(self.url, application_name=tag)

    def session_id(self, conn: dbpool.Connection) -> int:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def _one(self, sql: str, *params: object) -> Any:
        row = self.observer.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def in_transaction(self, session: int) -> bool:
        state = self._one("SELECT state FROM pg_stat_activity WHERE pid = %s", session)
        return state is not None and state != "idle"

    def connections(self, tag: str) -> int:
        return int(self._one("SELECT count(*) FROM pg_stat_activity "
                             "WHERE application_name = %s", tag))  # fmt: skip

    def open_transactions(self, tag: str) -> int:
        return int(self._one("SELECT count(*) FROM pg_stat_activity "
                             "WHERE application_name = %s AND state <> 'idle'", tag))  # fmt: skip

    def count(self, body: str) -> int:
        return int(self._one("SELECT count(*) FROM notes WHERE body = %s", body))

    def close(self) -> None:
        import psycopg

        self.observer.close()
        with psycopg.connect(dbname="postgres", autocommit=True, **self._connect_args) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


class MariaDBServer:
    name = "mysql"
    hold_sql = "SELECT SLEEP(0.005)"

    def __init__(self, admin_url: str) -> None:
        import pymysql

        self.database = f"dbpool_fl_{uuid.uuid4().hex[:10]}"
        admin = make_url(admin_url)
        # The observer has no default database, so the sessions on ours are the app's.
        self.observer = pymysql.connect(host=admin.host, port=admin.port or 3306,
                                        user=admin.username, password=admin.password or "",
                                        autocommit=True)  # fmt: skip
        self._one(f"CREATE DATABASE `{self.database}`")
        self.url = admin.set(database=self.database).render_as_string(hide_password=False)

    def app_url(self, tag: str) -> str:
        return self.url  # the app's sessions are told apart by their database

    def session_id(self, conn: dbpool.Connection) -> int:
        return int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())

    def _one(self, sql: str, *params: object) -> Any:
        with self.observer.cursor() as cursor:
            cursor.execute(sql, params or None)
            row = cursor.fetchone()
        return None if row is None else row[0]

    def in_transaction(self, session: int) -> bool:
        return bool(self._one("SELECT COUNT(*) FROM information_schema.innodb_trx "
                              "WHERE trx_mysql_thread_id = %s", session))  # fmt: skip

    def connections(self, tag: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM information_schema.processlist "
                             "WHERE db = %s", self.database))  # fmt: skip

    def open_transactions(self, tag: str) -> int:
        return int(self._one(
            "SELECT COUNT(*) FROM information_schema.innodb_trx t "
            "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
            "WHERE p.db = %s", self.database))  # fmt: skip

    def count(self, body: str) -> int:
        return int(self._one(f"SELECT COUNT(*) FROM `{self.database}`.notes WHERE body = %s",
                             body))  # fmt: skip

    def close(self) -> None:
        self._one(f"DROP DATABASE IF EXISTS `{self.database}`")
        self.observer.close()


Server = SQLiteServer | PostgresServer | MariaDBServer
NetworkServer = PostgresServer | MariaDBServer


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> SQLiteServer:
    return SQLiteServer(tmp_path_factory.mktemp("flask") / "notes.db")


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    need_module("psycopg")
    need(POSTGRES_URL)
    server = PostgresServer(POSTGRES_URL)
    yield server
    server.close()


@pytest.fixture(scope="module")
def mysql_server() -> Iterator[MariaDBServer]:
    need_module("pymysql")
    need(MYSQL_URL)
    server = MariaDBServer(MYSQL_URL)
    yield server
    server.close()


_FIXTURES = {"sqlite": "sqlite_server", "postgresql": "postgres_server", "mysql": "mysql_server"}


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(_FIXTURES[request.param])  # type: ignore[no-any-return]


@pytest.fixture(params=["postgresql", "mysql"])
def network_server(request: pytest.FixtureRequest) -> NetworkServer:
    return request.getfixturevalue(_FIXTURES[request.param])  # type: ignore[no-any-return]


# -- the app ---------------------------------------------------------------------------


class Failure(Exception):
    """Raised by the failing views."""


def add_test_views(app: Flask, server: Server) -> None:
    """Views that report on their connection or fail on purpose."""
    sessions: list[int] = app.config.setdefault("SESSIONS", [])

    @app.get("/session")
    def session() -> dict[str, Any]:
        first = db.connection()
        with db.begin() as in_block:
            begin_same = in_block is first
        return {
            "same": db.connection() is first,
            "begin_same": begin_same,
            "first": server.session_id(first),
            "second": server.session_id(db.connection()),
            "busy": db.engine.status().busy,
        }

    @app.post("/insert")
    def insert() -> str:
        conn = db.connection()
        conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": request.args["body"]})
        sessions.append(server.session_id(conn))
        if request.args.get("commit"):
            conn.commit()
        return "inserted"

    @app.post("/fail")
    def fail() -> str:
        conn = db.connection()
        conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": request.args["body"]})
        sessions.append(server.session_id(conn))
        raise Failure("the view failed after writing")

    @app.post("/begin-fail")
    def begin_fail() -> str:
        with db.begin() as conn:
            conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": request.args["body"]})
            raise Failure("failed inside db.begin()")

    @app.get("/load")
    def load() -> str:
        conn = db.connection()
        conn.execute(text("SELECT 1")).scalar_one()
        conn.exec_driver_sql(server.hold_sql)  # holds the connection like a real query
        return "ok"


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """examples/flask_app.py's factory plus the test views; engines disposed at the end."""
    made: list[Flask] = []

    def make(server: Server, password: str | None = None, **settings: Any) -> Flask:
        tag = f"dbpool-fl-{uuid.uuid4().hex[:10]}"
        url = server.app_url(tag)
        if password is not None:
            url = with_password(url, password)
        app: Flask = example.create_app(
            {"DATABASE_URL": url, "DBPOOL_SETTINGS": settings, "TAG": tag}
        )
        add_test_views(app, server)
        made.append(app)
        return app

    yield make
    for app in made:
        db.get_engine(app).dispose()


def body() -> str:
    return f"note-{uuid.uuid4().hex}"


# -- requests through Flask's test client ------------------------------------------------


def test_one_connection_per_request_returned_after(
    server: Server, make_app: Callable[..., Flask]
) -> None:
    app = make_app(server)
    engine = db.get_engine(app)
    client = app.test_client()
    for _ in range(3):
        data = client.get("/session").get_json()
        assert data["same"] and data["begin_same"]
        assert data["first"] == data["second"]
        assert data["busy"] == 1  # the view held exactly one connection
        assert engine.status().busy == 0  # and it was returned at teardown
    assert engine.status().open >= 1


def test_uncommitted_work_is_rolled_back_at_teardown(
    server: Server, make_app: Callable[..., Flask]
) -> None:
    app = make_app(server)
    client = app.test_client()
    dropped, kept = body(), body()
    assert client.post("/insert", query_string={"body": dropped}).status_code == 200
    assert client.post("/insert", query_string={"body": kept, "commit": "1"}).status_code == 200
    assert server.count(dropped) == 0
    assert server.count(kept) == 1
    assert not server.in_transaction(app.config["SESSIONS"][0])
    assert db.get_engine(app).status().busy == 0


def test_failing_view_leaves_no_open_transaction(
    server: Server, make_app: Callable[..., Flask]
) -> None:
    app = make_app(server)
    client = app.test_client()
    written = body()
    response = client.post("/fail", query_string={"body": written})
    assert response.status_code == 500
    (session,) = app.config["SESSIONS"]
    assert not server.in_transaction(session)
    assert server.count(written) == 0
    assert db.get_engine(app).status().busy == 0
    # The connection went back clean: the next request can write and commit on it.
    kept = body()
    assert client.post("/insert", query_string={"body": kept, "commit": "1"}).status_code == 200
    assert server.count(kept) == 1


def test_failing_view_with_propagated_exception_returns_the_connection(
    sqlite_server: SQLiteServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(sqlite_server)
    app.testing = True  # the test client re-raises the view's exception
    written = body()
    with pytest.raises(Failure):
        app.test_client().post("/fail", query_string={"body": written})
    assert db.get_engine(app).status().busy == 0
    assert not sqlite_server.in_transaction(0)
    assert sqlite_server.count(written) == 0


def test_begin_commits_on_success_and_rolls_back_on_error(
    server: Server, make_app: Callable[..., Flask]
) -> None:
    app = make_app(server)
    client = app.test_client()
    committed, failed = body(), body()
    assert client.post("/notes", json={"body": committed}).status_code == 201
    assert server.count(committed) == 1
    assert client.post("/begin-fail", query_string={"body": failed}).status_code == 500
    assert server.count(failed) == 0
    assert db.get_engine(app).status().busy == 0


def test_begin_refuses_to_swallow_an_open_transaction(
    sqlite_server: SQLiteServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(sqlite_server)
    with app.app_context():
        db.connection().execute(text("INSERT INTO notes (body) VALUES ('x')"))
        with pytest.raises(dbpool.ArgumentError, match=r"commit\(\) or \.rollback\(\) first"):
            with db.begin():
                pass
        db.connection().rollback()
        with db.begin() as conn:
            assert conn is db.connection()


def test_a_connection_closed_by_the_view_is_replaced(
    sqlite_server: SQLiteServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(sqlite_server)
    with app.app_context():
        first = db.connection()
        first.close()
        second = db.connection()
        assert second is not first and not second.closed
        assert db.connection() is second
    assert second.closed
    assert db.get_engine(app).status().busy == 0


def test_nested_app_context_has_its_own_connection(
    sqlite_server: SQLiteServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(sqlite_server, connection_limit=2)
    with app.app_context():
        outer = db.connection()
        with app.app_context():
            inner = db.connection()
            assert inner is not outer
            assert db.engine.status().busy == 2
        assert inner.closed and not outer.closed
        assert db.connection() is outer
    assert db.get_engine(app).status().busy == 0


# -- apps, factories and configuration -----------------------------------------------------


def test_factory_pattern_one_dbpool_two_apps_two_engines(tmp_path: Path) -> None:
    shared = DBPool()
    apps = []
    for name in ("first", "second"):
        app = Flask(name)
        app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / name}.db"
        shared.init_app(app)

        @app.get("/")
        def where() -> str:
            return str(shared.connection().exec_driver_sql("PRAGMA database_list").all()[0][2])

        apps.append(app)
    engines = [app.extensions["dbpool"] for app in apps]
    try:
        assert engines[0] is not engines[1]
        assert [shared.get_engine(app) for app in apps] == engines
        for app, name in zip(apps, ("first", "second"), strict=True):
            with app.app_context():
                assert shared.engine is app.extensions["dbpool"]
            assert app.test_client().get("/").text.endswith(f"{name}.db")
            assert app.extensions["dbpool"].status().opened_total == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_one_dbpool_two_apps_on_one_server(server: Server, make_app: Callable[..., Flask]) -> None:
    """The example's factory twice: one ``db``, two apps, two pools, separate sessions."""
    first, second = make_app(server), make_app(server)
    engines = [db.get_engine(first), db.get_engine(second)]
    assert engines[0] is not engines[1]
    sessions = [app.test_client().get("/session").get_json()["first"] for app in (first, second)]
    assert sessions[0] != sessions[1]
    assert [e.status().opened_total for e in engines] == [1, 1]
    assert [e.status().busy for e in engines] == [0, 0]
    if isinstance(server, PostgresServer):  # each app's sessions carry its own name
        assert [server.connections(app.config["TAG"]) for app in (first, second)] == [1, 1]


def test_database_url_from_config_else_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = Flask("env")
    assert DBPool(app).get_engine(app).url.database == str(tmp_path / "env.db")
    other = Flask("config")
    other.config["DATABASE_URL"] = f"sqlite:///{tmp_path / 'config.db'}"
    assert DBPool(other).get_engine(other).url.database == str(tmp_path / "config.db")


def test_settings_from_dbpool_settings(tmp_path: Path) -> None:
    app = Flask("settings")
    app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / 's.db'}?pool_timeout=7"
    app.config["DBPOOL_SETTINGS"] = {"connection_limit": 3, "metrics_labels": {"app": "shop"}}
    engine = DBPool(app).get_engine(app)
    assert engine.config.connection_limit == 3
    assert engine.config.pool_timeout == 7
    assert engine.metrics.labels == {"app": "shop"}


def test_no_url_names_both_places(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = Flask("nourl")
    with pytest.raises(dbpool.ConfigError) as caught:
        DBPool(app)
    message = str(caught.value)
    assert "app.config['DATABASE_URL']" in message
    assert "DATABASE_URL environment variable" in message
    assert "nourl" in message
    assert "dbpool" not in app.extensions


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"conection_limit": 3},
            r"unknown key 'conection_limit'.*Did you mean \"connection_limit\"",
        ),
        ({"connection_limit": 0}, r"Flask app 'bad'.*connection_limit must be an integer >= 1"),
        ([("connection_limit", 3)], r"DBPOOL_SETTINGS.*must be a dict.*got list"),
    ],
)
def test_bad_settings_are_config_errors(settings: Any, expected: str, tmp_path: Path) -> None:
    app = Flask("bad")
    app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / 'bad.db'}"
    app.config["DBPOOL_SETTINGS"] = settings
    with pytest.raises(dbpool.ConfigError, match=expected):
        DBPool().init_app(app)


def test_bad_url_is_a_config_error_without_the_password() -> None:
    app = Flask("badurl")
    app.config["DATABASE_URL"] = "postgresql://u:hunter2-secret@localhost/db?conection_limit=3"
    with pytest.raises(dbpool.ConfigError) as caught:
        DBPool(app)
    assert "badurl" in str(caught.value)
    assert "connection_limit" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)


def test_usage_errors(tmp_path: Path) -> None:
    app = Flask("usage")
    app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / 'u.db'}"
    pool = DBPool(app)
    with pytest.raises(RuntimeError, match="already set up"):
        pool.init_app(app)
    with pytest.raises(RuntimeError, match=r"application context.*app_context\(\)"):
        pool.engine  # noqa: B018
    with pytest.raises(RuntimeError, match="application context"):
        pool.connection()
    bare = Flask("bare")
    with bare.app_context(), pytest.raises(RuntimeError, match=r"not set up.*init_app"):
        pool.connection()


def test_engine_is_disposed_when_the_app_is_collected(tmp_path: Path) -> None:
    app = Flask("collected")
    app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / 'c.db'}"
    pool = DBPool(app)
    engine = pool.get_engine(app)
    with app.app_context():
        pool.connection().exec_driver_sql("SELECT 1")
    assert engine.status().open == 1
    alive = weakref.ref(app)
    del app
    gc.collect()
    assert alive() is None
    assert engine.status().open == 0


def test_engine_is_disposed_at_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="LOG %(message)s")
        from flask import Flask
        from dbpool.contrib.flask import DBPool
        app = Flask("exiting")
        app.config["DATABASE_URL"] = {f"sqlite:///{tmp_path / 'exit.db'}"!r}
        db = DBPool(app)
        with app.test_request_context():
            db.connection().exec_driver_sql("SELECT 1")
        print("served", flush=True)
        sys.stderr.write("END OF SCRIPT\\n")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "served\n"
    before, _, after = proc.stderr.partition("END OF SCRIPT\n")
    assert "LOG closed a connection" not in before, proc.stderr
    assert "LOG closed a connection" in after, proc.stderr


def test_flask_is_imported_only_by_the_flask_integration() -> None:
    code = "import sys, dbpool, dbpool.cli, dbpool.contrib; print('flask' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == "False", proc.stderr


# -- flask dbpool ... ----------------------------------------------------------------------


def test_cli_check_postgresql(postgres_server: PostgresServer) -> None:
    secret = f"pw-{uuid.uuid4().hex}"  # trust auth: any password logs in
    app = Flask("clipg")
    app.config["DATABASE_URL"] = with_password(postgres_server.url, secret)
    app.config["DBPOOL_SETTINGS"] = {"connection_limit": 3}
    DBPool(app)
    result = app.test_cli_runner().invoke(args=["dbpool", "check", "--threads", "6"])
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert "postgresql://postgres:***@" in result.output
    assert re.search(r"connection_limit\s+3\s+DBPOOL_SETTINGS", result.output)
    assert re.search(r"pool_timeout\s+10 s\s+default", result.output)
    assert "checkouts done  150 of 150" in result.output
    assert result.output.rstrip().endswith("OK")


def test_cli_check_mysql(mysql_url: str, mysql_user: tuple[str, str]) -> None:
    user, password = mysql_user
    app = Flask("climy")
    url = make_url(mysql_url).set(username=user, password=password)
    app.config["DATABASE_URL"] = url.render_as_string(hide_password=False)
    DBPool(app)
    result = app.test_cli_runner().invoke(args=["dbpool", "check"])
    assert result.exit_code == 0, result.output
    assert password not in result.output
    assert f"{user}:***@" in result.output


def test_cli_check_failure_is_one_line_without_the_password(
    silent_server: tuple[str, int],
) -> None:
    need_module("psycopg")
    host, port = silent_server  # accepts and never answers: the connect timeout fires
    secret = f"pw-{uuid.uuid4().hex}"
    app = Flask("clifail")
    app.config["DATABASE_URL"] = f"postgresql://app:{secret}@{host}:{port}/db"
    app.config["DBPOOL_SETTINGS"] = {"connect_timeout": 0.5}
    DBPool(app)
    result = app.test_cli_runner().invoke(args=["dbpool", "check"])
    assert result.exit_code == 1
    assert secret not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("dbpool: error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output


def test_cli_status(server: Server, make_app: Callable[..., Flask]) -> None:
    # Trust auth on the PostgreSQL test server takes any password; the others take none.
    secret = f"pw-{uuid.uuid4().hex}"
    app = make_app(server, password=secret if isinstance(server, PostgresServer) else None)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/load").status_code == 200
    runner = app.test_cli_runner()
    result = runner.invoke(args=["dbpool", "status", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document["status"]) == {f.name for f in fields(dbpool.PoolStatus)}
    assert document["status"]["busy"] == 0
    assert document["status"]["open"] >= 1
    counters = {m["key"]: m["value"] for m in document["metrics"]["counters"]}
    assert counters["dbpool_client_queries_total"] >= 6  # two per /load
    assert {m["key"] for m in document["metrics"]["histograms"]} == {
        "dbpool_pool_wait_duration_seconds",
        "dbpool_client_queries_duration_seconds",
    }
    text_result = runner.invoke(args=["dbpool", "status"])
    assert text_result.exit_code == 0, text_result.output
    for name in ("connection_limit", "busy", "timeouts_total", "dbpool_client_queries_total"):
        assert name in text_result.output
    assert secret not in result.output + text_result.output


# -- a real threaded server under load -----------------------------------------------------


class QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass  # a line per request would drown the test's output


def test_threaded_server_under_load(
    network_server: NetworkServer, make_app: Callable[..., Flask]
) -> None:
    server = network_server
    app = make_app(server, connection_limit=LIMIT, pool_timeout=60)
    tag = app.config["TAG"]
    engine = db.get_engine(app)
    engine.dispose()  # create_app's connection: the count starts from none
    deadline = time.monotonic() + SETTLE  # the server may take a moment to forget sessions
    while server.connections(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connections(tag) == 0

    http_server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    port = http_server.server_port
    serving = threading.Thread(target=http_server.serve_forever, name="flask-server")
    serving.start()

    samples: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append(server.connections(tag))

    errors: list[str] = []
    failing_body = f"failed-{tag}"

    def client(index: int) -> None:
        paths = ["/load"] * REQUESTS_PER_CLIENT
        if index % 4 == 0:
            paths.insert(REQUESTS_PER_CLIENT // 2, f"/fail?body={failing_body}")
        for path in paths:
            expected = 500 if path.startswith("/fail") else 200
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST" if expected == 500 else "GET", path)
                response = conn.getresponse()
                response.read()
                conn.close()
            except Exception as exc:
                errors.append(f"{path}: {exc!r}")
                continue
            if response.status != expected:
                errors.append(f"{path}: HTTP {response.status}, expected {expected}")

    watcher = threading.Thread(target=watch, name="watcher")
    clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    watcher.start()
    started = time.monotonic()
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=120)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        watcher.join(timeout=30)
        http_server.shutdown()
        serving.join(timeout=30)
        http_server.server_close()

    requests = CLIENTS * REQUESTS_PER_CLIENT + CLIENTS // 4
    print(
        f"{server.name}: {requests} requests from {CLIENTS} clients in {elapsed:.2f} s; "
        f"the server saw at most {max(samples)} connections in {len(samples)} looks"
    )
    assert not errors, f"{len(errors)} failed requests, e.g. {errors[:3]}"
    assert len(samples) >= 10, f"the watcher only looked {len(samples)} times"
    assert max(samples) <= LIMIT, f"the server saw {max(samples)} > {LIMIT} connections"
    assert max(samples) == LIMIT, f"the pool never reached {LIMIT}: the test proved nothing"
    status = engine.status()
    assert status.busy == 0 and status.waiting == 0, status
    assert status.timeouts_total == 0
    assert server.open_transactions(tag) == 0
    assert server.count(failing_body) == 0
    assert len(app.config["SESSIONS"]) == CLIENTS // 4  # every failing view did write


GUNICORN_APP = """
import importlib.util, logging, sys

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("DBPOOL %(message)s"))
logging.getLogger("dbpool").addHandler(handler)
logging.getLogger("dbpool").setLevel(logging.DEBUG)
spec = importlib.util.spec_from_file_location("flask_app", {example!r})
module = importlib.util.module_from_spec(spec)
sys.modules["flask_app"] = module
spec.loader.exec_module(module)
app = module.create_app()
"""


def test_gunicorn_gthread_disposes_after_a_graceful_shutdown(tmp_path: Path) -> None:
    """Under gunicorn (gthread), SIGTERM lets the requests finish, the worker exits and
    the engine is disposed on the way out."""
    need_module("gunicorn")
    (tmp_path / "wsgi.py").write_text(
        GUNICORN_APP.format(example=str(ROOT / "examples" / "flask_app.py")), encoding="utf-8"
    )
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'g.db'}?pool_timeout=30",
               PYTHONPATH=str(ROOT))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", "8",
         "--workers", "1", "--bind", "127.0.0.1:0", "--no-control-socket", "wsgi:app"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: list[str] = []
    listening = threading.Event()
    port = 0

    def read() -> None:
        nonlocal port
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found[1])
            if "Booting worker" in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(60), "".join(lines)
        statuses: list[int] = []

        def client(index: int) -> None:
            for _ in range(5):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                if index % 2:
                    conn.request("POST", "/notes", body=json.dumps({"body": f"n{index}"}),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
                else:
                    conn.request("GET", "/notes")
                statuses.append(conn.getresponse().status)
                conn.close()

        clients = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=120)
        assert sorted(set(statuses)) == [200, 201] and len(statuses) == 80
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    output = "".join(lines)
    exiting = output.index("Worker exiting")
    assert "DBPOOL closed a connection" not in output[:exiting], output
    assert "DBPOOL closed a connection" in output[exiting:], output
