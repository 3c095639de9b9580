"""The pyodbc adapter end to end, through real ODBC drivers to real servers.

SQL Server cannot run here, so the ODBC machinery that ``mssql://`` shares with
``odbc://`` is proven through unixODBC and Debian's psqlODBC (``PostgreSQL Unicode``)
and MariaDB Connector/ODBC (``MariaDB Unicode``) drivers, against the PostgreSQL and
MariaDB test servers: statements and binds, commit and rollback as the server sees
them, reset on return, ping, error classes, killed connections, connect errors, the
login timeout, isolation levels, and connection-string quoting as it reaches the server.
The shared engine behaviour suite runs over both drivers too (targets.py).
"""

from __future__ import annotations

import datetime
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import dbpool
from dbpool import (
    ConnectError,
    DataError,
    Engine,
    IntegrityError,
    ProgrammingError,
    create_engine,
    make_url,
    text,
)
from tests.integration import faults
from tests.integration.faults import PostgresBackends
from tests.integration.targets import odbc_url, with_query
from tests.pgbouncer import free_port
from tests.servers import (
    MYSQL_URL,
    ODBC_MARIADB_DRIVER,
    ODBC_POSTGRES_DRIVER,
    POSTGRES_URL,
    need,
    need_module,
    need_odbc_driver,
)
from tests.test_misuse import wait_until

SECRET = "Pw;{x}}=+% y"  # braces, ';', '=', and psqlODBC's percent-decoding bait '+%'


def pyodbc_error() -> type[BaseException]:
    import pyodbc

    error: type[BaseException] = pyodbc.Error
    return error


class PostgresODBCBackends(PostgresBackends):
    """PostgreSQL's view of the backends psqlODBC opened with one application_name."""

    def in_transaction(self, backend: int) -> bool:
        return self.state(backend) == "idle in transaction"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(sql)
        return list(cursor.fetchall()) if cursor.description else []


class MariaDBODBCBackends(faults.MariaDBBackends):
    """MariaDB's view of the connections an engine opened through its ODBC driver."""

    def note(self, dbapi_connection: Any) -> None:
        """The engines' ``connect`` listener: pyodbc has no thread_id(), so ask the server."""
        cursor = dbapi_connection.cursor()
        self.opened.add(int(cursor.execute("SELECT CONNECTION_ID()").fetchval()))
        cursor.close()

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self._query(sql, params)

    def state(self, backend: int) -> str:
        rows = self._query(
            "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s", (backend,)
        )
        if not rows:
            return "gone"
        # MariaDB's ODBC driver prepares statements: they run as "Execute", not "Query".
        return "active" if rows[0][0] in ("Query", "Execute") else str(rows[0][0]).lower()

    def in_transaction(self, backend: int) -> bool:
        # InnoDB refreshes this table only when it was not read for 0.1 s: reads must not
        # come closer together than that, or it never changes.
        time.sleep(0.15)
        rows = self._query(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s",
            (backend,),
        )
        return bool(rows[0][0])


@dataclass
class ODBC:
    """One server reached through its ODBC driver."""

    name: str
    driver: str
    server_url: str
    url: str
    server: Any  # PostgresODBCBackends | MariaDBODBCBackends
    sleep_sql: str
    isolation_sql: str
    engines: list[Engine] = field(default_factory=list)

    def engine(self, url: str | None = None, **settings: Any) -> Engine:
        settings.setdefault("pool_timeout", 20)
        engine = create_engine(url or self.url, **settings)
        if isinstance(self.server, MariaDBODBCBackends):
            engine.events.on("connect", self.server.note)
        self.engines.append(engine)
        return engine

    def url_with(self, **parts: Any) -> str:
        """The ODBC URL with URL parts replaced (user, password, host, port, database)."""
        return make_url(self.url).set(**parts).render_as_string(hide_password=False)


