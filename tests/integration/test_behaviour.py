"""One engine behaviour suite, run on every target in targets.py over real connections.

Every test gets a fresh table of its own (``id`` primary key, ``name``, ``n``), so tests
never see each other's rows, and engines are disposed at the end.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dbpool
from dbpool import Engine, text
from dbpool.result import MultipleResultsFound, NoResultFound
from tests.engines import engine_for
from tests.integration.targets import TARGETS, Target
from tests.threads import run_threads

MakeEngine = Callable[..., Engine]


@pytest.fixture(params=TARGETS, ids=[t.id for t in TARGETS])
def target(request: pytest.FixtureRequest) -> Target:
    target: Target = request.param
    return target


@pytest.fixture
def make_engine(
    target: Target, request: pytest.FixtureRequest, engines: list[Engine]
) -> MakeEngine:
    url = target.url(request)

    def make(**settings: Any) -> Engine:
        settings.setdefault("pool_timeout", 30)  # generous: the machine may be busy
        return engine_for(engines, url, **settings)

    return make


@pytest.fixture
def engine(make_engine: MakeEngine) -> Engine:
    return make_engine()


@pytest.fixture
def table(engine: Engine) -> Iterator[str]:
    """A new table in ``engine``'s database, dropped afterwards."""
    name = f"dbpool_behaviour_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, n INTEGER)"
        )
    yield name
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.commit()


def insert(conn: dbpool.Connection, table: str, id_: int, name: str = "x", n: int = 0) -> None:
    conn.execute(
        text(f"INSERT INTO {table} (id, name, n) VALUES (:id, :name, :n)"),
        {"id": id_, "name": name, "n": n},
    )


def ids(engine: Engine, table: str) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text(f"SELECT id FROM {table} ORDER BY id")).scalars())


# -- transactions ------------------------------------------------------------------------


def test_commit_as_you_go(engine: Engine, table: str) -> None:
    with engine.connect() as conn:
        insert(conn, table, 1)
        assert conn.in_transaction()
        conn.commit()
        assert not conn.in_transaction()
        insert(conn, table, 2)
        conn.rollback()
        insert(conn, table, 3)
        conn.commit()
    assert ids(engine, table) == [1, 3]


