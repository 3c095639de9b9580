"""TooManyConnectionsError (P2037) without a server: which driver errors are a full
server, the message, and how the pool retries, counts and logs the refusals.

The real refusals are in tests/integration/test_too_many_connections.py.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

import dbpool
from dbpool import ConnectError, PoolTimeoutError, QueuePool, TooManyConnectionsError
from dbpool.dialects.base import Dialect
from tests.fakedb import FakeDB
from tests.servers import need_module

SECRET = "pw-Sup3r-s3cret"


def dialect_for(url: str) -> Dialect:
    engine = dbpool.create_engine(url)
    engine.dispose()
    return engine.dialect


@pytest.fixture
def postgresql() -> Dialect:
    need_module("psycopg")
    return dialect_for(f"postgresql://app:{SECRET}@db.example.com:5432/shop")


@pytest.fixture
def mysql() -> Dialect:
    need_module("pymysql")
    return dialect_for(f"mysql://app:{SECRET}@db.example.com:3306/shop")


@pytest.fixture
def pyodbc() -> Any:
    need_module("pyodbc")
    import pyodbc as module

    return module


# -- which errors ------------------------------------------------------------------------

PG_FULL = [
    'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  sorry, '
    "too many clients already",
    'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  too many '
    'connections for role "app"',
    'FATAL:  too many connections for database "shop"',
    "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
    "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
    "FATAL:  remaining connection slots are reserved for roles with privileges of the "
    '"pg_use_reserved_connections" role',
]
PG_OTHER = [
    'connection failed: FATAL:  password authentication failed for user "app"',
    'connection failed: connection to server at "10.0.0.5", port 5432 failed: Connection refused',
    'FATAL:  database "shop" does not exist',
    "FATAL:  the database system is starting up",
]


@pytest.mark.parametrize("message", PG_FULL)
def test_postgresql_full_server_messages(postgresql: Dialect, message: str) -> None:
    import psycopg

    error = psycopg.OperationalError(message)  # libpq's connect errors carry no SQLSTATE
    assert postgresql.is_too_many_connections(error)
    assert isinstance(postgresql.connect_error(error), TooManyConnectionsError)


@pytest.mark.parametrize("message", PG_OTHER)
def test_postgresql_other_connect_failures(postgresql: Dialect, message: str) -> None:
    import psycopg

    error = psycopg.OperationalError(message)
    assert not postgresql.is_too_many_connections(error)
    result = postgresql.connect_error(error)
    assert type(result) is ConnectError


def test_postgresql_sqlstate_53300(postgresql: Dialect) -> None:
    import psycopg

    error = psycopg.errors.TooManyConnections("whatever the words")
    assert error.sqlstate == "53300"
    assert postgresql.is_too_many_connections(error)
    assert not postgresql.is_too_many_connections(psycopg.errors.AdminShutdown("bye"))


@pytest.mark.parametrize(
    ("code", "message", "full"),
    [
        (1040, "Too many connections", True),
        (1203, "User app already has more than 'max_user_connections' active connections",
         True),
        (1226, "User 'app' has exceeded the 'max_user_connections' resource (current value: 2)",
         True),
        (1045, "Access denied for user 'app'@'10.0.0.9' (using password: YES)", False),
        (2003, "Can't connect to MySQL server on 'db.example.com' ([Errno 111] refused)", False),
        (1049, "Unknown database 'shop'", False),
    ],
)  # fmt: skip
def test_mysql_codes(mysql: Dialect, code: int, message: str, full: bool) -> None:
    import pymysql

    error = pymysql.err.OperationalError(code, message)
    assert mysql.is_too_many_connections(error) is full
    assert isinstance(mysql.connect_error(error), TooManyConnectionsError) is full
    assert not mysql.is_too_many_connections(ValueError("port out of range"))


@pytest.mark.parametrize(
    ("url", "state", "message", "full"),
    [
        ("odbc://app:pw@h:5432/shop?driver=PostgreSQL+Unicode", "08001",
         '[08001] connection to server at "h", port 5432 failed: FATAL:  sorry, too many '
         "clients already\n (101) (SQLDriverConnect)", True),
        ("odbc://app:pw@h:3306/shop?driver=MariaDB+Unicode", "08004",
         "[08004] [ma-3.1.15]Too many connections (1040) (SQLDriverConnect)", True),
        ("odbc://app:pw@h:3306/shop?driver=MariaDB+Unicode", "42000",
         "[42000] [ma-3.1.15]User 'app' has exceeded the 'max_user_connections' resource "
         "(current value: 1) (1226) (SQLDriverConnect)", True),
        ("mssql://sa:pw@h/shop", "08004",
         "[08004] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Could not connect "
         "because the maximum number of '50' user connections has already been reached. The "
         "system administrator can use sp_configure to increase the maximum value. The "
         "connection has been closed. (17809) (SQLDriverConnect)", True),
        ("mssql://sa:pw@h/shop", "28000",
         "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for "
         "user 'sa'. (18456) (SQLDriverConnect)", False),
    ],
)  # fmt: skip
def test_odbc_messages(pyodbc: Any, url: str, state: str, message: str, full: bool) -> None:
    dialect = dialect_for(url)
    error = pyodbc.Error(state, message)
    assert dialect.is_too_many_connections(error) is full
    assert isinstance(dialect.connect_error(error), TooManyConnectionsError) is full


def test_sqlite_never_says_too_many() -> None:
    dialect = dialect_for("sqlite://")
    assert not dialect.is_too_many_connections(Exception("Too many connections"))


# -- the message ---------------------------------------------------------------------------


def test_message_names_where_and_remedies_never_the_password(postgresql: Dialect) -> None:
    import psycopg

    error = psycopg.OperationalError(f"FATAL:  sorry, too many clients already ({SECRET})")
    result = postgresql.connect_error(error)
    assert isinstance(result, TooManyConnectionsError)
    assert isinstance(result, ConnectError)
    assert result.code == "P2037"
    assert result.orig is error
    text = str(result)
    assert "db.example.com:5432/shop" in text
    assert "as user 'app'" in text
    assert "sorry, too many clients already" in text
    for remedy in ("connection_limit", "fewer instances", "PgBouncer", "docs/scaling.md"):
        assert remedy in text
    assert SECRET not in text
    assert result.server_limit is None
    assert "connection limit is" not in text


def test_message_names_the_server_limit_when_known(postgresql: Dialect, mysql: Dialect) -> None:
    import psycopg
    import pymysql

    postgresql.server_limit = 97  # what the budget probe found
    result = postgresql.connect_error(psycopg.OperationalError("FATAL: sorry, too many clients"
                                                               " already"))  # fmt: skip
    assert isinstance(result, TooManyConnectionsError)
    assert result.server_limit == 97
    assert "its connection limit is 97" in str(result)
    # A per-user limit was reached, not the server's: its limit would mislead.
    mysql.server_limit = 151
    result = mysql.connect_error(
        pymysql.err.OperationalError(
            1226, "User 'app' has exceeded the 'max_user_connections' resource (current value: 2)"
        )
    )
    assert isinstance(result, TooManyConnectionsError)
    assert "151" not in str(result)
    assert "for this user or database" in str(result)


# -- the pool: retried, counted, logged ----------------------------------------------------


class FullServer:
    """A creator refusing with TooManyConnectionsError while ``full`` is set."""

    def __init__(self, db: FakeDB) -> None:
        self.db = db
        self.full = True
        self.refusals = 0

    def __call__(self) -> Any:
        if self.full:
            self.refusals += 1
            raise TooManyConnectionsError("Too many connections: the fake server is full")
        return self.db.connect()


def test_refused_until_a_slot_frees_then_connected(caplog: pytest.LogCaptureFixture) -> None:
    server = FullServer(FakeDB())
    pool = QueuePool(server, connection_limit=2, pool_timeout=10)
    timer = threading.Timer(0.5, lambda: setattr(server, "full", False))
    timer.start()
    try:
        with caplog.at_level(logging.INFO, logger="dbpool"):
            record = pool.checkout()
        pool.checkin(record)
    finally:
        timer.cancel()
        pool.dispose()
    assert server.refusals >= 2
    assert pool.too_many_connections_total == server.refusals
    full = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in full] == ["Too many connections: the fake server is full"]
    assert any("accepts connections again" in r.getMessage() for r in caplog.records)


def test_still_full_after_pool_timeout_raises_p2037_not_p2024() -> None:
    server = FullServer(FakeDB())
    pool = QueuePool(server, connection_limit=2, pool_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TooManyConnectionsError) as caught:
        pool.checkout()
    assert not isinstance(caught.value, PoolTimeoutError)
    # Until pool_timeout, or sooner when the next backoff pause would not fit in it.
    assert 0.3 < time.monotonic() - started < 5
    assert pool.too_many_connections_total >= 2
    status = pool.status()
    assert (status.open, status.busy, status.idle) == (0, 0, 0)  # the slot was given back
    pool.dispose()


def test_a_spike_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    server = FullServer(FakeDB())
    pool = QueuePool(server, connection_limit=8, pool_timeout=0.5)

    def caller() -> None:
        with pytest.raises(TooManyConnectionsError):
            pool.checkout()

    with caplog.at_level(logging.WARNING, logger="dbpool"):
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert pool.too_many_connections_total >= 16
    assert len([r for r in caplog.records if "fake server is full" in r.getMessage()]) == 1
    pool.dispose()


def test_other_connect_failures_are_not_counted() -> None:
    db = FakeDB()
    db.fail_connects = 2
    pool = QueuePool(db.connect, connection_limit=1, pool_timeout=5)
    pool.checkin(pool.checkout())
    assert pool.too_many_connections_total == 0
    pool.dispose()
