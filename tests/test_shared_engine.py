"""One engine per process: shared_engine(), the many-engines warning, Jupyter display."""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import dbpool
from dbpool import ArgumentError, ConfigError, shared, shared_engine, text


@pytest.fixture(autouse=True)
def fresh_tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no shared engines, no live engines counted, no warning given."""
    monkeypatch.setattr(shared, "_shared", {})
    monkeypatch.setattr(shared, "_live", {})
    monkeypatch.setattr(shared, "_warned", False)
    yield
    for engine in shared._shared.values():
        engine.dispose()


# -- shared_engine ---------------------------------------------------------------------------


def test_the_same_url_and_settings_give_the_same_engine(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}?connection_limit=2"
    first = shared_engine(url, pool_timeout=5)
    with first.connect() as conn:
        conn.execute(text("SELECT 1"))

    again = shared_engine(url, pool_timeout=5)  # a re-run notebook cell

    assert again is first
    assert again.status().opened_total == 1, "no second pool was opened"


def test_different_urls_or_settings_give_different_engines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    base = shared_engine(url)
    assert shared_engine(url, pool_timeout=5) is not base
    assert shared_engine(url, pool_timeout=5) is shared_engine(url, pool_timeout=5)
    assert shared_engine(f"sqlite:///{tmp_path / 'other.db'}") is not base
    assert shared_engine(url, metrics_labels={"app": "a"}) is not shared_engine(
        url, metrics_labels={"app": "b"}
    )


def test_urls_that_mean_the_same_share_an_engine(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    one = shared_engine(f"sqlite:///{path}?connection_limit=2&pool_timeout=5")
    two = shared_engine(f"SQLite:///{path}?pool_timeout=5&connection_limit=2")
    three = shared_engine(dbpool.make_url(f"sqlite:///{path}?pool_timeout=5&connection_limit=2"))
    assert one is two is three


def test_dict_settings_are_compared_by_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    one = shared_engine(url, connect_args={"cached_statements": 10})
    two = shared_engine(url, connect_args={"cached_statements": 10})
    assert one is two


def test_an_unhashable_setting_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match=r"connect_args\['factory'\].*set"):
        shared_engine(f"sqlite:///{tmp_path / 'a.db'}", connect_args={"factory": {1}})


def test_without_a_url_it_reads_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    engine = shared_engine()
    assert engine is shared_engine(url)
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        shared_engine()


def test_a_shared_memory_database_survives_a_rerun_cell() -> None:
    engine = shared_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body TEXT)"))
        conn.execute(text("INSERT INTO notes VALUES ('kept')"))
    rerun = shared_engine("sqlite://")
    with rerun.connect() as conn:
        assert conn.execute(text("SELECT body FROM notes")).scalar() == "kept"


def test_a_disposed_shared_engine_is_still_the_one_and_usable(tmp_path: Path) -> None:
    engine = shared_engine(f"sqlite:///{tmp_path / 'a.db'}")
    engine.dispose()
    assert shared_engine(f"sqlite:///{tmp_path / 'a.db'}") is engine
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_bad_settings_raise_and_nothing_is_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(ConfigError, match="connection_limit"):
        shared_engine(url, connection_limit=0)
    assert shared._shared == {}


# -- the many-engines warning ----------------------------------------------------------------


def _many_engines_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "engines for the same database" in str(w.message)]


def test_more_than_ten_live_engines_for_one_database_warn_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engines = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(10):
            engines.append(dbpool.create_engine(url, connection_limit=3))
        assert _many_engines_warnings(record) == []
        engines.append(dbpool.create_engine(url, connection_limit=3))  # the 11th
        engines.append(dbpool.create_engine(url, connection_limit=3))
        engines.append(dbpool.create_engine(f"sqlite:///{tmp_path / 'b.db'}"))

    messages = _many_engines_warnings(record)
    assert len(messages) == 1, "emitted once"
    message = messages[0]
    assert message.startswith("11 dbpool engines for the same database")
    assert "up to 33 connections" in message  # 11 pools of 3: the multiplication
    assert "dbpool.shared_engine(url)" in message
    warned = next(w for w in record if "engines for the same" in str(w.message))
    assert warned.filename == __file__, "the warning points at the code making the engines"


def test_engines_that_were_garbage_collected_do_not_count(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(30):
            engine = dbpool.create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
            ref = weakref.ref(engine)
            del engine
            gc.collect()
            assert ref() is None
    assert _many_engines_warnings(record) == []


def test_in_memory_sqlite_engines_are_separate_databases_and_do_not_count() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        engines = [dbpool.create_engine("sqlite://") for _ in range(15)]
    assert _many_engines_warnings(record) == []
    assert len(engines) == 15


def test_different_users_of_one_server_database_count_together() -> None:
    pytest.importorskip("psycopg")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        engines = [  # nothing connects: engines are lazy
            dbpool.create_engine(f"postgresql://user{i}:pw@127.0.0.1:5432/shop") for i in range(11)
        ]
    messages = _many_engines_warnings(record)
    assert len(messages) == 1 and len(engines) == 11
    assert "127.0.0.1:5432/shop" in messages[0]
    assert "pw" not in messages[0].replace("pool", "")


# -- Jupyter ------------------------------------------------------------------------------------


def test_engine_and_status_render_as_html_tables_without_the_password(tmp_path: Path) -> None:
    engine = dbpool.create_engine(
        f"sqlite://scott:tiger-secret@/{tmp_path / 'app.db'}?connection_limit=2&pool_timeout=3"
    )
    with engine.connect():
        html = engine._repr_html_()
    status_html = engine.status()._repr_html_()
    engine.dispose()

    assert html.startswith("<table>")
    assert "tiger-secret" not in html and "***" in html
    for name in ("connection_limit", "pool_timeout", "pre_ping", "busy", "idle", "waiting"):
        assert f">{name}<" in html
    assert "<th style='text-align:left'>busy</th><td style='text-align:left'>1</td>" in html
    assert "<th style='text-align:left'>pool_timeout</th><td style='text-align:left'>3.0<" in html
    assert status_html.startswith("<table>") and ">opened_total<" in status_html
