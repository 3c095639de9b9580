"""Property-based fuzzing of settings parsing (URL query strings, create_engine keywords and
QueuePool keywords): any input gives an engine (or pool) with sane settings, or a
ConfigError; never another exception, and never a message that shows the password.
URL parsing itself is fuzzed in test_url.py."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dbpool import URL, ConfigError, EngineConfig, QueuePool, create_engine
from dbpool.config import SETTINGS
from dbpool.engine import ENGINE_KEYWORDS

SECRET = "S3cr3t-Pw!"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _available(drivername: str) -> bool:
    try:
        create_engine(f"{drivername}://u:pw@127.0.0.1:1/db")
    except Exception:
        return False
    return True


BASES = [
    base
    for base, scheme in (
        ("sqlite:///fuzz.db", "sqlite"),
        (f"postgresql://app:{quote(SECRET, safe='')}@127.0.0.1:5432/shop", "postgresql"),
        (f"mysql://app:{quote(SECRET, safe='')}@127.0.0.1:3306/shop", "mysql"),
    )
    if scheme == "sqlite" or _available(scheme)
]

SETTING_NAMES = st.sampled_from(sorted(SETTINGS))
# Plausible values (numbers, booleans, levels, near misses) mixed with any text at all.
_PLAUSIBLE = st.sampled_from(
    ["0", "1", "5", "-1", "1.5", "0.0", "1e3", "1e400", "nan", "inf", "-0", "+3", "++3",
     " 7 ", "1_0", "²", "٣", "true", "false", "True", "yes", "", " ", "read committed",
     "REPEATABLE_READ", "serializable", "autocommit", "public", "x" * 5000, "9" * 5000]
)  # fmt: skip
QUERY_VALUES = _PLAUSIBLE | st.text()
KEYWORD_VALUES: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.decimals()
    | st.fractions()
    | st.complex_numbers()
    | st.text()
    | _PLAUSIBLE
    | st.binary()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(), st.integers(), max_size=1)
    | st.just(object())
)


def assert_sane(config: EngineConfig) -> None:
    assert isinstance(config.connection_limit, int) and config.connection_limit >= 1
    for name in (
        "pool_timeout",
        "connect_timeout",
        "max_idle_connection_lifetime",
        "max_connection_lifetime",
        "leak_detection_threshold",
    ):
        value = getattr(config, name)
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, (name, value)
    assert config.pre_ping is None or (math.isfinite(config.pre_ping) and config.pre_ping >= 0)
    assert isinstance(config.pgbouncer, bool)


def engine_or_config_error(url: str | URL, **kwargs: Any) -> None:
    try:
        engine = create_engine(url, **kwargs)
    except ConfigError as exc:
        for text in (str(exc), repr(exc), *map(str, exc.args)):
            assert SECRET not in text
            assert quote(SECRET, safe="") not in text
        assert exc.__cause__ is None or SECRET not in str(exc.__cause__)
        return
    assert_sane(engine.config)
    assert SECRET not in repr(engine)
    assert SECRET not in str(engine.url)
    engine.dispose()


@pytest.mark.parametrize("base", BASES)
@FUZZ
@given(query=st.dictionaries(SETTING_NAMES | st.text(min_size=1), QUERY_VALUES, max_size=4))
def test_fuzz_url_query_settings(base: str, query: dict[str, str]) -> None:
    assume(all(SECRET not in k + v for k, v in query.items()))
    from dbpool import make_url

    try:
        url = make_url(base).update_query(query)
    except ConfigError:
        return  # not representable as a URL (tested in test_url.py)
    engine_or_config_error(url)


@pytest.mark.parametrize("base", BASES)
@FUZZ
@given(raw=st.text())
def test_fuzz_raw_query_string(base: str, raw: str) -> None:
    assume(SECRET not in raw)
    from dbpool import make_url

    try:
        url = make_url(f"{base}?{raw}")
    except ConfigError:
        return
    engine_or_config_error(url)


@pytest.mark.parametrize("base", BASES)
@FUZZ
@given(kwargs=st.dictionaries(SETTING_NAMES, KEYWORD_VALUES, max_size=4))
def test_fuzz_create_engine_keywords(base: str, kwargs: dict[str, Any]) -> None:
    assume(all(SECRET not in repr(v) for v in kwargs.values()))
    engine_or_config_error(base, **kwargs)


@FUZZ
@given(name=st.text(), value=KEYWORD_VALUES)
def test_fuzz_unknown_keywords(name: str, value: Any) -> None:
    assume(name not in SETTINGS and name not in ENGINE_KEYWORDS)
    with pytest.raises(ConfigError, match="unknown keyword argument"):
        create_engine(BASES[-1], **{name: value})


@FUZZ
@given(value=KEYWORD_VALUES | st.dictionaries(st.text(), st.text() | KEYWORD_VALUES, max_size=3))
def test_fuzz_metrics_labels(value: Any) -> None:
    engine_or_config_error(BASES[0], metrics_labels=value)


POOL_KEYWORDS = (
    "connection_limit",
    "pool_timeout",
    "max_idle_connection_lifetime",
    "max_connection_lifetime",
    "pre_ping",
    "leak_detection_threshold",
)


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(POOL_KEYWORDS), KEYWORD_VALUES, max_size=3))
def test_fuzz_queuepool_keywords(kwargs: dict[str, Any]) -> None:
    try:
        pool = QueuePool(object, ping=lambda conn: None, **kwargs)
    except ConfigError:
        return
    assert pool.connection_limit >= 1
    assert math.isfinite(pool.pool_timeout) and pool.pool_timeout >= 0
    pool.dispose()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("connection_limit", "²"),
        ("connection_limit", "++3"),
        ("connection_limit", "9" * 5000),
        ("connection_limit", 1.0),
        ("connection_limit", Decimal(2)),
        ("pool_timeout", 10**400),
        ("pool_timeout", "1e400"),
        ("pool_timeout", Fraction(1, 3)),
        ("pool_timeout", complex(1, 0)),
        ("pre_ping", 10**400),
        ("pre_ping", "maybe"),
        ("isolation_level", 3),
        ("pgbouncer", "yes please"),
        ("schema", ""),
    ],
)
def test_edge_values_found_by_fuzzing_raise_config_error_naming_the_setting(
    name: str, value: object
) -> None:
    with pytest.raises(ConfigError, match=name):
        create_engine("sqlite://", **{name: value})


def test_a_good_query_resolves_every_setting() -> None:
    engine = create_engine(
        "sqlite:///x.db?connection_limit=+3&pool_timeout=1.5&connect_timeout=0"
        "&max_idle_connection_lifetime=60&max_connection_lifetime=3600&pre_ping=0.25"
        "&leak_detection_threshold=30&isolation_level=serializable"
    )
    config = engine.config
    assert (config.connection_limit, config.pool_timeout, config.connect_timeout) == (3, 1.5, 0)
    assert config.pre_ping == 0.25
    assert config.leak_detection_threshold == 30
    assert config.isolation_level == "SERIALIZABLE"
