"""Connection budgets without a server: the default application name, the arithmetic,
the one-shot startup check and the command's argument errors. The same against real
servers: tests/integration/test_budget.py."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import appname
from dbpool.appname import MAX_LENGTH, clean, default_application_name
from dbpool.budget import (
    Holder,
    ServerUsage,
    add_startup_check,
    default_headroom,
    parse_headroom,
    plan,
)
from dbpool.cli import main
from dbpool.events import Events
from dbpool.exc import ConfigError
from tests.servers import need_module

SECRET = "S3cret-pw"


# -- the default application name ------------------------------------------------------


@pytest.fixture
def plain_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if started as a script: under ``python -m pytest`` the name
    ``python -m`` ran (pytest) would otherwise win over the argv the test gives."""
    monkeypatch.setattr(appname, "_main_module", lambda: None)


@pytest.mark.parametrize(
    ("argv", "main_module", "expected"),
    [
        (["/srv/app/worker.py", "--once"], None, "dbpool:worker.py"),
        (["/venv/bin/celery", "-A", "shop", "worker"], None, "dbpool:celery"),
        (["/venv/lib/python3.12/site-packages/shop/__main__.py"], "shop.__main__", "dbpool:shop"),
        (["/venv/lib/python3.12/site-packages/shop/jobs.py"], "shop.jobs", "dbpool:shop.jobs"),
        (["/srv/app/__main__.py"], None, "dbpool:app"),  # python /srv/app
        (
            ["/venv/bin/gunicorn", "-w", "4", "-b", "0.0.0.0:8000", "shop.wsgi:application"],
            None,
            "dbpool:gunicorn shop.wsgi",
        ),
        (["/venv/bin/gunicorn", "shop:create_app()"], None, "dbpool:gunicorn shop"),
        (
            [
                "/venv/lib/python3.12/site-packages/uvicorn/__main__.py",
                "api.main:app",
                "--host",
                "localhost:8000",
            ],
            "uvicorn.__main__",
            "dbpool:uvicorn api.main",
        ),
        (["uwsgi", "--module=shop.wsgi:application"], None, "dbpool:uwsgi shop.wsgi"),
        (["/venv/bin/gunicorn", "--config", "gunicorn.conf.py"], None, "dbpool:gunicorn"),
        (["C:\\venv\\Scripts\\gunicorn.exe", "shop.wsgi:app"], None, "dbpool:gunicorn shop.wsgi"),
        (
            ["/venv/lib/python3.12/site-packages/ipykernel_launcher.py", "-f", "/k.json"],
            "ipykernel_launcher",
            "dbpool:jupyter",
        ),
        ([""], None, "dbpool:python"),  # the interactive interpreter
        (["-c"], None, "dbpool:python"),
        ([], None, "dbpool:python"),  # an embedded interpreter
        (["/srv/app/wörker.py"], None, "dbpool:w??rker.py"),  # each non-ASCII byte
    ],
)
def test_default_application_name(
    argv: list[str], main_module: str | None, expected: str, plain_script: None
) -> None:
    assert default_application_name(argv, main_module) == expected


def test_default_application_name_is_the_same_for_every_instance() -> None:
    worker = ["/venv/bin/gunicorn", "--bind", "unix:/run/shop.sock", "shop.wsgi:app"]
    assert default_application_name(worker, None) == default_application_name(worker, None)
    # and this very process gets one too
    assert default_application_name().startswith("dbpool:")


def test_names_fit_postgresqls_limit_in_printable_ascii(plain_script: None) -> None:
    long = default_application_name(["/x/" + "y" * 200 + ".py"], None)
    assert len(long) == MAX_LENGTH
    assert clean("ä\x00b") == "???b"
    assert clean("x" * 70 + "é") == "x" * 63


# -- the arithmetic ---------------------------------------------------------------------


def usage(**changes: Any) -> ServerUsage:
    values: dict[str, Any] = {
        "max_connections": 100,
        "reserved": 3,
        "reserved_by": "superuser_reserved_connections",
        "user": "app",
        "user_limit": None,
        "user_limit_by": "",
        "database_limit": None,
        "holders": (Holder("app", "dbpool:gunicorn shop.wsgi", 12), Holder("admin", None, 5)),
        "dialect_name": "postgresql",
    }
    values.update(changes)
    return ServerUsage(**values)


def test_the_budget_is_the_limit_less_others_and_headroom() -> None:
    result = plan(usage(), instances=4, connection_limit=9, explicit=True, default_limit=9)
    assert result.limit == 97  # 100 - 3 reserved
    assert result.others == 17
    assert result.headroom == 10  # 10% of 97, rounded up
    assert result.budget == 97 - 17 - 10 == 70
    assert result.share == 17  # 70 // 4
    assert result.seeds == 2  # 9 // 4
    assert result.recommended == 2
    assert result.total == 36
    assert result.fits
    assert result.binding == "server"


