"""``direct_url`` and ``engine.direct()``: the rules, on SQLite and the fake driver (the
real servers and a real PgBouncer are in tests/integration/test_direct.py)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import ConfigError, Engine, ResourceClosedError, text
from dbpool.engine import ENGINE_KEYWORDS
from tests.engines import engine_for
from tests.fakedb import FakeDB

SECRET = "S3cret-direct"
PG_BOUNCED = f"postgresql://app:{SECRET}@127.0.0.1:6432/shop?pgbouncer=true"
PG_DIRECT = f"postgresql://app:{SECRET}@127.0.0.1:5432/shop"


@pytest.fixture(autouse=True)
def _no_url_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIRECT_URL", raising=False)


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    """(engine URL, direct URL): two SQLite files, so each side's data can be told apart."""
    return f"sqlite:///{tmp_path / 'pooled.db'}", f"sqlite:///{tmp_path / 'direct.db'}"


def rows(url: str, sql: str) -> list[Any]:
    """What a plain sqlite3 connection (outside dbpool) sees."""
    conn = sqlite3.connect(dbpool.make_url(url).database or "")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- configuration -------------------------------------------------------------------------


def test_direct_url_is_an_engine_keyword() -> None:
    assert "direct_url" in ENGINE_KEYWORDS


def test_direct_url_attribute_and_masked_repr(engines: list[Engine]) -> None:
    pytest.importorskip("psycopg")
    engine = engine_for(engines, PG_BOUNCED, direct_url=PG_DIRECT)
    assert isinstance(engine.direct_url, dbpool.URL)
    assert engine.direct_url.port == 5432
    assert engine.direct_url.password == SECRET
    shown = repr(engine)
    assert SECRET not in shown
    assert "direct_url=postgresql://app:***@127.0.0.1:5432/shop" in shown


def test_no_direct_url_leaves_the_attribute_none(
    engines: list[Engine], files: tuple[str, str]
) -> None:
    engine = engine_for(engines, files[0])
    assert engine.direct_url is None
    assert repr(engine) == f"Engine({files[0]})"


def test_a_direct_url_of_another_database_kind_is_a_config_error(files: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="direct_url must be a sqlite URL") as info:
        dbpool.create_engine(files[0], direct_url=f"mysql://app:{SECRET}@db/shop")
    assert SECRET not in str(info.value)
    assert "mysql://app:***@db/shop" in str(info.value)


def test_postgres_spellings_are_the_same_kind(engines: list[Engine]) -> None:
    pytest.importorskip("psycopg")
    direct = PG_DIRECT.replace("postgresql://", "postgres://")
    engine = engine_for(engines, PG_BOUNCED, direct_url=direct)
    assert engine.direct_url is not None and engine.direct_url.drivername == "postgres"


def test_pgbouncer_true_on_the_direct_url_is_a_config_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError, match="direct_url has pgbouncer=true") as info:
        dbpool.create_engine(PG_BOUNCED, direct_url=PG_DIRECT + "?pgbouncer=true")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("direct", "words"),
    [
        ("not a url", "direct_url: Could not parse"),
        (
            f"nosuchdb://app:{SECRET}@h/db",
            "direct_url (nosuchdb://app:***@h/db): Unknown database",
        ),
        (PG_DIRECT + "?conection_limit=2", 'Did you mean "connection_limit"'),
        (PG_DIRECT + "?connect_timeout=soon", "connect_timeout must be a number of seconds"),
        (PG_DIRECT + "?pgbouncer=maybe", "pgbouncer must be true, false, 1 or 0"),
    ],
)
def test_bad_direct_urls_are_config_errors_naming_direct_url(direct: str, words: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError) as info:
        dbpool.create_engine(PG_BOUNCED, direct_url=direct)
    message = str(info.value)
    assert message.startswith("direct_url"), message
    assert words in message
    assert SECRET not in message


def test_the_direct_connection_shares_the_session_settings_not_pgbouncer(
    engines: list[Engine],
) -> None:
    pytest.importorskip("psycopg")
    engine = engine_for(
        engines,
        PG_BOUNCED + "&connect_timeout=7&isolation_level=SERIALIZABLE&socket_timeout=30",
        direct_url=PG_DIRECT + "?connect_timeout=60&schema=app",
        socket_timeout=40,
    )
    assert engine._direct is not None
    config = engine._direct.dialect.config
    assert config.pgbouncer is False
    assert config.isolation_level == "SERIALIZABLE"  # the engine's, the direct URL says none
    assert config.connect_timeout == 60  # the direct URL's own
    assert config.socket_timeout == 40  # a keyword wins over both URLs
    assert config.schema == "app"  # fine past PgBouncer; refused on the bounced URL