@pytest.fixture(params=["postgresql", "mariadb"])
def odbc(request: pytest.FixtureRequest) -> Iterator[ODBC]:
    fixture: ODBC
    if request.param == "postgresql":
        need_odbc_driver(ODBC_POSTGRES_DRIVER)
        need_module("psycopg")
        need(POSTGRES_URL)
        name = f"dbpool-odbc-{uuid.uuid4().hex[:12]}"
        url = with_query(
            odbc_url(POSTGRES_URL, ODBC_POSTGRES_DRIVER), pqopt=f"application_name={name}"
        )
        fixture = ODBC(
            "postgresql", ODBC_POSTGRES_DRIVER, POSTGRES_URL, url,
            PostgresODBCBackends(POSTGRES_URL, name),
            sleep_sql="SELECT pg_sleep(60)", isolation_sql="SHOW transaction_isolation",
        )  # fmt: skip
    else:
        need_odbc_driver(ODBC_MARIADB_DRIVER)
        need_module("pymysql")
        need(MYSQL_URL)
        fixture = ODBC(
            "mariadb", ODBC_MARIADB_DRIVER, MYSQL_URL, odbc_url(MYSQL_URL, ODBC_MARIADB_DRIVER),
            MariaDBODBCBackends(MYSQL_URL),
            sleep_sql="SELECT SLEEP(60)", isolation_sql="SELECT @@tx_isolation",
        )  # fmt: skip
    yield fixture
    for engine in fixture.engines:
        engine.dispose()
    fixture.server.close()


@pytest.fixture
def table(odbc: ODBC) -> Iterator[str]:
    name = f"dbpool_odbc_{uuid.uuid4().hex[:12]}"
    odbc.server.query(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(10), d DATE)")
    yield name
    odbc.server.query(f"DROP TABLE IF EXISTS {name}")


# -- statements and transactions ------------------------------------------------------------------


def test_binds_types_commit_and_rollback_as_the_server_sees_them(odbc: ODBC, table: str) -> None:
    engine = odbc.engine(connection_limit=2)
    insert = text(f"INSERT INTO {table} (id, name, d) VALUES (:id, :name, :d)")
    with engine.connect() as conn:
        conn.execute(insert, {"id": 1, "name": "Zoë €", "d": datetime.date(2024, 2, 29)})
        assert odbc.server.query(f"SELECT id FROM {table}") == []  # not committed yet
        conn.commit()
        assert [tuple(r) for r in odbc.server.query(f"SELECT id, name FROM {table}")] == [
            (1, "Zoë €")
        ]
        conn.execute(
            insert, [{"id": 2, "name": None, "d": None}, {"id": 3, "name": "x", "d": None}]
        )
        conn.rollback()
        conn.execute(insert, {"id": 4, "name": "kept?", "d": None})
    # closed without commit: rolled back
    assert [r[0] for r in odbc.server.query(f"SELECT id FROM {table}")] == [1]
    with engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT id, name, d FROM {table} WHERE id = :id AND name = :name"),
            {"id": 1, "name": "Zoë €"},
        ).one()
        assert (row.id, row.name, row.d) == (1, "Zoë €", datetime.date(2024, 2, 29))
        assert conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE name IS NULL")).scalar() == 0


def test_reset_on_return_leaves_no_transaction_on_the_server(odbc: ODBC, table: str) -> None:
    engine = odbc.engine(connection_limit=1)
    conn = engine.connect()
    backend = odbc.server.backend_id(conn)
    conn.exec_driver_sql(f"INSERT INTO {table} (id) VALUES (1)")
    assert wait_until(lambda: odbc.server.in_transaction(backend))
    conn.close()
    assert wait_until(lambda: not odbc.server.in_transaction(backend))
    assert odbc.server.query(f"SELECT id FROM {table}") == []
    with engine.connect() as again:  # the same server connection, clean
        assert odbc.server.backend_id(again) == backend


