"""Connection budgets on the real servers: ``dbpool budget``'s numbers against the
servers' own views, its exit status as a deploy gate, the startup check's WARNING, and
the name connections carry on the server.

Other sessions may use the servers at the same time, so the tests assert on the
connections they open themselves (tagged with an application name or a role of their
own) and on the servers' settings, never on totals that others move.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

import dbpool
from dbpool.appname import default_application_name
from dbpool.cli import main
from tests.integration.targets import with_query
from tests.servers import admin_query

SECRET = "S3cret-pw"


def tag() -> str:
    return f"dbpool_budget_{uuid.uuid4().hex[:10]}"


def budget(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["budget", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def budget_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = budget(capsys, *argv, "--json")
    assert err == "", err
    document: dict[str, Any] = json.loads(out)
    return code, document


def held_by(document: dict[str, Any], application_name: str) -> int:
    return sum(
        holder["connections"]
        for holder in document["holders"]
        if holder["application_name"] == application_name
    )


@contextmanager
def postgres_connections(url: str, count: int, application_name: str) -> Iterator[None]:
    import psycopg

    with ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(psycopg.connect(url, application_name=application_name))
        yield


@contextmanager
def postgres_role(limit: int) -> Iterator[str]:
    role = tag()
    admin_query("postgresql", f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {limit}")
    try:
        yield role
    finally:
        admin_query(
            "postgresql",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
        )
        admin_query("postgresql", f"DROP ROLE {role}")


@contextmanager
def mysql_user(limit: int) -> Iterator[str]:
    user = tag()
    admin_query("mysql", f"CREATE USER '{user}'@'%' WITH MAX_USER_CONNECTIONS {limit}")
    try:
        admin_query("mysql", f"GRANT SELECT ON test.* TO '{user}'@'%'")
        yield user
    finally:
        admin_query("mysql", f"DROP USER '{user}'@'%'")


def as_user(url: str, user: str) -> str:
    return dbpool.make_url(url).set(username=user).render_as_string(hide_password=False)


# -- dbpool budget on PostgreSQL -------------------------------------------------------------


def test_postgresql_budget_counts_what_others_hold(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, probe = tag(), tag()
    with postgres_connections(postgres_url, 3, name):
        url = with_query(postgres_url, application_name=probe)
        code, document = budget_json(capsys, url, "--instances", "2")
    (max_connections, reserved), = admin_query(
        "postgresql",
        "SELECT current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int",
    )  # fmt: skip
    assert document["server"]["max_connections"] == max_connections
    assert document["server"]["reserved"] == reserved
    assert document["server"]["limit"] == max_connections - reserved
    assert document["server"]["reserved_by"] == "superuser_reserved_connections"
    assert held_by(document, name) == 3  # exactly this test's connections
    assert document["others"] >= 3
    assert document["others"] == sum(h["connections"] for h in document["holders"])
    assert held_by(document, probe) == 0  # the probe's own connection is not counted
    assert document["budget"] == max(
        0, document["server"]["limit"] - document["others"] - document["headroom"]
    )
    assert document["headroom"] == max(3, -(-document["server"]["limit"] // 10))
    assert code == (0 if document["fits"] else 1)


def test_postgresql_budget_table(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = tag()
    with postgres_connections(postgres_url, 2, name):
        code, out, err = budget(capsys, with_query(postgres_url, connection_limit="1"),
                                "--instances", "2")  # fmt: skip
    assert code == 0, err
    assert err == ""  # no progress line when stderr is not a terminal
    lines = out.splitlines()
    assert lines[0].endswith("connection_limit=1 (given)")
    [row] = [line for line in lines if name in line]
    assert row.split() == ["postgres", name, "2"]
    labels = ("server limit", "in use by others", "headroom", "budget for this application",
              "share per instance", "seeds' rule", "recommended connection_limit")  # fmt: skip
    for label in labels:
        assert any(line.startswith(label) for line in lines), label
    assert lines[-1].startswith("connection_limit=1 x 2 instances = 2 <= budget ")
    assert lines[-1].endswith(": fits")


def test_budget_exit_status_gates_a_deploy(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = budget_json(capsys, with_query(postgres_url, connection_limit="1"),
                                 "--instances", "1")  # fmt: skip
    assert (code, document["fits"]) == (0, True)
    assert document["connection_limit"] == 1 and document["connection_limit_explicit"]
    code, out, _ = budget(capsys, postgres_url, "--instances", "1000")
    assert code == 1
    assert "does NOT fit" in out
    assert "put PgBouncer in front of it" in out  # no connection to spare per instance
    code, document = budget_json(capsys, postgres_url, "--instances", "1000")
    assert code == 1
    assert document["fits"] is False
    assert document["share_per_instance"] == 0
    assert document["recommended_connection_limit"] == 1
    assert document["total"] == document["connection_limit"] * 1000


def test_budget_json_shape(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, document = budget_json(capsys, postgres_url, "--instances", "3", "--headroom", "5")
    assert set(document) == {
        "url", "database", "server", "holders", "hidden", "application_names_visible",
        "others", "headroom", "budget", "binding_limit", "instances", "share_per_instance",
        "default_connection_limit", "seeds_rule", "recommended_connection_limit",
        "connection_limit", "connection_limit_explicit", "total", "fits",
    }  # fmt: skip
    assert set(document["server"]) == {"max_connections", "reserved", "reserved_by", "limit",
                                       "user", "user_limit", "database_limit"}  # fmt: skip
    assert document["database"] == "postgresql"
    assert document["headroom"] == 5
    assert document["instances"] == 3
    assert document["connection_limit_explicit"] is False
    assert document["connection_limit"] == document["default_connection_limit"]
    assert document["seeds_rule"] == max(1, document["default_connection_limit"] // 3)
    for holder in document["holders"]:
        assert set(holder) == {"user", "application_name", "connections"}


def test_a_role_limit_is_the_budget(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with postgres_role(4) as role:
        url = as_user(postgres_url, role)
        with postgres_connections(url, 1, tag()):
            code, document = budget_json(capsys, with_query(url, connection_limit="2"),
                                         "--instances", "2")  # fmt: skip
    assert document["server"]["user"] == role
    assert document["server"]["user_limit"] == 4
    assert document["binding_limit"] == "user"
    assert document["budget"] == 3  # 4 less the connection the role holds already
    assert (code, document["fits"]) == (1, False)  # 2 x 2 > 3


def test_the_password_never_shows(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = dbpool.make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    code, out, err = budget(capsys, url, "--instances", "1")  # trust auth: not asked for
    assert code in (0, 1)
    assert SECRET not in out + err
    code, out, err = budget(capsys, url, "--instances", "1", "--json")
    assert SECRET not in out + err


def test_budget_as_a_real_process_keeps_stdout_json(postgres_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dbpool", "budget", postgres_url, "--instances", "2", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["instances"] == 2


# -- dbpool budget on MySQL / MariaDB ---------------------------------------------------------


def test_mysql_budget(mysql_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import pymysql

    url = dbpool.make_url(mysql_url)
    held = [pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                            password=url.password or "") for _ in range(2)]  # fmt: skip
    try:
        code, document = budget_json(capsys, mysql_url, "--instances", "2")
    finally:
        for conn in held:
            conn.close()
    ((max_connections,),) = admin_query("mysql", "SELECT @@global.max_connections")
    assert document["server"]["max_connections"] == max_connections
    assert document["server"]["limit"] == max_connections  # nothing reserved
    assert document["database"] == "mysql"
    root = [h for h in document["holders"] if h["user"] == url.username]
    assert sum(h["connections"] for h in root) >= 2
    assert document["others"] >= 2
    ((performance_schema,),) = admin_query("mysql", "SELECT @@performance_schema")
    assert document["application_names_visible"] is bool(performance_schema)
    assert code == (0 if document["fits"] else 1)


def test_mysql_user_limit_and_what_processlist_hides(
    mysql_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import pymysql

    root = dbpool.make_url(mysql_url)
    hidden = pymysql.connect(host=root.host, port=root.port or 3306, user=root.username,
                             password=root.password or "")  # fmt: skip
    try:
        with mysql_user(3) as user:
            code, document = budget_json(capsys, as_user(mysql_url, user), "--instances", "1")
    finally:
        hidden.close()
    assert document["server"]["user_limit"] == 3
    assert document["binding_limit"] == "user"
    assert document["budget"] == 3
    # Without PROCESS the user sees only its own threads; root's count as hidden.
    assert document["hidden"] >= 1
    assert all(h["user"] == user for h in document["holders"])
    assert document["others"] == document["hidden"] + sum(
        h["connections"] for h in document["holders"]
    )
    assert code == (0 if document["fits"] else 1)


# -- the startup check -------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "can still give" in r.getMessage()]  # fmt: skip


def test_startup_warning_for_a_role_limit(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_role(3) as role:
        url = as_user(postgres_url, role)
        engine = dbpool.create_engine(url, connection_limit=5)
        try:
            with caplog.at_level(logging.DEBUG, logger="dbpool"):
                with engine.connect() as conn, engine.connect() as other:
                    conn.exec_driver_sql("SELECT 1")
                    other.exec_driver_sql("SELECT 1")
                    # the probe left the first connection without a transaction
                    assert engine.dialect.server_limit is not None
        finally:
            engine.dispose()
    [message] = warnings_of(caplog)  # once, though two connections were opened
    assert f"connection_limit=5 is more than postgresql at {engine.dialect.describe()}" in message
    assert "can still give: 3" in message
    assert f"user {role}'s limit 3 (the role's CONNECTION LIMIT)" in message
    ((limit,),) = admin_query(
        "postgresql",
        "SELECT current_setting('max_connections')::int "
        "- current_setting('superuser_reserved_connections')::int",
    )
    assert engine.dialect.server_limit == limit


def test_no_startup_warning_with_budget_check_false(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_role(3) as role:
        url = with_query(as_user(postgres_url, role), budget_check="false")
        with dbpool.create_engine(url, connection_limit=5) as engine:
            with caplog.at_level(logging.DEBUG, logger="dbpool"), engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
    assert warnings_of(caplog) == []
    assert engine.dialect.server_limit is None


def test_no_startup_warning_when_it_fits(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_role(3) as role:
        with dbpool.create_engine(as_user(postgres_url, role), connection_limit=3) as engine:
            with caplog.at_level(logging.DEBUG, logger="dbpool"), engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
    assert warnings_of(caplog) == []
    assert engine.dialect.server_limit is not None


def test_startup_warning_on_the_server_limit(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with dbpool.create_engine(postgres_url, connection_limit=1000) as engine:
        with caplog.at_level(logging.WARNING, logger="dbpool"), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    [message] = warnings_of(caplog)
    assert "connection_limit=1000 is more than" in message
    assert "the server's limit" in message and "max_connections" in message


@pytest.mark.parametrize("isolation_level", [None, "AUTOCOMMIT"])
def test_the_probe_leaves_the_first_connection_clean(
    postgres_url: str, mysql_url: str, isolation_level: str | None
) -> None:
    settings: dict[str, Any] = {"connection_limit": 1}
    if isolation_level:
        settings["isolation_level"] = isolation_level
    for url in (postgres_url, mysql_url):
        with dbpool.create_engine(url, **settings) as engine:
            with engine.connect() as conn:
                assert engine.dialect.server_limit is not None  # the probe ran
                assert engine.dialect.in_transaction(conn.driver_connection) is False


def test_mysql_startup_warning_for_a_user_limit(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with mysql_user(2) as user:
        with dbpool.create_engine(as_user(mysql_url, user), connection_limit=4) as engine:
            with caplog.at_level(logging.WARNING, logger="dbpool"), engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
    [message] = warnings_of(caplog)
    assert "can still give: 2" in message
    assert f"user {user}'s limit 2 (the account's MAX_USER_CONNECTIONS)" in message
    assert "PgBouncer" not in message


# -- the name on the server ------------------------------------------------------------------


def test_postgresql_connections_carry_the_default_name(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGAPPNAME", raising=False)
    with dbpool.create_engine(postgres_url) as engine, engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        ((seen,),) = admin_query(
            "postgresql", f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}"
        )
    assert seen == engine.dialect.application_name == default_application_name()
    assert seen.startswith("dbpool:")


def test_postgresql_name_overrides(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = tag()
    monkeypatch.setenv("PGAPPNAME", name + "-env")
    for url, expected in ((postgres_url, name + "-env"),
                          (with_query(postgres_url, application_name=name), name)):  # fmt: skip
        with dbpool.create_engine(url) as engine, engine.connect() as conn:
            seen = conn.exec_driver_sql("SELECT current_setting('application_name')").scalar()
        assert seen == engine.dialect.application_name == expected


def test_mysql_connections_carry_the_program_name(mysql_url: str) -> None:
    name = tag()
    for url, expected in ((mysql_url, default_application_name()),
                          (with_query(mysql_url, application_name=name), name),
                          (with_query(mysql_url, program_name=name), name)):  # fmt: skip
        engine = dbpool.create_engine(url)
        conn = engine.dialect.connect()
        try:
            assert engine.dialect.application_name == expected
            # what PyMySQL sends in the handshake's connection attributes
            assert conn._connect_attrs["program_name"] == expected
        finally:
            conn.close()


def test_mysql_program_name_on_the_server(mysql_url: str) -> None:
    ((performance_schema,),) = admin_query("mysql", "SELECT @@performance_schema")
    if not performance_schema:
        pytest.skip("performance_schema is OFF on this server: it keeps no connection attributes")
    name = tag()
    with dbpool.create_engine(with_query(mysql_url, program_name=name)) as engine:
        with engine.connect() as conn:
            thread = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            rows = admin_query(
                "mysql",
                "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs "
                f"WHERE PROCESSLIST_ID = {thread} AND ATTR_NAME = 'program_name'",
            )
    assert rows == [(name,)]


def test_a_creators_open_transaction_is_left_alone(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    def creator() -> Any:
        conn = psycopg.connect(postgres_url)  # autocommit off
        conn.execute("SET search_path TO pg_catalog")  # inside a transaction, not committed
        return conn

    with dbpool.create_engine(postgres_url, creator=creator, connection_limit=1000) as engine:
        with caplog.at_level(logging.DEBUG, logger="dbpool"), engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW search_path").scalar() == "pg_catalog"
    assert warnings_of(caplog) == []
    assert any("budget check skipped" in r.getMessage() for r in caplog.records)
    assert engine.dialect.server_limit is None
