"""What the statement hot path's shortcuts must not lose: exact query counts from many
threads, engine.begin()'s commit / rollback / return, compiled text() shared by text,
positional binds, shared results of statements without rows, rows made on reading, and
Result.lastrowid with and without the driver having one (real sqlite3)."""

from __future__ import annotations

import gc
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbpool import ArgumentError, Engine, IntegrityError, ResourceClosedError, create_engine, text
from dbpool.direct import _NOT_COUNTED
from dbpool.histogram import BATCH, QUERY_BUCKETS, Histogram
from dbpool.result import fetch_result, no_rows


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = create_engine(f"sqlite:///{tmp_path / 'hot.db'}", connection_limit=2)
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER UNIQUE)"))
    yield made
    made.dispose()


# --------------------------------------------------------------------------- histogram


def test_histogram_counts_every_observation_from_many_threads_exactly() -> None:
    histogram = Histogram(QUERY_BUCKETS)
    threads, each = 8, 5 * BATCH + 7  # batches fold while others keep observing
    start = threading.Barrier(threads)

    def observe(value: float) -> None:
        start.wait()
        for _ in range(each):
            histogram.observe(value)

    workers = [
        threading.Thread(target=observe, args=(0.0001 if i % 2 else 0.2,)) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    buckets, count, total = histogram.snapshot()
    assert count == histogram.count == threads * each
    assert total == pytest.approx(histogram.sum) == pytest.approx(each * 4 * (0.0001 + 0.2))
    cumulative = dict(buckets)
    assert cumulative[0.0005] == each * 4  # the fast half
    assert cumulative[0.25] == cumulative[float("inf")] == threads * each


def test_histogram_reads_are_exact_before_a_batch_fills() -> None:
    histogram = Histogram(QUERY_BUCKETS)
    histogram.observe(0.002)
    assert (histogram.count, histogram.sum) == (1, 0.002)
    buckets, count, _ = histogram.snapshot(extra_zeros=2)
    assert count == 3 and dict(buckets)[0.0005] == 2 and dict(buckets)[0.005] == 3


def test_histogram_bounds_are_inclusive_upper_bounds() -> None:
    histogram = Histogram(QUERY_BUCKETS)
    for value in (0.001, 0.0010001, 10.0, 11.0):
        histogram.observe(value)
    cumulative = dict(histogram.snapshot()[0])
    assert cumulative[0.0005] == 0 and cumulative[0.001] == 1 and cumulative[0.005] == 2
    assert cumulative[10.0] == 3 and cumulative[float("inf")] == 4


def test_queries_total_counts_each_successful_statement(engine: Engine) -> None:
    before = engine.queries_total
    with engine.begin() as conn:
        for i in range(BATCH + 3):
            conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": i})
        with pytest.raises(IntegrityError):
            conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": 0})  # not counted
    assert engine.queries_total - before == BATCH + 3


# --------------------------------------------------------------------------- engine.begin()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_begin_commits_and_returns_the_connection(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (1)"))
        assert conn.in_transaction()
    assert conn.closed and engine.status().busy == 0
    assert _count(engine) == 1


def test_begin_rolls_back_on_error_and_returns_the_connection(engine: Engine) -> None:
    with pytest.raises(KeyError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (1)"))
        raise KeyError("boom")
    assert conn.closed and engine.status().busy == 0
    assert _count(engine) == 0


def test_begin_leaves_a_transaction_ended_in_the_block_alone(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (1)"))
        conn.commit()
        conn.execute(text("INSERT INTO t (x) VALUES (2)"))
        conn.rollback()
    assert _count(engine) == 1 and engine.status().busy == 0


def test_a_failed_commit_still_returns_the_connection(engine: Engine) -> None:
    # The sqlite dialect turns foreign keys on; a deferred one is checked at COMMIT.
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE child (p INTEGER REFERENCES t (id) DEFERRABLE "
                             "INITIALLY DEFERRED)")  # fmt: skip
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO child (p) VALUES (99)"))
        inserted = True
    assert inserted  # so the commit, not the statement, failed
    assert conn.closed and engine.status().busy == 0


def test_begin_checks_out_at_the_start_of_the_block(engine: Engine) -> None:
    block = engine.begin()
    assert engine.status().busy == 0
    with block as conn:
        assert engine.status().busy == 1 and not conn.closed
    assert engine.status().busy == 0


def test_begin_gives_a_connection_only_inside_its_block(engine: Engine) -> None:
    block = engine.begin()
    assert block.closed  # type: ignore[attr-defined]
    with pytest.raises(ResourceClosedError, match="only inside its with block"):
        block.execute(text("SELECT 1"))  # type: ignore[attr-defined]
    with block as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (1)"))
        with pytest.raises(ArgumentError, match="already open"), block:
            pass
        assert engine.status().busy == 1  # the refused inner block took nothing
    with pytest.raises(ResourceClosedError, match="only inside its with block"):
        conn.execute(text("SELECT 1"))
    assert _count(engine) == 1 and engine.status().busy == 0


def test_a_begin_block_can_be_entered_again_after_it_ends(engine: Engine) -> None:
    block = engine.begin()
    for x in (1, 2):
        with block as conn:
            conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": x})
        assert conn.closed and engine.status().busy == 0
    with pytest.raises(KeyError), block as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (3)"))
        raise KeyError("boom")
    assert _count(engine) == 2 and engine.status().busy == 0


def test_closing_inside_a_begin_block_rolls_back_and_the_block_ends_quietly(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (1)"))
        conn.close()
        assert engine.status().busy == 0
    assert _count(engine) == 0


def test_an_abandoned_begin_block_warns_and_frees_its_slot(engine: Engine) -> None:
    block = engine.begin()
    block.__enter__()
    assert engine.status().busy == 1
    with pytest.warns(ResourceWarning, match="test_hot_path.py"):
        del block
        gc.collect()
    assert engine.status().busy == 0


# --------------------------------------------------------------------------- text() and Result


def test_inline_text_is_compiled_once_per_text(engine: Engine) -> None:
    sql = "SELECT :a + :b  -- hot path"
    first = text(sql).compile("qmark")
    assert text(sql).compile("qmark") is first
    with engine.connect() as conn:
        assert conn.execute(text(sql), {"a": 1, "b": 2}).scalar() == 3


def test_params_may_be_any_mapping(engine: Engine) -> None:
    from types import MappingProxyType

    with engine.connect() as conn:
        got = conn.execute(text("SELECT :a"), MappingProxyType({"a": 5})).scalar()
    assert got == 5


class _NoLastRowId:
    rowcount = 3
    description = None


class _WithLastRowId(_NoLastRowId):
    lastrowid = 42


@pytest.mark.parametrize(("cursor", "expected"), [(_NoLastRowId(), None), (_WithLastRowId(), 42)])
def test_lastrowid_is_the_drivers_where_it_has_one(cursor: Any, expected: int | None) -> None:
    for _ in range(2):  # the second time from what was learnt of the cursor class
        result = fetch_result(cursor, None)
        assert (result.lastrowid, result.rowcount, result.returns_rows) == (expected, 3, False)


def test_results_cannot_be_changed_so_results_without_rows_can_be_shared() -> None:
    done = [fetch_result(_NoLastRowId(), None) for _ in range(2)]
    assert [r.rowcount for r in done] == [3, 3] and not done[0].returns_rows
    counts = (-2, -1, 0, 1, 63, 64, 10**6)
    assert [no_rows(n).rowcount for n in counts] == list(counts)
    assert no_rows(None).rowcount == -1
    for result in (*done, fetch_result(_WithLastRowId(), None)):
        with pytest.raises(AttributeError):
            result.rowcount = 5  # type: ignore[misc]
        with pytest.raises(AttributeError):
            result.lastrowid = 5  # type: ignore[misc]
        result.close()
        assert result.rowcount == 3
    with pytest.raises(ResourceClosedError):
        done[0].fetchall()


def test_rows_become_rows_when_read(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (x) VALUES (:x)"), [{"x": 1}, {"x": 2}, {"x": 3}])
        select = text("SELECT x, id FROM t ORDER BY x")
        assert conn.execute(select).scalar() == 1
        first = conn.execute(select).first()
        assert first is not None and (first.x, first._fields) == (1, ("x", "id"))
        result = conn.execute(select)
        assert result.fetchone() == (1, 1) and result.scalar() == 2
        assert result.fetchall() == [] and result.scalar() is None and result.first() is None
        rows = conn.execute(select).fetchmany(2)
        assert [row.x for row in rows] == [1, 2]


def test_positional_styles_take_a_tuple_of_the_binds_in_placeholder_order() -> None:
    compiled = text("SELECT :a, :b, :a").compile("format")
    assert compiled.sql == "SELECT %s, %s, %s"
    assert compiled._take({"b": 2, "a": 1, "c": 3}) == (1, 2, 1)
    assert text("SELECT :a").compile("qmark")._take({"a": 1}) == (1,)
    assert text("SELECT :a").compile("pyformat")._take is None  # the dict is passed on
    with pytest.raises(KeyError):
        compiled._take({"a": 1})
    with pytest.raises(ArgumentError, match="'b'"):
        compiled.bind({"a": 1})


def test_text_hands_out_one_unchangeable_clause_per_sql_text() -> None:
    clause = text("SELECT :shared_text_probe")
    assert text("SELECT :shared_text_probe") is clause
    assert text("SELECT :other_probe") is not clause
    with pytest.raises(AttributeError):
        clause.text = "DROP TABLE t"  # type: ignore[misc]
    with pytest.raises(ArgumentError, match="str"):
        text(b"SELECT 1")  # type: ignore[arg-type]


def test_a_direct_connections_statements_stay_uncounted_and_hold_nothing(
    tmp_path: Path,
) -> None:
    made = create_engine(f"sqlite:///{tmp_path / 'main.db'}", connection_limit=1)
    try:
        with made.direct() as conn:
            for i in range(BATCH * 2 + 5):
                conn.execute(text("SELECT :i"), {"i": i})
        assert made.queries_total == 0
        assert len(_NOT_COUNTED.pending) < BATCH
    finally:
        made.dispose()


def test_lastrowid_on_sqlite(engine: Engine) -> None:
    with engine.begin() as conn:
        result = conn.execute(text("INSERT INTO t (x) VALUES (7)"))
        assert result.lastrowid == conn.execute(text("SELECT id FROM t WHERE x = 7")).scalar()


# --------------------------------------------------------------------------- leak warnings


def test_a_lost_connection_is_reported_at_the_line_that_checked_it_out(engine: Engine) -> None:
    conn = engine.connect()
    line = sys._getframe().f_lineno - 1
    with pytest.warns(ResourceWarning, match=re.escape(f"{__file__}:{line}")):
        del conn
        gc.collect()
    block = engine.begin()
    line = sys._getframe().f_lineno - 1
    conn = block.__enter__()  # and never left
    with pytest.warns(ResourceWarning, match=re.escape(f"{__file__}:{line}")):
        del conn, block
        gc.collect()


def test_the_engine_passes_an_exact_dict_of_binds_through_and_copies_the_rest() -> None:
    compiled = text("SELECT :a, :b, :a").compile("pyformat")
    exact = {"a": 1, "b": 2}
    assert compiled._bind_shared(exact) is exact
    extra = {"a": 1, "b": 2, "c": 3}
    assert compiled._bind_shared(extra) == exact and compiled.bind(exact) is not exact
    with pytest.raises(ArgumentError, match="'b'"):
        compiled._bind_shared({"a": 1, "c": 3})
    assert text("SELECT '100%'").compile("pyformat")._bind_shared({}) is None
    assert text("SELECT :a, :b, :a").compile("qmark")._bind_shared(exact) == (1, 2, 1)
    assert text("SELECT :a").compile("numeric").bind({"a": 5}) == (5,)


def test_psycopgs_row_count_slot_is_read_only_when_its_property_just_returns_it() -> None:
    from types import SimpleNamespace

    from dbpool.dialects.postgresql import rowcount_is_slot

    class Plain:
        @property
        def rowcount(self) -> int:
            return self._rowcount  # type: ignore[attr-defined, no-any-return]

    class Computed:
        @property
        def rowcount(self) -> int:
            return self._pgresult.command_tuples  # type: ignore[attr-defined, no-any-return]

    class Attribute:
        rowcount = -1

    assert rowcount_is_slot(SimpleNamespace(Cursor=Plain))
    assert not rowcount_is_slot(SimpleNamespace(Cursor=Computed))
    assert not rowcount_is_slot(SimpleNamespace(Cursor=Attribute))