def test_pool_checkin_alone_rolls_back_a_raw_transaction(odbc: ODBC, table: str) -> None:
    # Without the engine's Connection, only the dialect's reset cleans up on return.
    engine = odbc.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = odbc.server.backend_id(conn)
    raw = engine.pool.connect()
    cursor = raw.cursor()
    cursor.execute(f"INSERT INTO {table} (id) VALUES (7)")
    cursor.close()
    assert wait_until(lambda: odbc.server.in_transaction(backend))
    raw.close()
    assert wait_until(lambda: not odbc.server.in_transaction(backend))
    assert odbc.server.query(f"SELECT id FROM {table}") == []


def test_ping_leaves_no_transaction_open(odbc: ODBC) -> None:
    engine = odbc.engine(connection_limit=1, pre_ping=0)  # ping at every checkout
    with engine.connect() as conn:
        backend = odbc.server.backend_id(conn)
    pings: list[Any] = []
    engine.events.on("checkout", pings.append)
    with engine.connect():  # pinged, nothing run yet
        assert len(pings) == 1
        assert not odbc.server.in_transaction(backend)
        assert odbc.server.ids() == {backend}


@pytest.mark.parametrize(
    "level", ["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
)
def test_isolation_level_is_set_on_each_connection(odbc: ODBC, level: str) -> None:
    engine = odbc.engine(isolation_level=level, connection_limit=2)
    conns = [engine.connect() for _ in range(2)]
    for conn in conns:
        shown = conn.exec_driver_sql(odbc.isolation_sql).scalar()
        assert str(shown).replace("-", " ").upper() == level
        conn.close()


def test_autocommit_engine_runs_without_transactions(odbc: ODBC, table: str) -> None:
    engine = odbc.engine(isolation_level="AUTOCOMMIT", connection_limit=1)
    with engine.connect() as conn:
        backend = odbc.server.backend_id(conn)
        conn.exec_driver_sql(f"INSERT INTO {table} (id) VALUES (1)")
        assert odbc.server.query(f"SELECT id FROM {table}") == [(1,)]
        assert not odbc.server.in_transaction(backend)
        assert engine.dialect.in_transaction(conn.driver_connection) is False


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELEC 1", ProgrammingError),
        ("SELECT * FROM dbpool_no_such_table", ProgrammingError),
        ("INSERT INTO {table} (id) VALUES (1)", IntegrityError),
        ("INSERT INTO {table} (id, name) VALUES (2, 'far too long for ten')", DataError),
    ],
)
def test_bad_statements_raise_pep249_errors_and_leave_the_pool_healthy(
    odbc: ODBC, table: str, sql: str, error: type[dbpool.DBAPIError]
) -> None:
    engine = odbc.engine(connection_limit=1)
    if odbc.name == "mariadb":  # strict mode, so a long value is an error and not a warning
        engine.events.on(
            "connect", lambda c: c.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
        )
    statement = (sql.format(table=table), None, error)
    faults.bad_statement(
        engine, odbc.server, [f"INSERT INTO {table} (id) VALUES (1)"], statement, pyodbc_error()
    )


# -- killed connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("pre_ping", ["default", 0])
def test_killing_every_idle_connection_costs_callers_nothing(odbc: ODBC, pre_ping: Any) -> None:
    settings = {} if pre_ping == "default" else {"pre_ping": pre_ping}
    engine = odbc.engine(connection_limit=3, **settings)
    faults.killing_every_idle_connection(engine, odbc.server, wait_window=pre_ping == "default")


def test_without_pre_ping_one_caller_sees_the_kill_and_the_rest_are_validated(odbc: ODBC) -> None:
    engine = odbc.engine(connection_limit=3, pre_ping=False)
    faults.killing_idle_connections_without_pre_ping(engine, odbc.server)


def test_killing_a_busy_connection_fails_only_its_caller(odbc: ODBC) -> None:
    engine = odbc.engine(connection_limit=3)
    faults.killing_a_busy_connection(engine, odbc.server, pyodbc_error())


def test_killing_a_connection_mid_query_fails_that_query_at_once(odbc: ODBC) -> None:
    engine = odbc.engine(connection_limit=2)
    faults.killing_a_connection_mid_query(engine, odbc.server, odbc.sleep_sql)


