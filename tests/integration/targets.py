"""The engine targets the shared behaviour suite (test_behaviour.py) runs on.

A :class:`Target` is one way of reaching a database: an ``id`` (the pytest id), a ``url``
function and flags for the places where databases legitimately differ. ``url`` gets the
pytest ``request`` (for fixtures such as ``tmp_path`` or ``pgbouncer_url``) and must call
``need()`` / ``need_module()`` from tests/servers.py, so that a missing server or driver
skips the target's tests, or fails them under ``DBPOOL_REQUIRE_DATABASES=1``.

Adding a target is appending one entry to ``TARGETS``; every test in test_behaviour.py
then runs on it too. For example::

    def _odbc_postgresql(request: pytest.FixtureRequest) -> str:
        need_module("pyodbc")
        need(POSTGRES_URL)  # the server behind the ODBC driver
        return "odbc://postgres@127.0.0.1:5432/test?driver=PostgreSQL+Unicode"

    TARGETS.append(
        Target(
            id="odbc-postgresql",
            url=_odbc_postgresql,
            driver_in_transaction=lambda conn: ...,  # the driver's own view, or ask the server
        )
    )

Leave a flag at its default unless the database really behaves differently, and say why
in a comment next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import dbpool
from dbpool import make_url
from tests.servers import (
    MYSQL_URL,
    ODBC_MARIADB_DRIVER,
    ODBC_POSTGRES_DRIVER,
    POSTGRES_URL,
    need,
    need_module,
    need_odbc_driver,
)


@dataclass(frozen=True)
class Target:
    id: str
    url: Callable[[pytest.FixtureRequest], str]
    # Whether the driver connection has a transaction open, as the driver itself sees it.
    driver_in_transaction: Callable[[Any], bool]
    # connection_limit for the many-threads test.
    concurrency_limit: int = 3
    # What a syntax error raises (sqlite3 calls every SQL error OperationalError).
    bad_sql_error: type[dbpool.DBAPIError] = dbpool.ProgrammingError
    # Whether cursor.rowcount counts the rows a SELECT returned (PEP 249 allows -1).
    select_rowcount: bool = True
    # Whether rowcount after executemany is the total (pyodbc reports -1, as PEP 249 allows).
    executemany_rowcount: bool = True

    def __str__(self) -> str:
        return self.id


def with_query(url: str, **params: str) -> str:
    return make_url(url).update_query(params).render_as_string(hide_password=False)


def _sqlite_file(request: pytest.FixtureRequest) -> str:
    return f"sqlite:///{request.getfixturevalue('tmp_path') / 'behaviour.db'}"


def _sqlite_memory(request: pytest.FixtureRequest) -> str:
    return "sqlite://"


def _postgresql(request: pytest.FixtureRequest) -> str:
    need_module("psycopg")
    need(POSTGRES_URL)
    return POSTGRES_URL


def _pgbouncer(request: pytest.FixtureRequest) -> str:
    # The fixture starts PgBouncer once per session, after need()-ing PostgreSQL.
    url: str = request.getfixturevalue("pgbouncer_url")
    return with_query(url, pgbouncer="true")


def _mysql(request: pytest.FixtureRequest) -> str:
    need_module("pymysql")
    need(MYSQL_URL)
    return MYSQL_URL


def _sqlite_in_transaction(conn: Any) -> bool:
    return bool(conn.in_transaction)


def _psycopg_in_transaction(conn: Any) -> bool:
    return int(conn.info.transaction_status) != 0  # psycopg.pq.TransactionStatus.IDLE


def _pymysql_in_transaction(conn: Any) -> bool:
    return bool(conn.server_status & 0x0001)  # SERVER_STATUS_IN_TRANS


TARGETS: list[Target] = [
    Target(
        id="sqlite-file",
        url=_sqlite_file,
        driver_in_transaction=_sqlite_in_transaction,
        concurrency_limit=1,  # SQLite's own default: one writer at a time
        bad_sql_error=dbpool.OperationalError,
        select_rowcount=False,
    ),
    Target(
        id="sqlite-memory",
        url=_sqlite_memory,
        driver_in_transaction=_sqlite_in_transaction,
        concurrency_limit=1,
        bad_sql_error=dbpool.OperationalError,
        select_rowcount=False,
    ),
    Target(id="postgresql", url=_postgresql, driver_in_transaction=_psycopg_in_transaction),
    Target(id="pgbouncer", url=_pgbouncer, driver_in_transaction=_psycopg_in_transaction),
    Target(id="mysql", url=_mysql, driver_in_transaction=_pymysql_in_transaction),
]


# -- ODBC: pyodbc over unixODBC, through Debian's drivers, to the same servers -------------


def odbc_url(server_url: str, driver: str) -> str:
    """A postgresql:// or mysql:// test URL as an odbc:// URL through ``driver``."""
    url = make_url(server_url).set(drivername="odbc", query={"driver": driver})
    return url.render_as_string(hide_password=False)


def _odbc_postgresql(request: pytest.FixtureRequest) -> str:
    need_odbc_driver(ODBC_POSTGRES_DRIVER)
    need(POSTGRES_URL)
    return odbc_url(POSTGRES_URL, ODBC_POSTGRES_DRIVER)


def _odbc_mariadb(request: pytest.FixtureRequest) -> str:
    need_odbc_driver(ODBC_MARIADB_DRIVER)
    need(MYSQL_URL)
    return odbc_url(MYSQL_URL, ODBC_MARIADB_DRIVER)


def _psqlodbc_in_transaction(conn: Any) -> bool:
    # pyodbc cannot tell. With autocommit off psqlODBC sends BEGIN in the same message as
    # any statement, so now() (when the transaction began) equals statement_timestamp()
    # exactly when this probe began it; that transaction is rolled back again.
    cursor = conn.cursor()
    began_earlier = bool(
        cursor.execute("VALUES ((now() <> statement_timestamp())::int)").fetchval()
    )
    cursor.close()
    if not began_earlier and not conn.autocommit:
        conn.rollback()
    return began_earlier


def _mariadb_odbc_in_transaction(conn: Any) -> bool:
    cursor = conn.cursor()
    try:
        return bool(cursor.execute("SELECT @@in_transaction").fetchval())  # opens none
    finally:
        cursor.close()


TARGETS += [
    Target(
        id="odbc-postgresql",
        url=_odbc_postgresql,
        driver_in_transaction=_psqlodbc_in_transaction,
        executemany_rowcount=False,  # pyodbc's executemany reports -1
    ),
    Target(
        id="odbc-mariadb",
        url=_odbc_mariadb,
        driver_in_transaction=_mariadb_odbc_in_transaction,
        executemany_rowcount=False,
    ),
]
