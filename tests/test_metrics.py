"""engine.metrics: Prisma-shaped JSON, Prometheus text (checked with prometheus_client's
parser) and the prometheus_client collector, all on real SQLite engines."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import ConfigError, PoolTimeoutError, text
from dbpool.metrics import Metrics, PrometheusCollector
from tests.engines import engine_for
from tests.fakedb import wait_for

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

COUNTERS = [
    "dbpool_pool_connections_opened_total",
    "dbpool_pool_connections_closed_total",
    "dbpool_pool_timeouts_total",
    "dbpool_pool_validation_failures_total",
    "dbpool_pool_too_many_connections_total",
    "dbpool_client_queries_total",
    "dbpool_client_socket_timeouts_total",
]
GAUGES = [
    "dbpool_pool_connections_open",
    "dbpool_pool_connections_busy",
    "dbpool_pool_connections_idle",
    "dbpool_pool_wait_count",
]
HISTOGRAMS = ["dbpool_pool_wait_duration_seconds", "dbpool_client_queries_duration_seconds"]


@pytest.fixture
def engine(tmp_path: Path, engines: list[dbpool.Engine]) -> dbpool.Engine:
    return engine_for(
        engines,
        f"sqlite:///{tmp_path / 'app.db'}",
        connection_limit=2,
        pool_timeout=30,
        max_idle_connection_lifetime=0,
        metrics_labels={"app": "shop"},
    )


def by_key(metrics: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {entry["key"]: entry["value"] for kind in metrics.values() for entry in kind}


def exercise(engine: dbpool.Engine) -> list[dbpool.Connection]:
    """Known activity: 3 queries, 3 connections opened, 1 invalidated, 1 queued checkout
    that was served, 1 that timed out; ends with both connections busy (returned here)
    and one caller waiting."""
    first = engine.connect()
    second = engine.connect()
    for _ in range(3):
        first.execute(text("SELECT 1"))
    second.invalidate()  # closes a connection: closed_total 1
    second.close()

    third = engine.connect()  # opens again in the freed slot
    served: list[dbpool.Connection] = []
    waiter = threading.Thread(target=lambda: served.append(engine.connect()))
    waiter.start()
    assert wait_for(lambda: engine.status().waiting == 1, timeout=30)
    third.close()  # handed to the waiter, who waited
    waiter.join(30)
    served[0].close()

    last = engine.connect()
    engine.pool._timeout = 0.05  # one checkout that times out, without a long test
    try:
        with pytest.raises(PoolTimeoutError):
            engine.connect()
    finally:
        engine.pool._timeout = 30.0

    def wait_for_a_connection() -> None:
        with engine.connect():
            pass

    threading.Thread(target=wait_for_a_connection, daemon=True).start()
    assert wait_for(lambda: engine.status().waiting == 1, timeout=30)
    return [first, last]


@pytest.fixture
def exercised(engine: dbpool.Engine) -> Iterator[dbpool.Engine]:
    held = exercise(engine)
    yield engine
    for conn in held:
        conn.close()


def test_the_json_has_prismas_shape_and_exactly_these_keys(engine: dbpool.Engine) -> None:
    metrics = engine.metrics.json()
    assert isinstance(engine.metrics, Metrics)
    assert list(metrics) == ["counters", "gauges", "histograms"]
    assert [e["key"] for e in metrics["counters"]] == COUNTERS
    assert [e["key"] for e in metrics["gauges"]] == GAUGES
    assert [e["key"] for e in metrics["histograms"]] == HISTOGRAMS
    for kind in metrics.values():
        for entry in kind:
            assert set(entry) == {"key", "labels", "value", "description"}
            assert entry["labels"] == {"app": "shop"}
            assert entry["description"]
    json.dumps(metrics, allow_nan=False)  # plain JSON: no Infinity


def test_json_values_follow_the_pool(exercised: dbpool.Engine) -> None:
    values = by_key(exercised.metrics.json())
    status = exercised.status()
    assert values["dbpool_pool_connections_opened_total"] == 3 == status.opened_total
    assert values["dbpool_pool_connections_closed_total"] == 1
    assert values["dbpool_pool_timeouts_total"] == 1
    assert values["dbpool_client_queries_total"] == 3
    assert values["dbpool_pool_validation_failures_total"] == 0
    assert values["dbpool_pool_too_many_connections_total"] == 0
    assert values["dbpool_client_socket_timeouts_total"] == 0
    assert values["dbpool_pool_connections_open"] == 2
    assert values["dbpool_pool_connections_busy"] == 2
    assert values["dbpool_pool_connections_idle"] == 0
    assert values["dbpool_pool_wait_count"] == 1

    wait = values["dbpool_pool_wait_duration_seconds"]
    assert wait["count"] == 2, "the served waiter and the timed-out one; not the others"
    assert wait["sum"] >= 0.04
    queries = values["dbpool_client_queries_duration_seconds"]
    assert queries["count"] == 3


def test_json_histogram_buckets_count_per_bucket_and_end_with_inf(
    exercised: dbpool.Engine,
) -> None:
    values = by_key(exercised.metrics.json())
    for key in HISTOGRAMS:
        histogram = values[key]
        bounds = [bound for bound, _ in histogram["buckets"]]
        assert bounds[-1] == "+Inf"
        assert bounds[:-1] == sorted(bounds[:-1])
        assert sum(count for _, count in histogram["buckets"]) == histogram["count"]
    wait = values["dbpool_pool_wait_duration_seconds"]
    # The timed-out checkout waited about 0.05 s: it is in a bucket above 0.025.
    assert sum(n for bound, n in wait["buckets"] if bound == "+Inf" or bound > 0.025) >= 1


def test_the_prometheus_text_parses_and_matches_the_json(exercised: dbpool.Engine) -> None:
    exposition = exercised.metrics.prometheus()
    values = by_key(exercised.metrics.json())

    families = {f.name: f for f in text_string_to_metric_families(exposition)}

    for key in COUNTERS:
        family = families[key.removesuffix("_total")]
        assert family.type == "counter"
        [sample] = family.samples
        assert sample.name == key
        assert sample.labels == {"app": "shop"}
        assert sample.value == values[key]
    for key in GAUGES:
        family = families[key]
        assert family.type == "gauge"
        [sample] = family.samples
        assert (sample.labels, sample.value) == ({"app": "shop"}, values[key])
    for key in HISTOGRAMS:
        family = families[key]
        assert family.type == "histogram"
        samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
        expected = values[key]
        assert samples[key + "_count", None] == expected["count"]
        assert samples[key + "_sum", None] == pytest.approx(expected["sum"])
        running = 0
        for bound, count in expected["buckets"]:
            running += count
            le = "+Inf" if bound == "+Inf" else repr(float(bound))
            assert samples[key + "_bucket", le] == running, (key, le)
        assert samples[key + "_bucket", "+Inf"] == expected["count"]
        assert all(s.labels["app"] == "shop" for s in family.samples)


def test_label_values_are_escaped(engine: dbpool.Engine) -> None:
    tricky = 'a "quoted" back\\slash\nnewline'
    engine.metrics.labels = {"app": tricky, "region": "eu"}
    families = list(text_string_to_metric_families(engine.metrics.prometheus()))
    assert families
    for family in families:
        for sample in family.samples:
            assert sample.labels["app"] == tricky
            assert sample.labels["region"] == "eu"


def test_labels_can_be_set_later_and_are_read_only_in_place(engine: dbpool.Engine) -> None:
    engine.metrics.labels = {"app": "shop", "instance": "web-1"}
    assert dict(engine.metrics.labels) == {"app": "shop", "instance": "web-1"}
    assert engine.metrics.json()["gauges"][0]["labels"] == {"app": "shop", "instance": "web-1"}
    with pytest.raises(TypeError):
        engine.metrics.labels["app"] = "other"  # type: ignore[index]
    engine.metrics.labels = None  # type: ignore[assignment]
    samples = [line for line in engine.metrics.prometheus().splitlines() if line[0] != "#"]
    assert all("{" not in line or "_bucket{le=" in line for line in samples), samples


@pytest.mark.parametrize(
    "labels",
    [{"1app": "x"}, {"__name": "x"}, {"le": "x"}, {"app-name": "x"}, {"app": 1}, ["app"]],
)
def test_bad_labels_are_a_config_error_naming_metrics_labels(tmp_path: Path, labels: Any) -> None:
    with pytest.raises(ConfigError, match="metrics_labels"):
        dbpool.create_engine(f"sqlite:///{tmp_path / 'a.db'}", metrics_labels=labels)


def test_a_misspelt_metrics_labels_gets_a_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='Did you mean "metrics_labels"'):
        dbpool.create_engine(f"sqlite:///{tmp_path / 'a.db'}", metric_labels={"a": "b"})


def test_an_engine_without_labels_has_none(tmp_path: Path) -> None:
    engine = dbpool.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    assert engine.metrics.json()["counters"][0]["labels"] == {}
    assert "dbpool_pool_connections_open 0\n" in engine.metrics.prometheus()


# -- PrometheusCollector ---------------------------------------------------------------------


def test_the_collector_serves_every_metric_through_a_registry(exercised: dbpool.Engine) -> None:
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(exercised, registry=registry)

    scraped = prometheus_client.generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    values = by_key(exercised.metrics.json())

    assert families["dbpool_pool_connections_opened"].samples[0].value == 3
    assert families["dbpool_pool_wait_count"].samples[0].value == 1
    assert registry.get_sample_value("dbpool_pool_connections_busy", {"app": "shop"}) == 2
    assert (
        registry.get_sample_value("dbpool_client_queries_duration_seconds_count", {"app": "shop"})
        == (values["dbpool_client_queries_duration_seconds"]["count"])
    )
    assert (
        registry.get_sample_value(
            "dbpool_pool_wait_duration_seconds_bucket", {"app": "shop", "le": "+Inf"}
        )
        == 2
    )


def test_the_collector_reads_live_values_at_each_scrape(engine: dbpool.Engine) -> None:
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(engine, registry=registry)
    assert registry.get_sample_value("dbpool_pool_connections_open", {"app": "shop"}) == 0
    with engine.connect():
        assert registry.get_sample_value("dbpool_pool_connections_busy", {"app": "shop"}) == 1
    assert registry.get_sample_value("dbpool_pool_connections_idle", {"app": "shop"}) == 1


def test_one_collector_for_several_engines_tells_them_apart(tmp_path: Path) -> None:
    orders = dbpool.create_engine(f"sqlite:///{tmp_path / 'o.db'}", metrics_labels={"db": "o"})
    users = dbpool.create_engine(
        f"sqlite:///{tmp_path / 'u.db'}", metrics_labels={"db": "u", "app": "x"}
    )
    with orders.connect():
        pass
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(orders, users, registry=registry)

    get = registry.get_sample_value
    assert get("dbpool_pool_connections_opened_total", {"db": "o", "app": ""}) == 1
    assert get("dbpool_pool_connections_opened_total", {"db": "u", "app": "x"}) == 0
    orders.dispose()


def test_engines_with_the_same_labels_cannot_share_a_collector(tmp_path: Path) -> None:
    one = dbpool.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    two = dbpool.create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ConfigError, match="different metrics_labels"):
        PrometheusCollector(one, two, registry=None)


def test_the_collector_registers_with_the_default_registry(engine: dbpool.Engine) -> None:
    collector = PrometheusCollector(engine)
    try:
        value = prometheus_client.REGISTRY.get_sample_value(
            "dbpool_pool_connections_open", {"app": "shop"}
        )
        assert value == 0
        with pytest.raises(ValueError, match="Duplicated"):
            PrometheusCollector(engine)  # the same series twice would be an invalid scrape
    finally:
        prometheus_client.REGISTRY.unregister(collector)


def test_without_prometheus_client_the_collector_says_what_to_install(
    engine: dbpool.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r'pip install "dbpool\[prometheus\]"'):
        PrometheusCollector(engine)
    # .json() and .prometheus() need no third-party package.
    assert engine.metrics.prometheus().startswith("# HELP")
