"""The MySQL/MariaDB dialect on the real server: URL forms, parameters, charset,
isolation, reset and ping, disconnects and connect errors."""

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

pymysql = pytest.importorskip("pymysql")


@pytest.fixture
def admin(mysql_url: str) -> Iterator[Any]:
    """A plain PyMySQL connection in autocommit, for acting on the server from outside."""
    url = dbpool.make_url(mysql_url)
    conn = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
        database=url.database, autocommit=True,
    )  # fmt: skip
    yield conn
    conn.close()


@pytest.fixture
def table(admin: Any) -> Iterator[str]:
    name = f"dbpool_mysql_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {name} (id INT PRIMARY KEY, name VARCHAR(40)) "
            "CHARACTER SET utf8mb4 ENGINE=InnoDB"
        )
    yield name
    with admin.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")


def admin_insert(admin: Any, table: str, id_: int) -> None:
    with admin.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (id, name) VALUES (%s, 'admin')", (id_,))


def session_status(conn: dbpool.Connection, name: str) -> int:
    row = conn.exec_driver_sql(f"SHOW SESSION STATUS LIKE '{name}'").one()
    return int(row[1])


# -- URLs and parameters -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"])
def test_url_forms(mysql_url: str, engines: list[Engine], scheme: str) -> None:
    url = dbpool.make_url(mysql_url).set(drivername=scheme)
    with engine_for(engines, url).connect() as conn:
        assert conn.execute(text("SELECT DATABASE()")).scalar() == url.database


def test_charset_defaults_to_utf8mb4(mysql_url: str, engines: list[Engine], table: str) -> None:
    engine = engine_for(engines, mysql_url)
    word = "naïve 🐍 漢字"
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT @@character_set_connection").scalar() == "utf8mb4"
        conn.execute(text(f"INSERT INTO {table} (id, name) VALUES (1, :w)"), {"w": word})
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT name FROM {table}")).scalar() == word


def test_query_parameters_reach_pymysql(mysql_url: str, engines: list[Engine]) -> None:
    url = with_query(
        mysql_url,
        charset="latin1",
        init_command="SET @dbpool_init = 42",
        sql_mode="ANSI_QUOTES",
        program_name="dbpool-test",
        local_infile="false",
        write_timeout="5",
    )
    with engine_for(engines, url).connect() as conn:
        assert conn.exec_driver_sql("SELECT @@character_set_client").scalar() == "latin1"
        assert conn.exec_driver_sql("SELECT @dbpool_init").scalar() == 42
        assert conn.exec_driver_sql("SELECT @@sql_mode").scalar() == "ANSI_QUOTES"


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("charst", "utf8", r"'charst'.*Did you mean \"charset\""),
        ("local_infile", "maybe", "local_infile must be true, false"),
        ("read_timeout", "0", "read_timeout must be a number of seconds > 0"),
        ("max_allowed_packet", "-1", "max_allowed_packet must be an integer >= 1"),
        ("schema", "app", "schema is a PostgreSQL setting"),
        ("pgbouncer", "true", "pgbouncer=true is a PostgreSQL setting"),
    ],
)
def test_bad_parameters_are_refused(mysql_url: str, param: str, value: str, message: str) -> None:
    with pytest.raises(dbpool.ConfigError, match=message):
        dbpool.create_engine(with_query(mysql_url, **{param: value}))


def test_read_timeout_applies_to_queries_and_connect_timeout_does_not(
    mysql_url: str, engines: list[Engine]
) -> None:
    # connect_timeout also bounds the server's greeting; it must not stay on the socket.
    slow_ok = engine_for(engines, mysql_url, connect_timeout=1)
    with slow_ok.connect() as conn:
        assert conn.exec_driver_sql("SELECT SLEEP(1.5)").scalar() == 0

    cut = engine_for(engines, with_query(mysql_url, read_timeout="0.5"))
    with cut.connect() as conn:
        with pytest.raises(dbpool.OperationalError) as caught:
            conn.exec_driver_sql("SELECT SLEEP(5)")
        assert caught.value.connection_invalidated  # the stream is out of step: gone
        conn.rollback()
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_connect_timeout_zero_means_pymysqls_largest(
    mysql_url: str, engines: list[Engine]
) -> None:
    with engine_for(engines, mysql_url, connect_timeout=0).connect() as conn:
        assert conn.driver_connection.connect_timeout == 31_536_000


