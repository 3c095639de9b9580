"""The SQLite dialect on the real sqlite3: memory databases, pragmas, timeouts, threads."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from dbpool import ConfigError, ConnectError, Engine, OperationalError, create_engine, text
from dbpool.dialects.sqlite import SQLiteDialect
from tests.engines import engine_for
from tests.fakedb import wait_for


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


def trace(conn: sqlite3.Connection) -> list[str]:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    return statements


# -- memory databases -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_memory_database_is_shared_by_the_engines_connections(
    engines: list[Engine], url: str
) -> None:
    engine = engine_for(engines, url, connection_limit=2)
    assert engine.dialect.describe() == "an in-memory database"
    with engine.connect() as first, engine.connect() as second:
        assert first.driver_connection is not second.driver_connection
        first.execute(text("CREATE TABLE t (a INTEGER)"))
        first.execute(text("INSERT INTO t VALUES (1)"))
        first.commit()
        assert second.execute(text("SELECT a FROM t")).scalar() == 1


def test_memory_databases_of_two_engines_are_separate(engines: list[Engine]) -> None:
    one, two = engine_for(engines, "sqlite://"), engine_for(engines, "sqlite://")
    with one.begin() as conn:
        conn.execute(text("CREATE TABLE only_in_one (a INTEGER)"))
    with two.connect() as conn, pytest.raises(OperationalError, match="no such table"):
        conn.execute(text("SELECT * FROM only_in_one"))


def test_memory_database_outlives_its_pooled_connections(engines: list[Engine]) -> None:
    engine = engine_for(engines, "sqlite://", max_idle_connection_lifetime=0.2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (7)"))
    assert wait_for(lambda: engine.status().open == 0, timeout=10)  # the janitor closed it
    with engine.connect() as conn:
        assert conn.execute(text("SELECT a FROM t")).scalar() == 7


# -- files and URL parameters -----------------------------------------------------------


def test_relative_path_is_relative_to_the_working_directory(
    engines: list[Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = engine_for(engines, "sqlite:///relative.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    assert (tmp_path / "relative.db").exists()
    assert engine.dialect.describe() == "file relative.db"


def test_pysqlite_driver_name(engines: list[Engine], tmp_path: Path) -> None:
    engine = engine_for(engines, f"sqlite+pysqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_an_unopenable_file_is_a_connect_error(engines: list[Engine], tmp_path: Path) -> None:
    # A checkout retries connecting until pool_timeout: keep that short.
    engine = engine_for(engines, f"sqlite:///{tmp_path / 'missing' / 'x.db'}", pool_timeout=0.3)
    with pytest.raises(ConnectError, match=r"Cannot open the SQLite file .*missing") as info:
        engine.connect()
    assert isinstance(info.value.orig, sqlite3.OperationalError)
    assert engine.status().open == 0


def test_journal_mode(engines: list[Engine], tmp_path: Path) -> None:
    engine = engine_for(engines, f"sqlite:///{tmp_path / 'wal.db'}?journal_mode=wal")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    with pytest.raises(ConfigError, match="journal_mode"):
        create_engine(f"sqlite:///{tmp_path / 'x.db'}?journal_mode=sideways")


def test_read_only_mode(engines: list[Engine], file_url: str) -> None:
    with create_engine(file_url) as writer, writer.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    reader = engine_for(engines, f"{file_url}?mode=ro")
    with reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("INSERT INTO t VALUES (1)"))


def test_unknown_parameters_are_rejected(file_url: str) -> None:
    with pytest.raises(ConfigError, match='Did you mean "journal_mode"'):
        create_engine(f"{file_url}?journal_mod=wal")
    with pytest.raises(ConfigError, match=r"'sslmode'.*sqlite"):
        create_engine(f"{file_url}?sslmode=require")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("schema=app", "schema is a PostgreSQL setting"),
        ("pgbouncer=true", "pgbouncer=true is a PostgreSQL setting"),
    ],
)
def test_postgresql_settings_are_rejected(file_url: str, setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_engine(f"{file_url}?{setting}")
    name, _, value = setting.partition("=")
    with pytest.raises(ConfigError, match=message):  # as a keyword argument too
        create_engine(file_url, **{name: value})


def test_pgbouncer_false_is_accepted(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, f"{file_url}?pgbouncer=false")
    assert engine.config.pgbouncer is False


# -- connection set-up ------------------------------------------------------------------


def test_foreign_keys_are_enforced(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE child (pid INTEGER REFERENCES parent (id))"))
        conn.commit()
        with pytest.raises(Exception, match="FOREIGN KEY") as info:
            conn.execute(text("INSERT INTO child VALUES (99)"))
        assert type(info.value).__name__ == "IntegrityError"


@pytest.mark.parametrize(("connect_timeout", "busy_ms"), [(3, 3000), (0.25, 250)])
def test_connect_timeout_is_the_busy_timeout(
    engines: list[Engine], file_url: str, connect_timeout: float, busy_ms: int
) -> None:
    engine = engine_for(engines, file_url, connect_timeout=connect_timeout)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == busy_ms


def test_connect_timeout_zero_waits_for_locks_without_limit(
    engines: list[Engine], file_url: str
) -> None:
    engine = engine_for(engines, file_url, connect_timeout=0)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 2_000_000_000


def test_a_locked_database_waits_for_the_busy_timeout(
    engines: list[Engine], file_url: str
) -> None:
    holder = engine_for(engines, file_url)
    with holder.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    waiter = engine_for(engines, file_url, connect_timeout=0.5)
    with holder.connect() as locked:
        locked.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock
        with waiter.connect() as conn:
            start = time.monotonic()
            with pytest.raises(OperationalError, match="locked"):
                conn.execute(text("INSERT INTO t VALUES (2)"))
            assert 0.45 <= time.monotonic() - start < 3


def test_connections_work_across_threads(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url)
    conn = engine.connect()  # checked out here, used in another thread
    results: list[object] = []

    def use() -> None:
        try:
            results.append(conn.execute(text("SELECT 40 + 2")).scalar())
            conn.close()
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(10)
    assert results == [42]
    assert engine.status().busy == 0


# -- isolation levels -------------------------------------------------------------------


@pytest.mark.parametrize("level", ["READ COMMITTED", "repeatable_read"])
def test_isolation_levels_sqlite_lacks_are_rejected(file_url: str, level: str) -> None:
    with pytest.raises(ConfigError, match="isolation_level") as info:
        create_engine(file_url, isolation_level=level)
    assert "not available on sqlite" in str(info.value)


def test_read_uncommitted_sets_the_pragma(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, f"{file_url}?isolation_level=read_uncommitted")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA read_uncommitted").scalar() == 1


def test_serializable_is_the_default_behaviour(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url, isolation_level="SERIALIZABLE")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA read_uncommitted").scalar() == 0


# -- no needless round trips ------------------------------------------------------------


def test_an_idle_checkout_costs_no_statement(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url)
    with engine.connect() as conn:
        statements = trace(conn.driver_connection)
    with engine.connect():
        pass
    assert statements == []


def test_a_transaction_is_rolled_back_once(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url)
    with engine.connect() as conn:
        statements = trace(conn.driver_connection)
        conn.execute(text("SELECT 1"))
    assert statements == ["BEGIN", "SELECT 1", "ROLLBACK"]


def test_autocommit_runs_just_the_statement(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        statements = trace(conn.driver_connection)
        conn.execute(text("SELECT 1"))
    assert statements == ["SELECT 1"]


# -- the dialect itself -----------------------------------------------------------------


def test_dialect_attributes(engines: list[Engine], file_url: str) -> None:
    engine = engine_for(engines, file_url)
    dialect = engine.dialect
    assert isinstance(dialect, SQLiteDialect)
    assert dialect.paramstyle == "named"
    assert SQLiteDialect.default_connection_limit == 1
    with engine.connect() as conn:
        raw = conn.driver_connection
        assert dialect.in_transaction(raw) is False
        conn.execute(text("SELECT 1"))
        assert dialect.in_transaction(raw) is True
    closed = sqlite3.connect(":memory:")
    closed.close()
    with pytest.raises(sqlite3.ProgrammingError) as info:
        closed.execute("SELECT 1")
    assert dialect.is_disconnect(info.value)
    assert not dialect.is_disconnect(sqlite3.OperationalError("database is locked"))