def test_begin_commits_on_success_and_rolls_back_on_error(engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        insert(conn, table, 1)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        insert(conn, table, 2)
        raise RuntimeError("boom")
    with engine.connect() as conn:
        with conn.begin() as tx:
            insert(conn, table, 3)
            tx.rollback()
        assert not tx.is_active
        with conn.begin():
            insert(conn, table, 4)
    assert ids(engine, table) == [1, 4]


def test_close_without_commit_rolls_back(engine: Engine, table: str) -> None:
    conn = engine.connect()
    insert(conn, table, 1)
    conn.close()
    assert conn.closed
    assert ids(engine, table) == []


def test_executemany(target: Target, engine: Engine, table: str) -> None:
    rows = [{"id": i, "name": f"n{i}", "n": i * 10} for i in range(1, 6)]
    with engine.begin() as conn:
        result = conn.execute(
            text(f"INSERT INTO {table} (id, name, n) VALUES (:id, :name, :n)"), rows
        )
        assert result.rowcount == (5 if target.executemany_rowcount else -1)
    with engine.connect() as conn:
        found = conn.execute(text(f"SELECT id, name, n FROM {table} ORDER BY id")).all()
    assert [tuple(row) for row in found] == [(r["id"], r["name"], r["n"]) for r in rows]


# -- binds -------------------------------------------------------------------------------


def test_binds_repeated_names_literals_and_comments(engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        # :v twice; ':x' inside a string, '%' next to binds and a :bind in a comment stay.
        conn.execute(
            text(f"INSERT INTO {table} (id, name, n) VALUES (:v, 'a:x 100%', :v) -- :nope"),
            {"v": 7},
        )
        insert(conn, table, 8, name="it's", n=0)
        conn.execute(text(f"UPDATE {table} SET n = NULL WHERE id = :id"), {"id": 8})
    with engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT id, name, n FROM {table} WHERE id = :v AND n = :v /* :nope */"),
            {"v": 7},
        ).one()
        assert tuple(row) == (7, "a:x 100%", 7)
        quoted = conn.execute(
            text(f"SELECT name FROM {table} WHERE name = :name"), {"name": "it's"}
        ).scalar_one()
        assert quoted == "it's"
        assert conn.execute(text(f"SELECT n FROM {table} WHERE id = 8")).scalar() is None
        with pytest.raises(dbpool.ArgumentError, match="v"):
            conn.execute(text(f"SELECT id FROM {table} WHERE id = :v"), {})


# -- results -----------------------------------------------------------------------------


def test_result_api(target: Target, engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        for i, name in enumerate(["ann", "bob", "cy"], start=1):
            insert(conn, table, i, name=name, n=i * 10)
        updated = conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id >= :id"), {"id": 2})
        assert updated.rowcount == 2
    select = text(f"SELECT id, name, n FROM {table} ORDER BY id")
    with engine.connect() as conn:
        result = conn.execute(select)
        assert result.keys() == ["id", "name", "n"]
        if target.select_rowcount:
            assert result.rowcount == 3
        rows = result.all()
        assert [tuple(r) for r in rows] == [(1, "ann", 10), (2, "bob", 21), (3, "cy", 31)]
        assert rows[1].name == "bob" and rows[1]._mapping["n"] == 21
        assert dict(rows[0]._mapping) == {"id": 1, "name": "ann", "n": 10}

        assert tuple(conn.execute(select).first() or ()) == (1, "ann", 10)
        assert conn.execute(select).scalar() == 1
        assert conn.execute(select).scalars().all() == [1, 2, 3]
        assert conn.execute(select).scalars("name").all() == ["ann", "bob", "cy"]
        assert [dict(m) for m in conn.execute(select).mappings()][2] == {
            "id": 3,
            "name": "cy",
            "n": 31,
        }
        one = text(f"SELECT name FROM {table} WHERE id = :id")
        assert conn.execute(one, {"id": 2}).one().name == "bob"
        assert conn.execute(one, {"id": 2}).scalar_one() == "bob"
        assert conn.execute(one, {"id": 9}).one_or_none() is None
        assert conn.execute(one, {"id": 9}).first() is None
        assert conn.execute(one, {"id": 9}).scalar() is None
        with pytest.raises(NoResultFound):
            conn.execute(one, {"id": 9}).one()
        with pytest.raises(MultipleResultsFound):
            conn.execute(select).one_or_none()
        with pytest.raises(MultipleResultsFound):
            conn.execute(select).scalar_one()
        fetched = conn.execute(select)
        assert fetched.fetchone() is not None
        assert len(fetched.fetchmany(5)) == 2
        assert fetched.fetchall() == []


# -- errors ------------------------------------------------------------------------------


def test_duplicate_key_raises_integrity_error_and_the_connection_recovers(
    engine: Engine, table: str
) -> None:
    driver_module = engine.dialect.dbapi.__name__
    with engine.connect() as conn:
        insert(conn, table, 1)
        conn.commit()
        with pytest.raises(dbpool.IntegrityError) as caught:
            insert(conn, table, 1)
        error = caught.value
        assert type(error.orig).__module__.startswith(driver_module)
        assert error.statement is not None and "INSERT INTO" in error.statement
        assert not error.connection_invalidated
        conn.rollback()
        insert(conn, table, 2)
        conn.commit()
    assert ids(engine, table) == [1, 2]


def test_a_failed_statement_reports_the_callers_named_parameters(
    engine: Engine, table: str
) -> None:
    # The drivers get a tuple in placeholder order; the error keeps what the caller wrote.
    with engine.connect() as conn:
        insert(conn, table, 1, name="row")
        conn.commit()
        params = {"id": 1, "name": "dup", "unused": "x"}
        with pytest.raises(dbpool.IntegrityError) as caught:
            conn.execute(text(f"INSERT INTO {table} (id, name) VALUES (:id, :name)"), params)
        assert caught.value.params == params
        conn.rollback()
        with pytest.raises(dbpool.ArgumentError, match="'name'"):
            conn.execute(text(f"INSERT INTO {table} (id, name) VALUES (:id, :name)"), {"id": 2})
        single = text(f"SELECT name FROM {table} WHERE id = :id")
        assert conn.execute(single, {"id": 1, "other": 5}).scalar() == "row"
        with pytest.raises(dbpool.ArgumentError, match="'id'"):
            conn.execute(single, {"other": 5})


def test_bad_sql_raises_the_pep249_class_and_keeps_orig(target: Target, engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(target.bad_sql_error) as caught:
            conn.exec_driver_sql("SELEC 1")
        orig = caught.value.orig
        assert orig is not None  # the driver's own exception, of the same PEP 249 class
        assert target.bad_sql_error.__name__ in {k.__name__ for k in type(orig).__mro__}
        conn.rollback()
        assert conn.execute(text("SELECT 1")).scalar() == 1


# -- reset on return ---------------------------------------------------------------------


def test_close_leaves_no_open_transaction_for_the_next_checkout(
    target: Target, make_engine: MakeEngine
) -> None:
    engine = make_engine(connection_limit=1)
    with engine.connect() as conn:
        name = _create_table(conn)
        insert(conn, name, 1)
        first = conn.driver_connection
        assert target.driver_in_transaction(first)
    with engine.connect() as conn:
        assert conn.driver_connection is first  # the same physical connection
        assert not target.driver_in_transaction(first)
        assert conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar() == 0
        conn.exec_driver_sql(f"DROP TABLE {name}")
        conn.commit()


def test_pool_checkin_resets_a_raw_driver_transaction(
    target: Target, make_engine: MakeEngine
) -> None:
    engine = make_engine(connection_limit=1)
    with engine.connect() as conn:
        name = _create_table(conn)
        conn.commit()
    raw = engine.pool.connect()  # the pool alone: only the dialect's reset can clean up
    dbapi_conn = raw.driver_connection
    engine.dialect.do_begin(dbapi_conn)
    cursor = dbapi_conn.cursor()
    cursor.execute(f"INSERT INTO {name} (id, name, n) VALUES (1, 'raw', 0)")
    cursor.close()
    assert target.driver_in_transaction(dbapi_conn)
    raw.close()
    with engine.connect() as conn:
        assert conn.driver_connection is dbapi_conn
        assert not target.driver_in_transaction(dbapi_conn)
        assert conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar() == 0
        conn.exec_driver_sql(f"DROP TABLE {name}")
        conn.commit()


def _create_table(conn: dbpool.Connection) -> str:
    name = f"dbpool_reset_{uuid.uuid4().hex[:12]}"
    conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(40), n INT)")
    conn.commit()
    return name


# -- AUTOCOMMIT --------------------------------------------------------------------------


def test_autocommit_engine_and_a_real_transaction_from_begin(
    target: Target, make_engine: MakeEngine
) -> None:
    engine = make_engine(isolation_level="AUTOCOMMIT", connection_limit=1)
    with engine.connect() as conn:
        name = _create_table(conn)
        insert(conn, name, 1)  # no commit: autocommit keeps it
        assert not target.driver_in_transaction(conn.driver_connection)
    assert ids(engine, name) == [1]

    with pytest.raises(RuntimeError), engine.begin() as conn:
        insert(conn, name, 2)
        assert target.driver_in_transaction(conn.driver_connection)
        raise RuntimeError("undo")
    with engine.begin() as conn:
        insert(conn, name, 3)
    assert ids(engine, name) == [1, 3]

    with engine.connect() as conn:  # back in autocommit after the explicit transaction
        insert(conn, name, 4)
    assert ids(engine, name) == [1, 3, 4]
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")


# -- threads -----------------------------------------------------------------------------


def test_many_threads_share_the_pool_within_the_limit(
    target: Target, make_engine: MakeEngine
) -> None:
    limit = target.concurrency_limit
    engine = make_engine(connection_limit=limit)
    with engine.connect() as conn:
        name = _create_table(conn)
    threads_count, rounds = 16, 15
    lock = threading.Lock()
    in_use = 0
    most_in_use = 0
    most_open = 0

    def work(number: int) -> None:
        nonlocal in_use, most_in_use, most_open
        for i in range(rounds):
            with engine.connect() as conn:
                with lock:
                    in_use += 1
                    most_in_use = max(most_in_use, in_use)
                most_open = max(most_open, engine.status().open)
                insert(conn, name, number * 1000 + i, name=f"t{number}", n=i)
                conn.commit()
                with lock:
                    in_use -= 1

    run_threads(threads_count, work)
    assert most_in_use <= limit and most_open <= limit
    status = engine.status()
    assert status.busy == 0 and status.waiting == 0 and status.open <= limit
    assert status.timeouts_total == 0
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar() == (
            threads_count * rounds
        )
        conn.exec_driver_sql(f"DROP TABLE {name}")
        conn.commit()
