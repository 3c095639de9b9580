"""Settings: every pool setting from the URL and from keywords, defaults, and bad input.

A stand-in dialect over the fake driver keeps these tests independent of any real
database; one test at the end goes through the SQLite dialect.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest

import dbpool
from dbpool import ConfigError, create_engine, dialects
from dbpool.config import DEFAULTS, SETTINGS, default_connection_limit, resolve_settings
from dbpool.dialects.base import Dialect
from tests.fakedb import FakeDB

PASSWORD = "Zq9-very-DISTINCT-pw"
BASE = f"fake://scott:{PASSWORD}@db.example.com:5432/app"


class FakeDialect(Dialect):
    """A dialect whose driver is tests.fakedb: accepts two driver parameters."""

    name = "fake"
    driver = "tests.fakedb"
    extra = "test"
    accepted_query_params = frozenset({"sslmode", "application_name"})
    isolation_levels = ("AUTOCOMMIT", "READ COMMITTED", "SERIALIZABLE")

    def connect(self) -> Any:
        return FakeDB().connect()


@pytest.fixture(autouse=True)
def fake_dialect(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(dialects.REGISTRY, "fake", f"{__name__}:FakeDialect")
    yield


def engine(query: str = "", **kwargs: Any) -> dbpool.Engine:
    return create_engine(BASE + (f"?{query}" if query else ""), **kwargs)


def assert_password_free(error: BaseException) -> None:
    seen: BaseException | None = error
    while seen is not None:
        assert PASSWORD not in str(seen)
        assert PASSWORD not in repr(seen)
        seen = seen.__cause__ or seen.__context__


def rejected(query: str = "", **kwargs: Any) -> str:
    """The message of the ConfigError ``engine(query, **kwargs)`` raises (password-free)."""
    with pytest.raises(ConfigError) as info:
        engine(query, **kwargs)
    assert_password_free(info.value)
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------


def test_defaults() -> None:
    config = engine().config
    assert config.connection_limit == default_connection_limit()
    assert config.pool_timeout == 10
    assert config.connect_timeout == 5
    assert config.max_idle_connection_lifetime == 300
    assert config.max_connection_lifetime == 0
    assert config.pre_ping == 0.5
    assert config.leak_detection_threshold == 0
    assert config.isolation_level is None
    assert config.pgbouncer is False
    assert config.schema is None


def test_default_connection_limit_is_physical_cores_times_two_plus_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psutil

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 3 if not logical else 6)
    assert default_connection_limit() == 7
    assert engine().config.connection_limit == 7


def test_default_connection_limit_falls_back_to_logical_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    import psutil

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert default_connection_limit() == 9
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_connection_limit() == 3


def test_sqlite_defaults_to_one_connection(tmp_path: Any) -> None:
    with create_engine(f"sqlite:///{tmp_path / 'one.db'}") as sqlite_engine:
        assert sqlite_engine.config.connection_limit == 1
        assert sqlite_engine.pool.connection_limit == 1


def test_config_is_frozen_and_lists_every_setting() -> None:
    config = engine().config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.connection_limit = 3  # type: ignore[misc]
    assert [name for name, _ in config.items()] == list(SETTINGS)


# -- every setting, from the URL and from keywords --------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "value", "expected"),
    [
        ("connection_limit", "7", 7, 7),
        ("pool_timeout", "2.5", 2.5, 2.5),
        ("pool_timeout", "0", 0, 0.0),
        ("connect_timeout", "3", 3, 3.0),
        ("max_idle_connection_lifetime", "60", 60, 60.0),
        ("max_idle_connection_lifetime", "0", 0, 0.0),
        ("max_connection_lifetime", "1800.5", 1800.5, 1800.5),
        ("pre_ping", "true", True, 0.5),
        ("pre_ping", "false", False, None),
        ("pre_ping", "2", 2, 2.0),
        ("pre_ping", "0", 0, 0.0),
        ("leak_detection_threshold", "30", 30, 30.0),
        ("isolation_level", "read_committed", "read committed", "READ COMMITTED"),
        ("isolation_level", "AUTOCOMMIT", "autocommit", "AUTOCOMMIT"),
        ("pgbouncer", "true", True, True),
        ("pgbouncer", "1", 1, True),
        ("pgbouncer", "FALSE", False, False),
        ("pgbouncer", "0", 0, False),
        ("schema", "sales", "sales", "sales"),
    ],
)
def test_each_setting_from_url_and_keyword(
    name: str, text: str, value: object, expected: object
) -> None:
    assert getattr(engine(f"{name}={text}").config, name) == expected
    assert getattr(engine(**{name: value}).config, name) == expected


def test_keywords_override_the_url() -> None:
    config = engine("connection_limit=3&pool_timeout=4&schema=a", connection_limit=9).config
    assert config.connection_limit == 9
    assert config.pool_timeout == 4  # the URL's, not overridden
    assert config.schema == "a"


def test_settings_reach_the_pool() -> None:
    pool = engine(
        "connection_limit=3&pool_timeout=1.5&max_idle_connection_lifetime=7"
        "&max_connection_lifetime=9&pre_ping=false"
    ).pool
    assert pool.connection_limit == 3
    assert pool.pool_timeout == 1.5
    assert pool._max_idle == 7
    assert pool._max_lifetime == 9
    assert pool._ping_window == math.inf  # pre_ping off


def test_driver_parameters_go_to_the_dialect() -> None:
    dialect = engine("sslmode=require&connection_limit=2&application_name=shop").dialect
    assert dialect.driver_params == {"sslmode": "require", "application_name": "shop"}


def test_resolve_settings_splits_settings_from_driver_params() -> None:
    config, driver_params = resolve_settings(
        {"pool_timeout": "3", "sslmode": "disable"}, {"connection_limit": 4}
    )
    assert (config.pool_timeout, config.connection_limit) == (3.0, 4)
    assert driver_params == {"sslmode": "disable"}
    assert config.connect_timeout == DEFAULTS["connect_timeout"]


# -- bad values -------------------------------------------------------------------------

BAD_VALUES = [
    ("connection_limit", "0"),
    ("connection_limit", "-1"),
    ("connection_limit", "five"),
    ("connection_limit", "2.5"),
    ("connection_limit", ""),
    ("pool_timeout", "-1"),
    ("pool_timeout", "soon"),
    ("pool_timeout", "nan"),
    ("pool_timeout", "inf"),
    ("connect_timeout", "-0.5"),
    ("connect_timeout", "1e999"),
    ("max_idle_connection_lifetime", "forever"),
    ("max_connection_lifetime", "-5"),
    ("pre_ping", "sometimes"),
    ("pre_ping", "-1"),
    ("leak_detection_threshold", "x"),
    ("isolation_level", "chaos"),
    ("isolation_level", "READ"),
    ("pgbouncer", "yes"),
    ("pgbouncer", "2"),
    ("pgbouncer", ""),
    ("schema", ""),
]


@pytest.mark.parametrize(("name", "text"), BAD_VALUES)
def test_bad_url_values_name_the_parameter(name: str, text: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        engine(f"{name}={text}")
    assert_password_free(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("connection_limit", 0),
        ("connection_limit", -3),
        ("connection_limit", 2.5),
        ("connection_limit", True),
        ("connection_limit", None),
        ("pool_timeout", -1),
        ("pool_timeout", float("nan")),
        ("pool_timeout", float("inf")),
        ("pool_timeout", True),
        ("pool_timeout", None),
        ("connect_timeout", [5]),
        ("max_idle_connection_lifetime", float("-inf")),
        ("max_connection_lifetime", "-1"),
        ("pre_ping", "maybe"),
        ("pre_ping", float("nan")),
        ("leak_detection_threshold", -0.1),
        ("isolation_level", "DIRTY READ"),
        ("isolation_level", 3),
        ("pgbouncer", "yes"),
        ("pgbouncer", 2),
        ("schema", "  "),
        ("schema", 5),
    ],
)
def test_bad_keyword_values_name_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        engine(**{name: value})
    assert_password_free(info.value)


def test_config_error_says_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match=r"connection_limit must be an integer >= 1, got '0'"):
        engine("connection_limit=0")
    with pytest.raises(ConfigError, match="true, false, 1 or 0"):
        engine("pgbouncer=yes")
    with pytest.raises(ConfigError, match="READ COMMITTED"):
        engine("isolation_level=chaos")


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        engine("connection_limit=0")


def test_an_isolation_level_the_dialect_lacks_is_rejected() -> None:
    with pytest.raises(ConfigError, match="REPEATABLE READ") as info:
        engine("isolation_level=repeatable_read")
    assert "not available on fake" in str(info.value)


# -- unknown names ----------------------------------------------------------------------


def test_unknown_query_parameter_near_a_setting_gets_did_you_mean() -> None:
    message = rejected("conection_limit=5")
    assert "'conection_limit'" in message
    assert 'Did you mean "connection_limit"?' in message


def test_unknown_query_parameter_near_a_driver_parameter_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match='Did you mean "sslmode"'):
        engine("sslmod=require")


def test_unknown_query_parameter_far_from_everything() -> None:
    message = rejected("frobnicate=1")
    assert "'frobnicate'" in message
    assert "neither a pool setting nor accepted by the fake driver" in message
    assert "Did you mean" not in message


def test_unknown_keyword_near_a_setting_gets_did_you_mean() -> None:
    message = rejected(conection_limit=5)
    assert "'conection_limit'" in message
    assert 'Did you mean "connection_limit"?' in message
    assert "pool_timeout" in message  # lists what it takes


def test_unknown_keyword_near_an_engine_keyword_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match='Did you mean "echo"'):
        engine(ecko=True)


def test_unknown_keyword_far_from_everything() -> None:
    with pytest.raises(ConfigError, match="'frobnicate'") as info:
        engine(frobnicate=1)
    assert "Did you mean" not in str(info.value)


def test_unknown_database() -> None:
    with pytest.raises(ConfigError, match='Did you mean "sqlite"'):
        create_engine("sqlit:///x.db")


# -- where the URL comes from -----------------------------------------------------------


def test_no_url_and_no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        create_engine()
    message = str(info.value)
    assert "create_engine()" in message
    assert "DATABASE_URL" in message


def test_empty_database_url_is_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_engine()


def test_database_url_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", BASE + "?connection_limit=4")
    from_env = create_engine()
    assert from_env.url.host == "db.example.com"
    assert from_env.config.connection_limit == 4
    assert create_engine(BASE).url.password == PASSWORD  # an explicit URL wins


def test_a_url_object_is_accepted() -> None:
    url = dbpool.make_url(BASE).update_query({"connection_limit": "2"})
    assert create_engine(url).config.connection_limit == 2


# -- the password stays hidden ----------------------------------------------------------


def test_password_is_hidden_in_reprs() -> None:
    with engine("sslmode=require") as made, made.connect() as conn:
        texts = [repr(made), str(made), repr(made.url), str(made.url), repr(made.config),
                 made.dialect.describe(), repr(conn), str(made.status())]  # fmt: skip
    for text in texts:
        assert PASSWORD not in text
    assert "***" in repr(made)


def test_password_is_absent_from_the_start_log_line(caplog: pytest.LogCaptureFixture) -> None:
    made = engine("connection_limit=3")
    with caplog.at_level(logging.DEBUG, logger="dbpool"), made.connect():
        pass
    assert "Starting a fake pool with 3 connections" in caplog.text
    assert PASSWORD not in caplog.text
    made.dispose()
