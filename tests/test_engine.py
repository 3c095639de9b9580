"""Engine, Connection, Transaction and Result on the real sqlite3 (SQLAlchemy 2.0 style)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import (
    ArgumentError,
    ConnectError,
    Connection,
    DBAPIError,
    Engine,
    IntegrityError,
    MultipleResultsFound,
    NoResultFound,
    OperationalError,
    PoolStatus,
    ResourceClosedError,
    create_engine,
    text,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = create_engine(f"sqlite:///{tmp_path / 'test.db'}", connection_limit=2)
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        conn.execute(
            text("INSERT INTO users (id, name) VALUES (:id, :name)"),
            [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}, {"id": 3, "name": "cy"}],
        )
    yield made
    made.dispose()


def names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT name FROM users ORDER BY id")).scalars())


# -- transactions -----------------------------------------------------------------------


def test_commit_as_you_go(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES (:n)"), {"n": "dee"})
        assert conn.in_transaction()
        conn.commit()
        assert not conn.in_transaction()
        conn.execute(text("INSERT INTO users (name) VALUES (:n)"), {"n": "eve"})
        conn.commit()
    assert names(engine) == ["ada", "bob", "cy", "dee", "eve"]


def test_close_without_commit_rolls_back(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES ('dee')"))
    assert names(engine) == ["ada", "bob", "cy"]
    with engine.connect() as conn:
        assert not conn.driver_connection.in_transaction  # the pool got it back clean


def test_rollback(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM users"))
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 3


def test_engine_begin_commits_on_success(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES ('dee')"))
    assert names(engine)[-1] == "dee"


def test_engine_begin_rolls_back_on_error(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES ('dee')"))
        raise RuntimeError("boom")
    assert names(engine) == ["ada", "bob", "cy"]
    assert engine.status().busy == 0


def test_connection_begin_is_a_transaction(engine: Engine) -> None:
    with engine.connect() as conn:
        trans = conn.begin()
        assert trans.is_active
        conn.execute(text("INSERT INTO users (name) VALUES ('dee')"))
        trans.rollback()
        assert not trans.is_active
        with conn.begin():
            conn.execute(text("INSERT INTO users (name) VALUES ('eve')"))
        with pytest.raises(ValueError), conn.begin():
            conn.execute(text("INSERT INTO users (name) VALUES ('fay')"))
            raise ValueError
    assert names(engine) == ["ada", "bob", "cy", "eve"]


def test_begin_inside_an_open_transaction_is_an_error(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # begins implicitly
        with pytest.raises(ArgumentError, match="already open"):
            conn.begin()
        conn.commit()
        with conn.begin():
            pass


def test_autocommit_engine_commits_each_statement_but_begin_is_real(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auto.db'}?isolation_level=AUTOCOMMIT"
    with create_engine(url, connection_limit=2) as auto:
        with auto.connect() as conn:
            conn.execute(text("CREATE TABLE t (a INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            assert not conn.driver_connection.in_transaction
            # no commit(): it is in already
        with pytest.raises(RuntimeError), auto.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            assert conn.driver_connection.in_transaction
            raise RuntimeError
        with auto.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (3)"))
        with auto.connect() as conn:
            assert conn.execute(text("SELECT a FROM t ORDER BY a")).scalars().all() == [1, 3]


# -- statements -------------------------------------------------------------------------


def test_text_binds_and_executemany(engine: Engine) -> None:
    with engine.begin() as conn:
        result = conn.execute(
            text("INSERT INTO users (name) VALUES (:name)"),
            [{"name": "dee"}, {"name": "eve"}],
        )
        assert result.rowcount == 2
        found = conn.execute(
            text("SELECT id FROM users WHERE name = :name OR name = :other ORDER BY id"),
            {"name": "dee", "other": "ada"},
        )
        assert found.scalars().all() == [1, 4]


def test_colons_in_strings_are_not_binds(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ':name' || :x"), {"x": "!"}).scalar() == ":name!"


def test_a_missing_bind_is_an_argument_error(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(ArgumentError, match="name"):
        conn.execute(text("SELECT :name"))


def test_execute_wants_text(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(ArgumentError, match="exec_driver_sql"):
        conn.execute("SELECT 1")  # type: ignore[arg-type]


def test_exec_driver_sql(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 42").scalar() == 42
        assert conn.exec_driver_sql("SELECT ? + ?", (1, 2)).scalar() == 3
        assert conn.exec_driver_sql("SELECT :a", {"a": "x"}).scalar() == "x"
        result = conn.exec_driver_sql("INSERT INTO users (name) VALUES (?)", [("dee",), ("eve",)])
        assert result.rowcount == 2
        conn.exec_driver_sql("INSERT INTO users (name) VALUES (:n)", [{"n": "fay"}])
        conn.commit()
    assert names(engine)[-3:] == ["dee", "eve", "fay"]


# -- results ----------------------------------------------------------------------------


def select(conn: Connection, where: str = "1 = 1") -> dbpool.Result:
    return conn.execute(text(f"SELECT id, name FROM users WHERE {where} ORDER BY id"))


def test_result_api(engine: Engine) -> None:
    with engine.connect() as conn:
        result = select(conn)
        assert result.keys() == ["id", "name"]
        assert result.returns_rows
        row = result.fetchone()
        assert row == (1, "ada")
        assert (row.id, row.name) == (1, "ada")
        assert row._mapping["name"] == "ada"
        assert dict(row._mapping) == {"id": 1, "name": "ada"}
        assert row._asdict() == {"id": 1, "name": "ada"}
        with pytest.raises(AttributeError):
            row.nope  # noqa: B018
        assert result.fetchmany(1) == [(2, "bob")]
        assert result.fetchall() == [(3, "cy")]
        assert result.fetchone() is None

        assert [tuple(r) for r in select(conn)] == [(1, "ada"), (2, "bob"), (3, "cy")]
        assert select(conn).all() == [(1, "ada"), (2, "bob"), (3, "cy")]
        assert select(conn).first() == (1, "ada")
        assert select(conn, "id > 9").first() is None
        assert select(conn, "id = 2").one() == (2, "bob")
        assert select(conn, "id = 2").one_or_none() == (2, "bob")
        assert select(conn, "id > 9").one_or_none() is None
        with pytest.raises(NoResultFound):
            select(conn, "id > 9").one()
        with pytest.raises(MultipleResultsFound):
            select(conn).one()
        with pytest.raises(MultipleResultsFound):
            select(conn).one_or_none()
        assert select(conn).scalar() == 1
        assert select(conn, "id > 9").scalar() is None
        assert select(conn, "id = 3").scalar_one() == 3
        with pytest.raises(NoResultFound):
            select(conn, "id > 9").scalar_one()
        assert select(conn).scalars().all() == [1, 2, 3]
        assert select(conn).scalars("name").all() == ["ada", "bob", "cy"]
        assert select(conn).scalars(1).first() == "ada"
        assert [m["name"] for m in select(conn).mappings()] == ["ada", "bob", "cy"]
        assert select(conn, "id = 1").mappings().one() == {"id": 1, "name": "ada"}


def test_result_of_a_statement_without_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        result = conn.execute(text("UPDATE users SET name = upper(name) WHERE id < 3"))
        assert result.rowcount == 2
        assert not result.returns_rows
        assert result.keys() == []
        with pytest.raises(ResourceClosedError):
            result.fetchall()
        inserted = conn.execute(text("INSERT INTO users (name) VALUES ('dee')"))
        assert inserted.lastrowid == 4


def test_a_result_stays_readable_after_its_connection_is_closed(engine: Engine) -> None:
    with engine.connect() as conn:
        result = select(conn)
    assert result.all() == [(1, "ada"), (2, "bob"), (3, "cy")]


# -- errors -----------------------------------------------------------------------------


def test_driver_errors_are_pep249_classes_with_orig(engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(IntegrityError) as info:
            conn.execute(text("INSERT INTO users (id, name) VALUES (:id, 'x')"), {"id": 1})
        error = info.value
        assert isinstance(error, dbpool.DatabaseError)
        assert isinstance(error, DBAPIError)
        assert isinstance(error.orig, sqlite3.IntegrityError)
        assert error.statement == "INSERT INTO users (id, name) VALUES (:id, 'x')"
        assert error.params == {"id": 1}
        assert not error.connection_invalidated
        assert "UNIQUE constraint failed" in str(error)
        conn.rollback()
        with pytest.raises(OperationalError) as syntax:
            conn.exec_driver_sql("SELEC 1")
        assert isinstance(syntax.value.orig, sqlite3.OperationalError)
        conn.rollback()
        assert conn.execute(text("SELECT 1")).scalar() == 1  # still usable


def test_use_after_close_is_an_error(engine: Engine) -> None:
    conn = engine.connect()
    conn.close()
    assert conn.closed
    conn.close()  # closing twice is harmless
    with pytest.raises(ResourceClosedError):
        conn.execute(text("SELECT 1"))
    with pytest.raises(ResourceClosedError):
        conn.driver_connection  # noqa: B018
    assert engine.status().busy == 0


def test_a_lost_connection_is_invalidated_and_replaced(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.driver_connection.close()  # as if the database went away
        with pytest.raises(OperationalError) as info:
            conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
        assert "connection to the database was lost" in str(info.value)
        assert conn.invalidated
        assert conn.execute(text("SELECT 2")).scalar() == 2  # a fresh connection
    status = engine.status()
    assert (status.open, status.busy, status.closed_total) == (1, 0, 1)


def test_invalidate_inside_a_transaction_needs_a_rollback(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM users"))
        conn.invalidate()
        with pytest.raises(ResourceClosedError, match="rollback"):
            conn.execute(text("SELECT 1"))
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 3
    assert engine.status().busy == 0


# -- the engine's lifecycle -------------------------------------------------------------


def test_open_warms_the_pool(engine: Engine) -> None:
    engine.dispose()
    engine.open()
    status = engine.status()
    assert isinstance(status, PoolStatus)
    assert (status.open, status.idle, status.connection_limit) == (1, 1, 2)


def test_open_fails_fast_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    broken = create_engine(f"sqlite:///{missing}", pool_timeout=30)
    with pytest.raises(ConnectError, match="no-such-dir"):
        broken.open()
    assert broken.status().open == 0
    broken.dispose()


def test_dispose_then_reuse(engine: Engine) -> None:
    conn = engine.connect()
    engine.dispose()
    status = engine.status()
    assert (status.open, status.busy) == (1, 1)  # the checked-out one stays until returned
    conn.close()
    assert engine.status().open == 0
    assert names(engine) == ["ada", "bob", "cy"]  # the engine starts afresh
    assert engine.status().open == 1


def test_engine_as_context_manager_disposes(tmp_path: Path) -> None:
    with create_engine(f"sqlite:///{tmp_path / 'cm.db'}") as made:
        with made.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert made.status().open == 1
        janitor = made.pool._janitor
    assert made.status().open == 0
    assert janitor is not None and not janitor._thread.is_alive()


def test_start_is_logged_once_per_pool_start(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.dispose()
    with caplog.at_level(logging.INFO, logger="dbpool"):
        for _ in range(3):
            names(engine)
        starts = [r for r in caplog.records if r.getMessage().startswith("Starting a")]
        assert [r.getMessage() for r in starts] == ["Starting a sqlite pool with 2 connections"]
        assert starts[0].levelno == logging.INFO
        engine.dispose()
        names(engine)
        starts = [r for r in caplog.records if r.getMessage().startswith("Starting a")]
        assert len(starts) == 2


def test_engine_basics(engine: Engine) -> None:
    assert engine.url.drivername == "sqlite"
    assert engine.dialect.name == "sqlite"
    assert engine.config.connection_limit == engine.pool.connection_limit == 2
    assert repr(engine).startswith("Engine(sqlite:///")
    with engine.connect() as conn:
        assert isinstance(conn.driver_connection, sqlite3.Connection)
        assert conn.engine is engine
        assert not conn.closed


def test_threads_share_the_pool(tmp_path: Path) -> None:
    # SQLite's default of one connection: the writers queue in the pool, not in SQLite.
    with create_engine(f"sqlite:///{tmp_path / 'threads.db'}") as shared:
        with shared.begin() as conn:
            conn.execute(text("CREATE TABLE t (name TEXT)"))
        errors: list[BaseException] = []

        def work(number: int) -> None:
            try:
                for i in range(20):
                    with shared.begin() as conn:
                        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": f"{number}-{i}"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        with shared.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 6 * 20
        status = shared.status()
        assert (status.open, status.busy, status.opened_total) == (1, 0, 1)


def test_listeners_see_driver_connections(engine: Engine) -> None:
    seen: list[Any] = []
    engine.events.on("checkout", seen.append)
    with engine.connect() as conn:
        assert seen == [conn.driver_connection]
