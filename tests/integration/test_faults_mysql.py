"""Server faults on a real MariaDB: connections KILLed while idle and while busy, a
wait_timeout shorter than the pool's idle lifetime, and bad statements. The server's view
is limited to the connections each test's engine opened (their ids are collected through
the ``connect`` event), so other tests on the same server are never touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from dbpool import (
    DataError,
    Engine,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from tests.integration import faults
from tests.integration.targets import with_query

pymysql = pytest.importorskip("pymysql")


@pytest.fixture
def db(mysql_url: str, engines: list[Engine]) -> Iterator[faults.Database]:
    url = with_query(mysql_url, program_name=f"dbpool-fault-{uuid.uuid4().hex[:12]}")
    server = faults.MariaDBBackends(mysql_url)
    yield faults.Database(url, server, engines, on_connect=server.note)
    server.close()


class TestServerFaults(faults.ServerFaults):
    """Connections KILLed while idle and while busy; a wait_timeout of 1 s."""

    driver_error = pymysql.OperationalError
    sleep_sql = "SELECT SLEEP(60)"
    idle_timeout = {"init_command": "SET SESSION wait_timeout=1"}


# -- bad statements ------------------------------------------------------------------------

SETUP = [
    "CREATE TEMPORARY TABLE t (a TINYINT, s VARCHAR(2), u INT UNIQUE)",
    "INSERT INTO t (u) VALUES (1)",
]
BAD_STATEMENTS: dict[str, faults.Statement] = {
    **faults.BAD_STATEMENTS,
    "out-of-range": ("INSERT INTO t (a) VALUES (1000)", None, DataError),
    "not-a-number": ("INSERT INTO t (a) VALUES (%s)", ("abc",), DataError),
    "too-long": ("INSERT INTO t (s) VALUES (%s)", ("toolong",), DataError),
    "unsendable": ("SELECT %s", ({"x": 1},), ProgrammingError),
    "duplicate": ("INSERT INTO t (u) VALUES (1)", None, IntegrityError),
}


@pytest.mark.parametrize("case", BAD_STATEMENTS)
def test_bad_statements_raise_pep249_errors_and_leave_the_pool_healthy(
    db: faults.Database, case: str
) -> None:
    engine = db.engine(connection_limit=1)
    # PyMySQL rejects some parameters itself with KeyError/TypeError: still ProgrammingError.
    driver_error = (pymysql.Error, KeyError, TypeError)
    faults.bad_statement(engine, db.server, SETUP, BAD_STATEMENTS[case], driver_error)


def test_division_by_zero_is_pymysqls_operational_error_and_harmless(db: faults.Database) -> None:
    engine = db.engine(connection_limit=1)
    with engine.connect() as conn:
        backend = db.server.backend_id(conn)
        for command in SETUP:
            conn.exec_driver_sql(command)
        # PyMySQL files error 1365 under OperationalError; it is not a disconnect.
        with pytest.raises(OperationalError, match="Division by 0") as info:
            conn.exec_driver_sql("INSERT INTO t (a) VALUES (1 / 0)")
        assert not info.value.connection_invalidated
        conn.rollback()
        assert db.server.backend_id(conn) == backend
    assert engine.status().closed_total == 0