# -- where DIRECT_URL is read --------------------------------------------------------------


def test_direct_url_environment_is_read_with_database_url(
    monkeypatch: pytest.MonkeyPatch, files: tuple[str, str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", files[0])
    monkeypatch.setenv("DIRECT_URL", files[1])
    with dbpool.create_engine() as engine:
        assert str(engine.direct_url) == files[1]


def test_the_keyword_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, files: tuple[str, str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", files[0])
    monkeypatch.setenv("DIRECT_URL", f"mysql://app:{SECRET}@elsewhere/db")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with dbpool.create_engine(direct_url=other) as engine:
        assert str(engine.direct_url) == other


def test_an_explicit_url_ignores_a_stray_direct_url(
    monkeypatch: pytest.MonkeyPatch, files: tuple[str, str]
) -> None:
    # DIRECT_URL belongs with DATABASE_URL: an engine made for another database (a test,
    # a script, the Flask and Django integrations) neither takes it nor fails on it.
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@bouncer/db?pgbouncer=true")
    monkeypatch.setenv("DIRECT_URL", f"postgresql://app:{SECRET}@db/db")
    with dbpool.create_engine(files[0]) as engine:
        assert engine.direct_url is None


def test_a_bad_direct_url_environment_variable_says_so(
    monkeypatch: pytest.MonkeyPatch, files: tuple[str, str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", files[0])
    monkeypatch.setenv("DIRECT_URL", f"mysql://app:{SECRET}@db/shop")
    with pytest.raises(ConfigError, match=r"direct_url \(from DIRECT_URL\) must be") as info:
        dbpool.create_engine()
    assert SECRET not in str(info.value)


# -- without a direct URL ------------------------------------------------------------------


def test_direct_on_a_pgbouncer_engine_without_direct_url_says_how(engines: list[Engine]) -> None:
    pytest.importorskip("psycopg")
    engine = engine_for(engines, PG_BOUNCED)
    with pytest.raises(ConfigError) as info, engine.direct():
        pass
    message = str(info.value)
    assert "direct_url" in message and "DIRECT_URL" in message
    assert SECRET not in message


def test_direct_without_direct_url_is_an_unpooled_connection_on_the_main_url(
    engines: list[Engine], db: FakeDB
) -> None:
    engine = engine_for(engines, "sqlite://", creator=db.connect, connection_limit=1,
                        isolation_level="AUTOCOMMIT")  # fmt: skip
    with engine.connect() as pooled, engine.direct() as direct:  # the only slot is taken
        assert direct.driver_connection is not pooled.driver_connection
        direct.exec_driver_sql("SELECT 1")
        assert db.live == 2
        assert engine.status().busy == 1 and engine.status().open == 1
    assert db.live == 1  # the direct one is closed, the pooled one is back in the pool
    assert engine.status().idle == 1
    assert db.double_closes == 0


# -- the direct connection -----------------------------------------------------------------


def test_direct_commits_rolls_back_and_closes(
    engines: list[Engine], files: tuple[str, str]
) -> None:
    engine = engine_for(engines, files[0], direct_url=files[1])
    with engine.direct() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        conn.commit()
        conn.execute(text("INSERT INTO t VALUES (:a)"), {"a": 1})
        conn.commit()
        conn.execute(text("INSERT INTO t VALUES (:a)"), {"a": 2})  # never committed
        driver = conn.driver_connection
    assert conn.closed
    assert rows(files[1], "SELECT a FROM t") == [(1,)]
    assert rows(files[0], "SELECT name FROM sqlite_master") == []  # not the pooled database
    with pytest.raises(sqlite3.ProgrammingError):  # really closed, not pooled
        driver.execute("SELECT 1")
    with pytest.raises(ResourceClosedError):
        conn.execute(text("SELECT 1"))
    with engine.direct() as conn, conn.begin():
        conn.execute(text("INSERT INTO t VALUES (3)"))
    assert rows(files[1], "SELECT a FROM t ORDER BY a") == [(1,), (3,)]


def test_an_error_in_the_block_rolls_back_closes_and_propagates(
    engines: list[Engine], files: tuple[str, str]
) -> None:
    engine = engine_for(engines, files[0], direct_url=files[1])
    with engine.direct() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        conn.commit()
    with pytest.raises(ZeroDivisionError), engine.direct() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        driver = conn.driver_connection
        1 / 0  # noqa: B018
    assert conn.closed
    with pytest.raises(sqlite3.ProgrammingError):
        driver.execute("SELECT 1")
    assert rows(files[1], "SELECT a FROM t") == []


def test_direct_takes_no_slot_and_stays_out_of_status_and_metrics(
    engines: list[Engine], files: tuple[str, str]
) -> None:
    engine = engine_for(engines, files[0], direct_url=files[1], connection_limit=1,
                        pool_timeout=0.2)  # fmt: skip
    with engine.connect() as pooled:
        pooled.execute(text("SELECT 1"))
        before = engine.status()
        queries = engine.queries_total
        with engine.direct() as direct:
            direct.execute(text("SELECT 1"))
            assert engine.status() == before
        assert engine.queries_total == queries
    status = engine.status()
    assert (status.open, status.opened_total, status.closed_total) == (1, 1, 0)
    counters = {m["key"]: m["value"] for m in engine.metrics.json()["counters"]}
    assert counters["dbpool_client_queries_total"] == queries


def test_a_direct_connection_that_fails_to_open_leaves_nothing(
    engines: list[Engine], tmp_path: Path
) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    engine = engine_for(engines, f"sqlite:///{tmp_path / 'a.db'}", direct_url=missing)
    with pytest.raises(dbpool.ConnectError), engine.direct():
        pytest.fail("the block must not run")
    assert engine.status().opened_total == 0


def test_two_threads_get_two_connections(engines: list[Engine], files: tuple[str, str]) -> None:
    engine = engine_for(engines, files[0], direct_url=files[1])
    barrier = threading.Barrier(2)
    seen: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with engine.direct() as conn:
                seen.append(id(conn.driver_connection))
                barrier.wait(timeout=10)  # both are inside direct() at once
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors, errors
    assert len(set(seen)) == 2


def test_an_invalidated_direct_connection_is_not_replaced(
    engines: list[Engine], db: FakeDB
) -> None:
    engine = engine_for(engines, "sqlite://", creator=db.connect, isolation_level="AUTOCOMMIT")
    with engine.direct() as conn:
        conn.exec_driver_sql("SELECT 1")
        conn.invalidate()
        assert db.live == 0
        with pytest.raises(ResourceClosedError, match="session state"):
            conn.exec_driver_sql("SELECT 1")
    assert db.opened == 1 and db.double_closes == 0


def test_direct_connection_repr_names_the_direct_url_masked(
    engines: list[Engine], tmp_path: Path
) -> None:
    engine = engine_for(engines, f"sqlite:///{tmp_path / 'a.db'}",
                        direct_url=f"sqlite:///{tmp_path / 'b.db'}")  # fmt: skip
    with engine.direct() as conn:
        assert repr(conn) == f"<Connection open (direct) to sqlite:///{tmp_path / 'b.db'}>"
        assert conn.engine is engine
    assert repr(conn).startswith("<Connection closed (direct)")


def test_shared_engine_reads_direct_url_with_database_url(
    monkeypatch: pytest.MonkeyPatch, files: tuple[str, str]
) -> None:
    from dbpool import shared

    monkeypatch.setattr(shared, "_shared", {})
    monkeypatch.setenv("DATABASE_URL", files[0])
    monkeypatch.setenv("DIRECT_URL", files[1])
    engine = dbpool.shared_engine()
    try:
        assert str(engine.direct_url) == files[1]
        assert dbpool.shared_engine() is engine
        assert dbpool.shared_engine(files[0]).direct_url is None  # an explicit URL: not read
    finally:
        for made in shared._shared.values():
            made.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_the_child_leaves_the_parents_direct_connection_alone(
    engines: list[Engine], db: FakeDB
) -> None:
    engine = engine_for(engines, "sqlite://", creator=db.connect, isolation_level="AUTOCOMMIT")
    with engine.direct() as conn:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status, never return into pytest
            status = 1
            try:
                conn.exec_driver_sql("SELECT 1")
            except ResourceClosedError:
                conn.close()
                status = 0 if db.closes == 0 else 2  # closing sent nothing on the socket
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        conn.exec_driver_sql("SELECT 1")  # the parent's connection is untouched
    assert db.closes == 1


def test_the_notebook_display_shows_the_direct_url_masked(engines: list[Engine]) -> None:
    pytest.importorskip("psycopg")
    html = engine_for(engines, PG_BOUNCED, direct_url=PG_DIRECT)._repr_html_()
    assert "direct_url" in html and "postgresql://app:***@127.0.0.1:5432/shop" in html
    assert SECRET not in html