def test_the_seeds_rule_is_capped_at_the_share() -> None:
    crowded = usage(holders=(Holder("other", "batch", 75),))
    result = plan(crowded, instances=4, connection_limit=2, explicit=True, default_limit=17)
    assert result.budget == 97 - 75 - 10 == 12
    assert (result.seeds, result.share, result.recommended) == (4, 3, 3)
    assert result.fits  # 2 x 4 = 8 <= 12


def test_the_recommendation_is_never_below_one() -> None:
    result = plan(usage(), instances=500, connection_limit=1, explicit=True, default_limit=5)
    assert result.share == 0
    assert result.recommended == 1
    assert not result.fits  # 500 > 70


def test_a_full_server_leaves_a_budget_of_zero_not_less() -> None:
    full = usage(holders=(Holder("other", None, 96),))
    result = plan(full, instances=1, connection_limit=1, explicit=False, default_limit=5)
    assert result.budget == 0
    assert not result.fits


@pytest.mark.parametrize(("headroom", "kept"), [(None, 10), (0, 0), (25, 25), (0.5, 49), (0.0, 0)])
def test_headroom(headroom: float | int | None, kept: int) -> None:
    result = plan(usage(), instances=1, connection_limit=5, explicit=True, default_limit=5,
                  headroom=headroom)  # fmt: skip
    assert result.headroom == kept
    assert result.budget == 97 - 17 - kept


def test_default_headroom_is_a_tenth_but_at_least_three() -> None:
    assert default_headroom(97) == 10
    assert default_headroom(151) == 16
    assert default_headroom(20) == 3
    assert default_headroom(0) == 3


@pytest.mark.parametrize(("text", "value"), [("5", 5), ("0", 0), ("10%", 0.1), (" 15% ", 0.15)])
def test_parse_headroom(text: str, value: float | int) -> None:
    assert parse_headroom(text) == value


@pytest.mark.parametrize("text", ["-1", "ten", "100%", "%", "1.5", "-5%"])
def test_bad_headroom(text: str) -> None:
    with pytest.raises(ConfigError, match="headroom must be"):
        parse_headroom(text)


def test_a_role_limit_binds_before_the_server() -> None:
    limited = usage(user_limit=20, user_limit_by="the role's CONNECTION LIMIT")
    result = plan(limited, instances=2, connection_limit=5, explicit=True, default_limit=5)
    assert result.budget == 20 - 12 == 8  # the role's limit less what app already holds
    assert result.binding == "user"
    assert result.share == 4
    assert not result.fits  # 5 x 2 = 10 > 8, though the server has room
    result = plan(limited, instances=2, connection_limit=4, explicit=True, default_limit=5)
    assert result.fits


def test_a_database_limit_binds_too() -> None:
    limited = usage(database_limit=15, others_same_database=10)
    result = plan(limited, instances=1, connection_limit=5, explicit=True, default_limit=5)
    assert (result.budget, result.binding) == (5, "database")
    assert result.fits


def test_hidden_connections_count_as_others() -> None:
    mysql = usage(reserved=0, reserved_by="", holders=(Holder("app", None, 2),), hidden=40)
    assert mysql.others == 42
    assert mysql.available() == 100 - 42


def test_instances_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="instances"):
        plan(usage(), instances=0, connection_limit=1, explicit=True, default_limit=5)


# -- the startup check --------------------------------------------------------------------


class FakeDialect:
    name = "postgresql"

    def __init__(self, found: ServerUsage | Exception) -> None:
        self.found = found
        self.asked = 0
        self.server_limit: int | None = None

    def describe(self) -> str:
        return "db.internal:5432/shop"

    def server_connections(self, conn: Any) -> ServerUsage:
        self.asked += 1
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


def startup(found: ServerUsage | Exception, limit: int) -> tuple[Events, FakeDialect]:
    events, dialect = Events(), FakeDialect(found)
    add_startup_check(events, dialect, limit)  # type: ignore[arg-type]
    return events, dialect


def test_the_check_warns_with_both_numbers(caplog: pytest.LogCaptureFixture) -> None:
    events, dialect = startup(usage(), 90)
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        events.fire("connect", object())
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "connection_limit=90 is more than postgresql at db.internal:5432/shop" in message
    assert "still give: 80" in message  # 97 - 17: no headroom at start
    assert "max_connections 100 - 3 superuser_reserved_connections" in message
    assert "Lower connection_limit" in message and "PgBouncer" in message
    assert "budget_check=false" in message
    assert dialect.server_limit == 97