def test_server_never_sees_more_than_the_limit(odbc: ODBC) -> None:
    limit, threads_count = 3, 12
    engine = odbc.engine(connection_limit=limit)
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = time.monotonic() + 2.0

    def work() -> None:
        try:
            while time.monotonic() < stop:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1")).scalar()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        seen.append(len(odbc.server.ids()))
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert max(seen) <= limit
    assert max(seen) >= 2  # the threads really did use the pool concurrently


# -- connecting -----------------------------------------------------------------------------------


def test_refused_port_raises_connect_error_naming_where_not_the_password(odbc: ODBC) -> None:
    port = free_port()
    engine = odbc.engine(odbc.url_with(port=port, password=SECRET), pool_timeout=1)
    with pytest.raises(ConnectError) as caught:
        engine.open()
    message = str(caught.value)
    database = make_url(odbc.url).database
    assert message.startswith(f"Cannot connect to odbc at 127.0.0.1:{port}/{database} as user ")
    assert SECRET not in message and "Pw;" not in message
    assert isinstance(caught.value.orig, pyodbc_error())


def connect_once(engine: Engine, limit: float = 8.0) -> tuple[BaseException | None, float]:
    """One connect without the pool's retries, in a thread so that a driver ignoring the
    timeout fails the test after ``limit`` s instead of hanging it. (The silent server's
    teardown closes the sockets, which ends such a thread.)"""
    outcome: list[BaseException | None] = []
    started = time.monotonic()

    def attempt() -> None:
        try:
            engine.dialect.connect().close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(limit)
    waited = time.monotonic() - started
    assert outcome, f"connect was still waiting after {waited:.1f} s: the timeout was ignored"
    return outcome[0], waited


def test_login_timeout_bounds_a_server_that_never_answers(
    odbc: ODBC, silent_server: tuple[str, int]
) -> None:
    host, port = silent_server
    engine = odbc.engine(odbc.url_with(host=host, port=port), connect_timeout=2)
    error, waited = connect_once(engine)
    assert isinstance(error, ConnectError) and f"{host}:{port}" in str(error), error
    assert waited >= 1.5, waited  # the timeout ended it, not something else


