"""The PostgreSQL dialect on the real server: URL forms, parameters, search_path,
isolation, reset and ping costs, disconnects and connect errors."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

import dbpool
from dbpool import Engine, text
from tests.engines import engine_for
from tests.integration import faults
from tests.integration.targets import with_query
from tests.pgbouncer import free_port

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def admin(postgres_url: str) -> Iterator[Any]:
    """A plain psycopg connection in autocommit, for looking at the server from outside."""
    url = dbpool.make_url(postgres_url)
    with psycopg.connect(
        host=url.host, port=url.port, dbname=url.database, user=url.username,
        password=url.password, autocommit=True,
    ) as conn:  # fmt: skip
        yield conn


def backend_state(admin: Any, pid: int) -> tuple[str, str]:
    """(state, last query) of a backend, as the server sees it."""
    row = admin.execute(
        "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


# -- URLs and parameters -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_url_forms(postgres_url: str, engines: list[Engine], scheme: str) -> None:
    url = dbpool.make_url(postgres_url).set(drivername=scheme)
    engine = engine_for(engines, url)
    assert engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == url.database


def test_libpq_parameters_are_passed_through(postgres_url: str, engines: list[Engine]) -> None:
    name = f"dbpool-{uuid.uuid4().hex[:8]}"
    url = with_query(
        postgres_url,
        application_name=name,
        options="-c statement_timeout=4321",
        sslmode="disable",
        keepalives_idle="30",
    )
    with engine_for(engines, url).connect() as conn:
        assert conn.exec_driver_sql("SHOW application_name").scalar() == name
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "4321ms"
        info = conn.driver_connection.info.get_parameters()
        assert info["sslmode"] == "disable" and info["keepalives_idle"] == "30"


def test_unknown_query_parameter_is_rejected_with_a_suggestion(postgres_url: str) -> None:
    with pytest.raises(dbpool.ConfigError, match=r"'sslmod'.*Did you mean \"sslmode\""):
        dbpool.create_engine(with_query(postgres_url, sslmod="require"))


def test_a_host_in_both_url_and_query_is_rejected(postgres_url: str) -> None:
    with pytest.raises(dbpool.ConfigError, match="host is given twice"):
        dbpool.create_engine(with_query(postgres_url, host="/var/run/postgresql"))


@pytest.mark.parametrize(("setting", "sent"), [(2.2, "3"), (0.3, "1"), (7, "7")])
def test_connect_timeout_reaches_libpq_in_whole_seconds(
    postgres_url: str, engines: list[Engine], setting: float, sent: str
) -> None:
    engine = engine_for(engines, postgres_url, connect_timeout=setting)
    with engine.connect() as conn:
        assert conn.driver_connection.info.get_parameters()["connect_timeout"] == sent


# -- schema ------------------------------------------------------------------------------


def test_schema_sets_the_search_path_and_survives_reset_all(
    postgres_url: str, engines: list[Engine], admin: Any
) -> None:
    schema = f"Dbpool Schema {uuid.uuid4().hex[:6]}"  # a space and capitals: quoting matters
    quoted = '"' + schema + '"'
    admin.execute(f"CREATE SCHEMA {quoted}")
    try:
        engine = engine_for(engines, postgres_url, schema=schema)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_schema()")).scalar() == schema
            conn.exec_driver_sql("CREATE TABLE placed (id INT)")
        where = admin.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'placed'"
        ).fetchall()
        assert where == [(schema,)]
        with engine.connect() as conn:
            conn.exec_driver_sql("RESET ALL")  # back to the startup value, which is ours
            assert conn.execute(text("SELECT current_schema()")).scalar() == schema
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM placed").scalar() == 0
    finally:
        for engine in engines:
            engine.dispose()
        admin.execute(f"DROP SCHEMA {quoted} CASCADE")


def test_schema_and_options_combine(postgres_url: str, engines: list[Engine]) -> None:
    url = with_query(postgres_url, options="-c statement_timeout=1234", schema="pg_catalog")
    with engine_for(engines, url).connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1234ms"
        assert conn.execute(text("SELECT current_schema()")).scalar() == "pg_catalog"


def test_schema_is_refused_with_pgbouncer(postgres_url: str) -> None:
    with pytest.raises(dbpool.ConfigError, match="schema cannot be used with pgbouncer=true"):
        dbpool.create_engine(with_query(postgres_url, pgbouncer="true", schema="app"))


# -- isolation and autocommit ------------------------------------------------------------


@pytest.mark.parametrize(
    "level", ["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
)
def test_isolation_levels(postgres_url: str, engines: list[Engine], level: str) -> None:
    engine = engine_for(engines, postgres_url, isolation_level=level)
    for _ in range(2):  # on a fresh and on a reused connection
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == level.lower()


def test_autocommit_engine_uses_driver_autocommit(
    postgres_url: str, engines: list[Engine]
) -> None:
    engine = engine_for(engines, postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        assert conn.driver_connection.autocommit is True
        with conn.begin():
            assert conn.driver_connection.autocommit is False
        assert conn.driver_connection.autocommit is True


# -- costs of reset and ping -------------------------------------------------------------


def test_returning_an_idle_connection_sends_nothing(
    postgres_url: str, engines: list[Engine], admin: Any
) -> None:
    # The server's own record of each backend's last statement shows what reset sent.
    autocommit = engine_for(
        engines, postgres_url, isolation_level="AUTOCOMMIT", connection_limit=1, pre_ping=False
    )
    marker = f"SELECT 1 AS marker_{uuid.uuid4().hex[:8]}"
    with autocommit.connect() as conn:
        pid = conn.driver_connection.info.backend_pid
        conn.exec_driver_sql(marker)
    assert backend_state(admin, pid) == ("idle", marker)

    transactional = engine_for(engines, postgres_url, connection_limit=1, pre_ping=False)
    with transactional.connect() as conn:
        pid = conn.driver_connection.info.backend_pid
        conn.exec_driver_sql(marker)
        conn.commit()
    assert backend_state(admin, pid) == ("idle", "COMMIT")  # no ROLLBACK after the COMMIT


def test_ping_is_one_empty_query_and_leaves_no_transaction(
    postgres_url: str, engines: list[Engine], admin: Any
) -> None:
    engine = engine_for(engines, postgres_url, connection_limit=1, pre_ping=0)
    with engine.connect() as conn:
        driver = conn.driver_connection
        pid = driver.info.backend_pid
    assert driver.autocommit is False
    engine.dialect.ping(driver)
    assert backend_state(admin, pid) == ("idle", "")
    assert driver.autocommit is False
    assert engine.dialect.in_transaction(driver) is False
    with engine.connect() as conn:  # pre_ping=0: pinged on checkout, then used
        assert conn.driver_connection is driver
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_row_counts_read_from_psycopgs_slot_match_its_property(
    postgres_url: str, engines: list[Engine]
) -> None:
    from dbpool.dialects.postgresql import rowcount_is_slot

    # The slot is read only while psycopg's property does nothing but return it.
    assert rowcount_is_slot(psycopg)
    engine = engine_for(engines, postgres_url)
    table = f"rc_{uuid.uuid4().hex[:8]}"
    statements = [  # (SQL, binds, the row count psycopg gives)
        (f"CREATE TEMP TABLE {table} (x int)", None, -1),
        (f"INSERT INTO {table} SELECT generate_series(1, 70)", None, 70),
        (f"UPDATE {table} SET x = x WHERE x < :n", {"n": 0}, 0),
        (f"UPDATE {table} SET x = x WHERE x < :n", {"n": 2}, 1),
        (f"DELETE FROM {table} WHERE x > :n", {"n": 65}, 5),
        (f"SELECT x FROM {table} WHERE x <= :n", {"n": 3}, 3),
        (f"INSERT INTO {table} VALUES (:x)", [{"x": 1}, {"x": 2}], 2),
    ]
    with engine.begin() as conn:
        for sql, params, expected in statements:
            got = conn.execute(text(sql), params).rowcount
            assert got == conn._record.cursor.rowcount == expected, sql  # type: ignore[union-attr]


def test_a_creator_cursor_without_the_slot_gets_its_row_count(postgres_url: str) -> None:
    class Cursor:  # psycopg-shaped, but not psycopg's: no _rowcount
        pgresult = None
        rowcount = 7

    engine = dbpool.create_engine(postgres_url)
    try:
        assert engine.dialect.result(Cursor()).rowcount == 7
        Cursor.rowcount = 700  # past the shared results
        assert engine.dialect.result(Cursor()).rowcount == 700
        Cursor.rowcount = None  # unknown, in PEP 249's first spelling
        assert engine.dialect.result(Cursor()).rowcount == -1
    finally:
        engine.dispose()


@pytest.mark.parametrize("socket_timeout", [0, 30], ids=["psycopg classes", "bounded classes"])
def test_a_psycopg_pipeline_inside_engine_begin(
    postgres_url: str, engines: list[Engine], socket_timeout: float
) -> None:
    # The recipe of docs/databases/postgresql.md ("Fewer round trips"): the transaction
    # stays the Engine's, committed at the block's end, or rolled back when a pipelined
    # statement failed, and the connection goes back to the pool fit for use.
    engine = engine_for(engines, postgres_url, connection_limit=1, socket_timeout=socket_timeout)
    table = f"pl_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int PRIMARY KEY, balance int)")
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 100), (2, 0)")

    def transfer(amount: int, divisor: int) -> tuple[int, ...] | None:
        with engine.begin() as conn:
            pg = conn.driver_connection
            with pg.cursor() as cur, pg.cursor() as total:
                with pg.pipeline():
                    cur.execute(
                        f"UPDATE {table} SET balance = balance - %s WHERE id = 1", (amount,)
                    )
                    cur.execute(
                        f"UPDATE {table} SET balance = balance + %s / %s WHERE id = 2",
                        (amount, divisor),
                    )
                    total.execute(f"SELECT sum(balance) FROM {table}")
                return total.fetchone()

    try:
        assert transfer(30, 1) == (100,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            transfer(50, 0)  # the first UPDATE ran; the block rolled it back
        status = engine.pool.status()
        assert (status.open, status.busy, status.idle) == (1, 0, 1)
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT id, balance FROM {table} ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(1, 70), (2, 30)]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")


def test_in_transaction_follows_the_server(postgres_url: str, engines: list[Engine]) -> None:
    engine = engine_for(engines, postgres_url, connection_limit=1)
    dialect = engine.dialect
    with engine.connect() as conn:
        driver = conn.driver_connection
        assert dialect.in_transaction(driver) is False
        conn.execute(text("SELECT 1"))
        assert dialect.in_transaction(driver) is True
        with pytest.raises(dbpool.ProgrammingError):
            conn.exec_driver_sql("SELEC 1")
        assert dialect.in_transaction(driver) is True  # failed, still to be rolled back
        conn.rollback()
        assert dialect.in_transaction(driver) is False
    driver.close()
    assert dialect.in_transaction(driver) is None


# -- disconnects -------------------------------------------------------------------------


def backend_pid(conn: dbpool.Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(admin: Any, pid: int) -> None:
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_terminated_backend_is_detected_and_replaced(
    postgres_url: str, engines: list[Engine], admin: Any
) -> None:
    engine = engine_for(engines, postgres_url, connection_limit=1, pre_ping=False)
    error = faults.a_killed_connection_is_detected_and_replaced(
        engine, backend_pid, partial(terminate, admin)
    )
    assert isinstance(error.orig, psycopg.errors.AdminShutdown)


def test_pre_ping_replaces_a_dead_idle_connection(
    postgres_url: str, engines: list[Engine], admin: Any
) -> None:
    engine = engine_for(engines, postgres_url, connection_limit=1, pre_ping=0)
    faults.pre_ping_replaces_a_killed_idle_connection(
        engine, backend_pid, partial(terminate, admin)
    )


@pytest.mark.parametrize(
    ("sqlstate", "disconnect"),
    [
        ("08000", True),
        ("08003", True),
        ("08006", True),
        ("08P01", True),
        ("57P01", True),
        ("57P02", True),
        ("57P03", True),
        ("57014", False),  # query_canceled: the connection is fine
        ("40001", False),
        ("42601", False),
        ("23505", False),
    ],
)
def test_disconnect_sqlstates(postgres_url: str, sqlstate: str, disconnect: bool) -> None:
    dialect = dbpool.create_engine(postgres_url).dialect
    assert dialect.is_disconnect(psycopg.errors.lookup(sqlstate)("x")) is disconnect


@pytest.mark.parametrize(
    ("message", "disconnect"),
    [
        ("the connection is closed", True),
        ("consuming input failed: server closed the connection unexpectedly", True),
        ("sending query failed: could not send data to server: Broken pipe", True),
        ("connection socket closed", True),
        ("sending query and params failed: number of parameters must be <= 65535", False),
    ],
)
def test_disconnect_messages_without_sqlstate(
    postgres_url: str, message: str, disconnect: bool
) -> None:
    dialect = dbpool.create_engine(postgres_url).dialect
    assert dialect.is_disconnect(psycopg.OperationalError(message)) is disconnect
    assert dialect.is_disconnect(psycopg.ProgrammingError(message)) is False


# -- connect errors ----------------------------------------------------------------------


def assert_names_the_target(error: dbpool.ConnectError, port: int, database: str) -> None:
    message = str(error)
    assert f"127.0.0.1:{port}/{database}" in message
    assert error.orig is not None


def test_unknown_database(postgres_url: str) -> None:
    url = dbpool.make_url(postgres_url).set(database="dbpool_no_such_db", password="s3cr3t-pw")
    with pytest.raises(dbpool.ConnectError) as caught:
        dbpool.create_engine(url, connect_timeout=5).open()
    assert_names_the_target(caught.value, url.port or 5432, "dbpool_no_such_db")
    assert "does not exist" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


def test_refused_port(postgres_url: str) -> None:
    port = free_port()
    url = dbpool.make_url(postgres_url).set(host="127.0.0.1", port=port, password="s3cr3t-pw")
    with pytest.raises(dbpool.ConnectError) as caught:
        dbpool.create_engine(url, connect_timeout=5).open()
    assert_names_the_target(caught.value, port, url.database or "")
    assert "refused" in str(caught.value).lower()
    assert "s3cr3t-pw" not in str(caught.value)


def test_wrong_password_through_pgbouncer(pgbouncer_url: str) -> None:
    # The test server trusts 127.0.0.1 (any password logs in), but PgBouncer checks
    # passwords with SCRAM itself: the same libpq failure a real server gives.
    good = dbpool.make_url(pgbouncer_url)
    url = good.set(password="wrong-" + (good.password or ""))
    with pytest.raises(dbpool.ConnectError) as caught:
        dbpool.create_engine(with_query(url.render_as_string(False), pgbouncer="true")).open()
    assert_names_the_target(caught.value, good.port or 0, good.database or "")
    assert "authentication failed" in str(caught.value)
    assert (url.password or "") not in str(caught.value)


def test_wrong_password_on_the_server(
    postgres_url: str, admin: Any, engines: list[Engine]
) -> None:
    role, password = f"dbpool_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        url = dbpool.make_url(postgres_url).set(username=role, password="not-" + password)
        engine = engine_for(engines, url)
        try:
            engine.open()
        except dbpool.ConnectError as error:
            assert "authentication failed" in str(error)
            assert "not-" + password not in str(error)
        else:
            pytest.skip(
                "pg_hba.conf trusts this client, so any password logs in; "
                "test_wrong_password_through_pgbouncer and the MySQL tests prove the error"
            )
    finally:
        for engine in engines:
            engine.dispose()
        admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_silent_server_fails_within_connect_timeout(
    postgres_url: str, silent_server: tuple[str, int]
) -> None:
    host, port = silent_server
    url = dbpool.make_url(postgres_url).set(host=host, port=port)
    engine = dbpool.create_engine(url, connect_timeout=2)  # psycopg's smallest limit
    start = time.monotonic()
    with pytest.raises(dbpool.ConnectError) as caught:
        engine.open()
    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed < 2 + 3, elapsed
    assert_names_the_target(caught.value, port, url.database or "")
    assert "timeout" in str(caught.value).lower()


def test_a_missing_driver_says_which_extra_to_install(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes "import psycopg" fail
    with pytest.raises(dbpool.ConfigError, match=r'pip install "dbpool\[postgresql\]"'):
        dbpool.create_engine(postgres_url)
