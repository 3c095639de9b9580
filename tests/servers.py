"""Where the test databases are, and the skip-or-fail rule for tests that need one.

A test that needs a server calls ``need(url)``: when the server cannot be reached it
skips with the reason, unless ``DBPOOL_REQUIRE_DATABASES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from typing import Any

import pytest

POSTGRES_URL = os.environ.get(
    "DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("DBPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REQUIRE_DATABASES = os.environ.get("DBPOOL_REQUIRE_DATABASES") == "1"
# unixODBC driver names (odbcinst -q -d) for the ODBC tests, Debian's by default.
ODBC_POSTGRES_DRIVER = os.environ.get("DBPOOL_TEST_ODBC_POSTGRES_DRIVER", "PostgreSQL Unicode")
ODBC_MARIADB_DRIVER = os.environ.get("DBPOOL_TEST_ODBC_MARIADB_DRIVER", "MariaDB Unicode")


@cache
def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def need(url: str) -> None:
    """Skip (or, with DBPOOL_REQUIRE_DATABASES=1, fail) unless the URL's server answers."""
    from dbpool import make_url

    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 0
    if not reachable(host, port):
        reason = f"{parsed.backend_name} server at {host}:{port} is not reachable"
        if REQUIRE_DATABASES:
            pytest.fail(f"{reason} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(reason)


def need_module(name: str) -> None:
    """Skip (or fail under DBPOOL_REQUIRE_DATABASES=1) when a driver is not installed."""
    try:
        __import__(name)
    except ImportError as exc:
        # pyodbc is installed on machines without unixODBC too, and then fails to load.
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == name
        reason = f"driver {name} is not installed" if missing else (
            f"driver {name} cannot be imported ({exc})"
        )  # fmt: skip
        if REQUIRE_DATABASES:
            pytest.fail(f"{reason} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(reason)


def need_odbc_driver(name: str) -> None:
    """Skip (or fail under DBPOOL_REQUIRE_DATABASES=1) unless pyodbc is installed and the
    ODBC driver manager has a driver registered under ``name``."""
    need_module("pyodbc")
    import pyodbc

    if name not in pyodbc.drivers():
        reason = f"ODBC driver {name!r} is not registered (odbcinst -q -d)"
        if REQUIRE_DATABASES:
            pytest.fail(f"{reason} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(reason)


def admin_query(vendor: str, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the ``postgresql`` or ``mysql`` test server over a connection of its
    own, outside every pool, in autocommit; the rows, if any."""
    from dbpool import make_url

    if vendor == "postgresql":
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []
    import pymysql

    url = make_url(MYSQL_URL)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                           password=url.password or "", autocommit=True)  # fmt: skip
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        conn.close()