def test_odbc_connect_raw_string(odbc: ODBC) -> None:
    url = make_url(odbc.url)
    raw = (
        f"DRIVER={{{odbc.driver}}};SERVER={url.host};PORT={url.port};DATABASE={url.database};"
        f"UID={url.username};PWD={{{url.password or ''}}}"
    )
    engine = odbc.engine(f"odbc:///?odbc_connect={quote(raw, safe='')}")
    assert engine.dialect.connection_string == raw
    assert engine.dialect.describe() == f"{url.host}:{url.port}/{url.database}"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_data_source_name(odbc: ODBC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = make_url(odbc.url)
    keys = (
        ("Servername", "Port", "Database")
        if odbc.name == "postgresql"
        else ("SERVER", "PORT", "DATABASE")
    )
    lines = [f"[dbpool_{odbc.name}]", f"Driver={odbc.driver}"]
    lines += [
        f"{key}={value}"
        for key, value in zip(keys, (url.host, url.port, url.database), strict=True)
    ]
    (tmp_path / "odbc.ini").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("ODBCINI", str(tmp_path / "odbc.ini"))  # unixODBC's user data sources
    engine = odbc.engine(f"odbc://{url.username}@/?dsn=dbpool_{odbc.name}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert engine.dialect.describe() == f"data source 'dbpool_{odbc.name}'"


def test_mariadb_dsn_gets_the_login_timeout_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_server: tuple[str, int]
) -> None:
    # MariaDB's driver ignores the ODBC login timeout; behind a DSN dbpool still finds
    # the driver's name and adds its CONN_TIMEOUT.
    need_odbc_driver(ODBC_MARIADB_DRIVER)
    host, port = silent_server
    ini = tmp_path / "odbc.ini"
    ini.write_text(f"[silent]\nDriver={ODBC_MARIADB_DRIVER}\nSERVER={host}\nPORT={port}\n")
    monkeypatch.setenv("ODBCINI", str(ini))
    engine = create_engine("odbc://root@/?dsn=silent", connect_timeout=2)
    error, waited = connect_once(engine)
    assert isinstance(error, ConnectError) and "data source 'silent'" in str(error), error
    assert waited >= 1.5, waited


# -- quoting, as it reaches the server ------------------------------------------------------------


@pytest.fixture
def mariadb_odd_user() -> Iterator[tuple[str, str]]:
    """A throwaway MariaDB user whose name and password need every kind of quoting."""
    need_odbc_driver(ODBC_MARIADB_DRIVER)
    need_module("pymysql")
    need(MYSQL_URL)
    server = MariaDBODBCBackends(MYSQL_URL)
    user = f"q;u{{o}}t=e {uuid.uuid4().hex[:6]}"
    server.query("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, SECRET))
    try:
        yield user, SECRET
    finally:
        server.query("DROP USER IF EXISTS %s@'%%'", (user,))
        server.close()


def test_mariadb_gets_user_name_and_password_exactly(mariadb_odd_user: tuple[str, str]) -> None:
    user, password = mariadb_odd_user
    base = make_url(odbc_url(MYSQL_URL, ODBC_MARIADB_DRIVER))
    url = base.set(username=user, password=password, database=None)
    engine = create_engine(url)
    try:
        assert "PWD={Pw;{x}}}}=+% y}" in engine.dialect.connection_string
        with engine.connect() as conn:
            assert conn.execute(text("SELECT CURRENT_USER()")).scalar().startswith(user + "@")
        wrong = create_engine(url.set(password=password + "!"), pool_timeout=1)
        with pytest.raises(ConnectError, match="Access denied") as caught:
            wrong.open()
        assert password not in str(caught.value)
    finally:
        engine.dispose()


class PasswordCatcher:
    """A loopback stand-in for PostgreSQL that asks for a cleartext password, records
    what the client sends, and refuses the login."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.startup: dict[str, str] = {}
        self.password: str | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="password-catcher", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        def read(size: int) -> bytes:
            data = b""
            while len(data) < size:
                chunk = conn.recv(size - len(data))
                if not chunk:
                    raise ConnectionError("client went away")
                data += chunk
            return data

        while True:
            length, code = struct.unpack("!ii", read(8))
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                conn.sendall(b"N")
                continue
            fields = read(length - 8).split(b"\0")
            self.startup = {
                k.decode(): v.decode()
                for k, v in zip(fields[::2], fields[1::2], strict=False)
                if k
            }
            break
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind, length = struct.unpack("!ci", read(5))
        assert kind == b"p"
        self.password = read(length - 4).rstrip(b"\0").decode()
        fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed (catcher)\0\0"
        conn.sendall(b"E" + struct.pack("!i", 4 + len(fields)) + fields)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.mark.parametrize("password", [SECRET, "plus+and%41", " spaced out "])
def test_psqlodbc_sends_user_database_and_password_exactly(password: str) -> None:
    # The test server trusts every login, so a stand-in server receives the password.
    # (psqlODBC takes the user and database names verbatim, braces and all: only the
    # password can carry ';' and braces through it.)
    need_odbc_driver(ODBC_POSTGRES_DRIVER)
    catcher = PasswordCatcher()
    url = (
        f"odbc://app_user:{quote(password, safe='')}@127.0.0.1:{catcher.port}/app%20db"
        f"?driver={quote(ODBC_POSTGRES_DRIVER)}"
    )
    engine = create_engine(url)
    try:
        with pytest.raises(ConnectError, match="password authentication failed") as caught:
            engine.dialect.connect()
    finally:
        engine.dispose()
        catcher.close()
    assert catcher.password == password
    assert catcher.startup["user"] == "app_user"
    assert catcher.startup["database"] == "app db"
    assert password not in str(caught.value)