# -- isolation and autocommit ------------------------------------------------------------


@pytest.mark.parametrize(
    "level", ["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
)
def test_isolation_levels(mysql_url: str, engines: list[Engine], level: str) -> None:
    engine = engine_for(engines, mysql_url, isolation_level=level)
    for _ in range(2):
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SHOW SESSION VARIABLES LIKE '%isolation'").all()
            values = {v for n, v in rows if n in ("tx_isolation", "transaction_isolation")}
            assert values == {level.replace(" ", "-")}


def test_autocommit_begin_sends_begin_and_stays_in_autocommit(
    mysql_url: str, engines: list[Engine], table: str
) -> None:
    engine = engine_for(engines, mysql_url, isolation_level="AUTOCOMMIT", connection_limit=1)
    with engine.connect() as conn:
        driver = conn.driver_connection
        assert driver.get_autocommit() is True
        with conn.begin():
            assert engine.dialect.in_transaction(driver) is True
            assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 1
            conn.execute(text(f"INSERT INTO {table} (id) VALUES (1)"))
        assert driver.get_autocommit() is True
        assert engine.dialect.in_transaction(driver) is False


# -- reset and ping ----------------------------------------------------------------------


def test_reset_ends_a_read_only_snapshot_the_server_does_not_flag(
    mysql_url: str, engines: list[Engine], admin: Any, table: str
) -> None:
    # With autocommit off, a SELECT opens a REPEATABLE READ snapshot that the server's
    # status flags do not report; left open, the next user would read stale data.
    engine = engine_for(engines, mysql_url, connection_limit=1)
    raw = engine.pool.connect()
    driver = raw.driver_connection
    with driver.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT @@in_transaction")
        assert cursor.fetchone() == (1,)
    assert not driver.server_status & 0x0001  # the flag that does not say so
    raw.close()
    admin_insert(admin, table, 1)
    with engine.connect() as conn:
        assert conn.driver_connection is driver
        assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 1


def test_returning_a_clean_connection_sends_no_rollback(
    mysql_url: str, engines: list[Engine], table: str
) -> None:
    engine = engine_for(engines, mysql_url, connection_limit=1, pre_ping=False)
    with engine.connect() as conn:
        before = session_status(conn, "Com_rollback")
        conn.commit()
    with engine.connect() as conn:
        conn.execute(text(f"SELECT COUNT(*) FROM {table}"))
        conn.commit()
    with engine.connect() as conn:
        conn.execute(text(f"INSERT INTO {table} (id) VALUES (1)"))  # closed uncommitted
    with engine.connect() as conn:
        assert session_status(conn, "Com_rollback") == before + 1  # that close, only
        conn.commit()

    autocommit = engine_for(
        engines, mysql_url, isolation_level="AUTOCOMMIT", connection_limit=1, pre_ping=False
    )
    with autocommit.connect() as conn:
        before = session_status(conn, "Com_rollback")
    for _ in range(3):
        with autocommit.connect() as conn:
            conn.execute(text(f"SELECT COUNT(*) FROM {table}"))
    with autocommit.connect() as conn:
        assert session_status(conn, "Com_rollback") == before


def test_ping_uses_com_ping(mysql_url: str, engines: list[Engine]) -> None:
    engine = engine_for(engines, mysql_url, connection_limit=1)
    with engine.connect() as conn:
        driver = conn.driver_connection
        questions = session_status(conn, "Questions")
        conn.commit()
    engine.dialect.ping(driver)
    engine.dialect.ping(driver)
    with engine.connect() as conn:
        # COM_PING is not a statement: only the SHOW STATUS itself and the COMMIT counted.
        assert session_status(conn, "Questions") == questions + 2
        conn.commit()
    assert engine.dialect.in_transaction(driver) is False


# -- disconnects -------------------------------------------------------------------------


def connection_id(conn: dbpool.Connection) -> int:
    return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def kill(admin: Any, thread_id: int) -> None:
    with admin.cursor() as cursor:
        cursor.execute(f"KILL {thread_id}")


def test_a_killed_connection_is_detected_and_replaced(
    mysql_url: str, engines: list[Engine], admin: Any
) -> None:
    engine = engine_for(engines, mysql_url, connection_limit=1, pre_ping=False)
    error = faults.a_killed_connection_is_detected_and_replaced(
        engine, connection_id, partial(kill, admin)
    )
    assert isinstance(error.orig, pymysql.OperationalError)


def test_pre_ping_replaces_a_killed_idle_connection(
    mysql_url: str, engines: list[Engine], admin: Any
) -> None:
    engine = engine_for(engines, mysql_url, connection_limit=1, pre_ping=0)
    faults.pre_ping_replaces_a_killed_idle_connection(engine, connection_id, partial(kill, admin))


@pytest.mark.parametrize(
    ("error", "disconnect"),
    [
        (("OperationalError", 2006, "MySQL server has gone away"), True),
        (("OperationalError", 2013, "Lost connection to MySQL server during query"), True),
        (("OperationalError", 2014, "Command Out of Sync"), True),
        (("OperationalError", 2045, "Can't open shared memory"), True),
        (("OperationalError", 2055, "Lost connection to server at 'reading'"), True),
        (("OperationalError", 1927, "Connection was killed"), True),
        (("OperationalError", 4031, "The client was disconnected by the server"), True),
        (("OperationalError", 1053, "Server shutdown in progress"), True),
        (("InterfaceError", 0, ""), True),
        (("InternalError", "Packet sequence number wrong - got 3 expected 1"), True),
        (("Error", "Already closed"), True),
        (("OperationalError", 1205, "Lock wait timeout exceeded"), False),
        (("OperationalError", 1213, "Deadlock found"), False),
        (("ProgrammingError", 1064, "You have an error in your SQL syntax"), False),
        (("IntegrityError", 1062, "Duplicate entry"), False),
    ],
)
def test_disconnect_codes(mysql_url: str, error: tuple[Any, ...], disconnect: bool) -> None:
    dialect = dbpool.create_engine(mysql_url).dialect
    cls = getattr(pymysql.err, error[0])
    assert dialect.is_disconnect(cls(*error[1:])) is disconnect


# -- connect errors ----------------------------------------------------------------------


def assert_names_the_target(error: dbpool.ConnectError, port: int, database: str) -> None:
    assert f"127.0.0.1:{port}/{database}" in str(error)
    assert error.orig is not None


def test_wrong_password(mysql_url: str, mysql_user: tuple[str, str]) -> None:
    user, password = mysql_user
    good = dbpool.make_url(mysql_url).set(username=user, password=password)
    with dbpool.create_engine(good) as engine, engine.connect() as conn:
        assert conn.execute(text("SELECT CURRENT_USER()")).scalar().startswith(user)
    wrong = good.set(password="wrong-" + password)
    with pytest.raises(dbpool.ConnectError) as caught:
        dbpool.create_engine(wrong).open()
    assert_names_the_target(caught.value, good.port or 3306, good.database or "")
    assert "Access denied" in str(caught.value)
    assert password not in str(caught.value) and password not in repr(caught.value)


def test_unknown_database(mysql_url: str) -> None:
    url = dbpool.make_url(mysql_url).set(database="dbpool_no_such_db")
    with pytest.raises(dbpool.ConnectError, match="Unknown database") as caught:
        dbpool.create_engine(url).open()
    assert_names_the_target(caught.value, url.port or 3306, "dbpool_no_such_db")


def test_refused_port(mysql_url: str) -> None:
    port = free_port()
    url = dbpool.make_url(mysql_url).set(host="127.0.0.1", port=port, password="s3cr3t-pw")
    with pytest.raises(dbpool.ConnectError, match="refused") as caught:
        dbpool.create_engine(url).open()
    assert_names_the_target(caught.value, port, url.database or "")
    assert "s3cr3t-pw" not in str(caught.value)


def test_a_silent_server_fails_within_connect_timeout(
    mysql_url: str, silent_server: tuple[str, int]
) -> None:
    host, port = silent_server
    url = dbpool.make_url(mysql_url).set(host=host, port=port)
    engine = dbpool.create_engine(url, connect_timeout=1)
    start = time.monotonic()
    with pytest.raises(dbpool.ConnectError, match="timed out") as caught:
        engine.open()
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed < 1 + 3, elapsed
    assert_names_the_target(caught.value, port, url.database or "")


def test_a_missing_driver_says_which_extra_to_install(
    mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(dbpool.ConfigError, match=r'pip install "dbpool\[mysql\]"'):
        dbpool.create_engine(mysql_url)