def test_the_check_names_a_role_limit(caplog: pytest.LogCaptureFixture) -> None:
    events, _ = startup(usage(user_limit=15, user_limit_by="the role's CONNECTION LIMIT"), 5)
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        events.fire("connect", object())
    message = caplog.records[0].getMessage()
    assert "still give: 3" in message
    assert "user app's limit 15 (the role's CONNECTION LIMIT) minus 12 held by app" in message


def test_no_warning_when_it_fits(caplog: pytest.LogCaptureFixture) -> None:
    events, dialect = startup(usage(), 80)
    with caplog.at_level(logging.DEBUG, logger="dbpool"):
        events.fire("connect", object())
    assert not caplog.records
    assert dialect.server_limit == 97


def test_the_check_runs_once_and_then_costs_nothing() -> None:
    events, dialect = startup(usage(), 5)
    assert events.connect
    events.fire("connect", object())
    assert events.connect == ()  # the hot path's `if events.connect:` is false again
    events.fire("connect", object())
    assert dialect.asked == 1


def test_connections_opening_together_ask_once() -> None:
    events, dialect = startup(usage(), 5)
    listener = events.connect[0]
    barrier = threading.Barrier(8)

    def connect() -> None:
        barrier.wait()
        listener(object())

    threads = [threading.Thread(target=connect) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dialect.asked == 1


def test_a_failing_probe_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    events, dialect = startup(RuntimeError("permission denied for pg_stat_activity"), 5)
    with caplog.at_level(logging.DEBUG, logger="dbpool"):
        events.fire("connect", object())  # does not raise
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert "permission denied" in record.getMessage()
    assert dialect.server_limit is None


def test_create_engine_adds_the_check_only_where_it_applies(tmp_path: Path) -> None:
    sqlite = dbpool.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    assert sqlite.events.connect == ()
    assert sqlite.dialect.application_name is None
    assert sqlite.dialect.server_limit is None
    need_module("psycopg")
    url = "postgresql://app@db.invalid/shop"
    assert len(dbpool.create_engine(url).events.connect) == 1
    assert dbpool.create_engine(url, budget_check=False).events.connect == ()
    assert dbpool.create_engine(url + "?budget_check=false").events.connect == ()
    # through PgBouncer the server's limit is not this pool's to budget
    assert dbpool.create_engine(url + "?pgbouncer=true").events.connect == ()


# -- the application name in the dialects --------------------------------------------------


def test_postgresql_sends_the_default_as_libpqs_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    need_module("psycopg")
    monkeypatch.delenv("PGAPPNAME", raising=False)
    dialect = dbpool.create_engine("postgresql://app@db.invalid/shop").dialect
    assert dialect.application_name == default_application_name()
    assert dialect._params["fallback_application_name"] == dialect.application_name
    assert "application_name" not in dialect._params


@pytest.mark.parametrize(
    ("query", "environ", "connect_args", "expected"),
    [
        ("?application_name=shop-web", None, {}, "shop-web"),
        ("", "from-env", {}, "from-env"),  # libpq: $PGAPPNAME beats the fallback
        ("?application_name=shop-web", "from-env", {}, "shop-web"),
        ("?fallback_application_name=fb", None, {}, "fb"),
        ("?application_name=shop-web", None, {"application_name": "kw"}, "kw"),
        ("?application_name=", None, {}, None),  # an empty name tells nothing apart
        ("?application_name=" + "n" * 70, None, {}, "n" * 63),  # as the server keeps it
    ],
)
def test_postgresql_application_name_overrides(
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    environ: str | None,
    connect_args: dict[str, str],
    expected: str | None,
) -> None:
    need_module("psycopg")
    if environ is None:
        monkeypatch.delenv("PGAPPNAME", raising=False)
    else:
        monkeypatch.setenv("PGAPPNAME", environ)
    engine = dbpool.create_engine("postgresql://app@db.invalid/shop" + query,
                                  connect_args=connect_args)  # fmt: skip
    assert engine.dialect.application_name == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", default_application_name()),
        ("?program_name=shop-web", "shop-web"),
        ("?application_name=shop-web", "shop-web"),  # PostgreSQL's word for the same
        ("?application_name=shop-web&program_name=shop-web", "shop-web"),
        ("?program_name=", None),
    ],
)
def test_mysql_program_name(query: str, expected: str | None) -> None:
    need_module("pymysql")
    dialect = dbpool.create_engine("mysql://app@db.invalid/shop" + query).dialect
    assert dialect.application_name == expected
    assert dialect._params["program_name"] == (expected or "")
    assert "application_name" not in dialect._params  # PyMySQL has no such argument


def test_mysql_program_name_and_application_name_must_agree() -> None:
    need_module("pymysql")
    with pytest.raises(ConfigError, match="program_name and application_name are the same"):
        dbpool.create_engine("mysql://app@db.invalid/shop?program_name=a&application_name=b")


# -- the command's argument errors ---------------------------------------------------------


@pytest.fixture
def _no_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.mark.usefixtures("_no_database_url")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["budget", "postgresql://app@db.invalid/shop"], "required: --instances"),
        (["budget", "--instances", "0"], "integer >= 1"),
        (["budget", "--instances", "four"], "integer >= 1"),
        (["budget", "--instances", "2", "--headroom", "lots"], "headroom must be"),
    ],
)
def test_bad_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert expected in err
    assert err.strip().splitlines()[-1].startswith("dbpool budget: error:")


@pytest.mark.usefixtures("_no_database_url")
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "sqlite has no server connection limit"),  # the embedded default
        ("sqlite:///app.db", "sqlite has no server connection limit"),
        ("postgresql://app@db.invalid/shop?pgbouncer=true", "pgbouncer=true"),
        ("postgresql://app@db.invalid/shop?conection_limit=3", "Did you mean"),
        ("not a url", "Could not parse a database URL"),
    ],
)
def test_what_has_no_budget_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str | None, expected: str
) -> None:
    if url and url.startswith("postgresql"):
        need_module("psycopg")
    code = main(["budget", *([url] if url else []), "--instances", "3"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("dbpool: error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not list(tmp_path.iterdir())  # no SQLite file made on the way


@pytest.mark.usefixtures("_no_database_url")
def test_an_unreachable_server_is_one_line_exit_1_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    need_module("psycopg")
    url = f"postgresql://app:{SECRET}@127.0.0.1:1/shop?connect_timeout=2"
    code = main(["budget", url, "--instances", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""  # nothing for a machine to mistake for an answer
    assert err.startswith("dbpool: error: Cannot connect to postgresql at 127.0.0.1:1/shop")
    assert len(err.strip().splitlines()) == 1
    assert SECRET not in err


# -- MySQL's performance_schema path (off on the test server, so played here) ----------


class FakeMySQLCursor:
    def __init__(self, conn: FakeMySQLConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> FakeMySQLCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def execute(self, sql: str) -> None:
        self.conn.statements.append(sql)
        self.conn.dbpool_dirty = True
        if "session_connect_attrs" in sql:
            if isinstance(self.conn.named, Exception):
                raise self.conn.named
            self.rows = self.conn.named
        elif "Threads_connected" in sql:
            self.rows = [("Threads_connected", "9")]
        else:
            self.rows = [(151, 0, 0, 1, "app", user, n) for user, n in self.conn.users]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class FakeMySQLConnection:
    server_status = 0

    def __init__(
        self,
        named: list[tuple[Any, ...]] | Exception,
        users: tuple[tuple[str, int], ...] = (("app", 3), ("root", 1)),
    ) -> None:
        self.named = named
        self.users = users
        self.statements: list[str] = []
        self.dbpool_dirty = False
        self.rollbacks = 0

    def cursor(self) -> FakeMySQLCursor:
        return FakeMySQLCursor(self)

    def rollback(self) -> None:
        self.rollbacks += 1
        self.dbpool_dirty = False


def test_mysql_names_come_from_performance_schema_when_it_is_on() -> None:
    need_module("pymysql")
    dialect = dbpool.create_engine("mysql://app@db.invalid/shop").dialect
    conn = FakeMySQLConnection([("app", "dbpool:gunicorn shop.wsgi", 3), ("root", None, 1)])
    found = dialect.server_connections(conn)
    assert found.names_visible
    assert set(found.holders) == {
        Holder("app", "dbpool:gunicorn shop.wsgi", 3),
        Holder("root", None, 1),
    }
    assert found.hidden == 0  # it sees root's threads: it has PROCESS, nothing is hidden
    assert conn.rollbacks == 1  # no read snapshot left open


def test_mysql_counts_what_processlist_hides_from_threads_connected() -> None:
    need_module("pymysql")
    dialect = dbpool.create_engine("mysql://app@db.invalid/shop").dialect
    conn = FakeMySQLConnection([("app", "dbpool:worker.py", 3)], users=(("app", 3),))
    found = dialect.server_connections(conn)
    assert found.holders == (Holder("app", "dbpool:worker.py", 3),)
    assert found.hidden == 9 - 1 - 3  # Threads_connected, less the probe, less those seen
    assert found.others == 8


def test_mysql_without_access_to_performance_schema_groups_by_user() -> None:
    need_module("pymysql")
    import pymysql

    dialect = dbpool.create_engine("mysql://app@db.invalid/shop").dialect
    denied = pymysql.err.OperationalError(1142, "SELECT command denied")
    found = dialect.server_connections(FakeMySQLConnection(denied))
    assert not found.names_visible
    assert set(found.holders) == {Holder("app", None, 3), Holder("root", None, 1)}
    assert found.max_connections == 151 and found.user == "app" and found.user_limit is None
