"""Pool and query metrics, as Prisma's ``$metrics.json()`` and as Prometheus text.

``engine.metrics`` reads what the pool and the engine count anyway: the pool's status
(one snapshot under the pool lock), its wait histogram, and the engine's query
histogram. Nothing here runs on the checkout path; metrics cost only when read.

``dbpool_pool_wait_duration_seconds`` observes only the checkouts that had to queue for
a connection: one served at once (an idle connection, or a new one opened in a free
slot) leaves the checkout path untouched and is not counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dbpool.exc import ArgumentError, ConfigError

if TYPE_CHECKING:
    from dbpool.engine import Engine
    from dbpool.histogram import Histogram
    from dbpool.pool import PoolStatus, QueuePool
    from dbpool.timeouts import Timeouts

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_INF = float("inf")

# (key, description); the value comes from the PoolStatus field or histogram named below.
COUNTERS = (
    ("dbpool_pool_connections_opened_total", "Connections opened since the engine was made"),
    ("dbpool_pool_connections_closed_total", "Connections closed since the engine was made"),
    ("dbpool_pool_timeouts_total", "Checkouts that gave up after pool_timeout (error P2024)"),
    (
        "dbpool_pool_validation_failures_total",
        "Pre-pings that failed or got no answer within validation_timeout (each connection "
        "was replaced)",
    ),
    (
        "dbpool_pool_too_many_connections_total",
        "Connections the server refused because it was full (error P2037)",
    ),
    ("dbpool_client_queries_total", "Statements run through the engine's connections"),
    (
        "dbpool_client_socket_timeouts_total",
        "Statements, commits, rollbacks and resets that got no answer within socket_timeout",
    ),
)
GAUGES = (
    ("dbpool_pool_connections_open", "Connections open now, busy or idle"),
    ("dbpool_pool_connections_busy", "Connections checked out now"),
    ("dbpool_pool_connections_idle", "Connections open and idle in the pool now"),
    ("dbpool_pool_wait_count", "Callers waiting in the queue for a connection now"),
)
HISTOGRAMS = (
    (
        "dbpool_pool_wait_duration_seconds",
        "Time checkouts spent queued for a connection (only checkouts that had to queue)",
    ),
    (
        "dbpool_client_queries_duration_seconds",
        "Duration of the statements run through the engine's connections",
    ),
)
_DESCRIPTIONS = dict(COUNTERS + GAUGES + HISTOGRAMS)


@dataclass(frozen=True)
class HistogramValue:
    """A histogram's value at the moment it was read.

    Attributes:
        buckets: Cumulative ``(upper_bound, count)`` pairs, in seconds, ending with
            ``(inf, count)``: each counts the observations up to its bound.
        sum: The sum of the observations, in seconds.
        count: The number of observations.
    """

    buckets: list[tuple[float, int]]
    sum: float
    count: int


@dataclass(frozen=True)
class Sample:
    """One metric's value at the moment it was read.

    Attributes:
        key: The metric's name, e.g. ``dbpool_pool_connections_open``.
        kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
        value: A count for a counter or gauge, a
            [`HistogramValue`][dbpool.metrics.HistogramValue] for a histogram.
    """

    key: str
    kind: str  # "counter", "gauge" or "histogram"
    value: int | HistogramValue

    @property
    def description(self) -> str:
        """What the metric measures, one sentence (its Prometheus ``HELP`` text)."""
        return _DESCRIPTIONS[self.key]


def _validate_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ConfigError(f"metrics_labels must be a dict of str to str, got {labels!r}")
    checked: dict[str, str] = {}
    for name, value in labels.items():
        if (
            not isinstance(name, str)
            or not _LABEL_NAME.fullmatch(name)
            or name.startswith("__")
            or name == "le"
        ):
            raise ConfigError(
                f"metrics_labels: {name!r} is not a usable Prometheus label name (letters, "
                "digits and '_', not starting with a digit or '__', and not 'le')"
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"metrics_labels: the value of {name!r} must be a str, got {value!r}"
            )
        checked[name] = value
    return checked


def _histogram_value(histogram: Histogram) -> HistogramValue:
    buckets, count, total = histogram.snapshot()
    return HistogramValue(buckets, total, count)


class Metrics:
    """``engine.metrics``: the engine's pool and query metrics, read on demand.

    The pool's counts (connections open, busy, idle, callers waiting, totals opened,
    closed and timed out), the time checkouts waited in the queue and the duration of
    statements, read when asked: nothing is added to the checkout path.
    [`json`][dbpool.Metrics.json] returns them in the shape of Prisma's
    ``$metrics.json()``, [`prometheus`][dbpool.Metrics.prometheus] as Prometheus text;
    [`PrometheusCollector`][dbpool.metrics.PrometheusCollector] serves them to
    ``prometheus_client``. The [metrics guide](metrics.md) lists every metric.

    Made by the engine; ``labels`` are added to every metric (Prisma's global labels):
    set them with ``create_engine(..., metrics_labels={"app": "shop"})`` or by assigning
    a new dict to ``engine.metrics.labels``.

    Example:
        ```python
        engine = dbpool.create_engine("sqlite://", metrics_labels={"app": "shop"})
        counters = engine.metrics.json()["counters"]
        print(engine.metrics.prometheus())  # HELP, TYPE and values, one per line
        ```
    """

    def __init__(
        self,
        pool: QueuePool,
        query_histogram: Histogram,
        labels: Mapping[str, str] | None = None,
        *,
        timeouts: Timeouts | None = None,
    ) -> None:
        # The pool and histogram, not the engine: no reference cycle keeps an engine alive.
        self._pool = pool
        self._query_histogram = query_histogram
        self._timeouts = timeouts
        self._labels: Mapping[str, str] = MappingProxyType(_validate_labels(labels))

    @property
    def labels(self) -> Mapping[str, str]:
        """The labels added to every metric, a read-only mapping; assign a dict to change
        them. Names are Prometheus label names (letters, digits and ``_``, not starting
        with a digit or ``__``, not ``le``); values are strings. A bad one raises
        [`ConfigError`][dbpool.ConfigError]."""
        return self._labels

    @labels.setter
    def labels(self, labels: Mapping[str, str] | None) -> None:
        self._labels = MappingProxyType(_validate_labels(labels))

    def samples(self) -> list[Sample]:
        """Every metric, read now.

        Returns:
            The counters, then the gauges, then the histograms; the pool's counts come
            from one consistent snapshot.
        """
        status: PoolStatus = self._pool.status()
        queries = _histogram_value(self._query_histogram)
        counts = {
            "dbpool_pool_connections_opened_total": status.opened_total,
            "dbpool_pool_connections_closed_total": status.closed_total,
            "dbpool_pool_timeouts_total": status.timeouts_total,
            "dbpool_pool_validation_failures_total": self._pool.validation_failures_total,
            "dbpool_pool_too_many_connections_total": self._pool.too_many_connections_total,
            "dbpool_client_queries_total": queries.count,
            "dbpool_client_socket_timeouts_total": (
                0 if self._timeouts is None else self._timeouts.socket_timeouts_total
            ),
            "dbpool_pool_connections_open": status.open,
            "dbpool_pool_connections_busy": status.busy,
            "dbpool_pool_connections_idle": status.idle,
            "dbpool_pool_wait_count": status.waiting,
        }
        histograms = {
            "dbpool_pool_wait_duration_seconds": _histogram_value(self._pool.wait_histogram),
            "dbpool_client_queries_duration_seconds": queries,
        }
        return [
            *(Sample(key, "counter", counts[key]) for key, _ in COUNTERS),
            *(Sample(key, "gauge", counts[key]) for key, _ in GAUGES),
            *(Sample(key, "histogram", histograms[key]) for key, _ in HISTOGRAMS),
        ]

    def json(self) -> dict[str, list[dict[str, Any]]]:
        """The metrics in the shape of Prisma's ``$metrics.json()``.

        Returns:
            ``{"counters": [...], "gauges": [...], "histograms": [...]}``, each entry a
            dict with ``key``, ``labels``, ``value`` and ``description``. A histogram's
            value is ``{"buckets": [[upper_bound, count], ...], "sum": ..., "count": ...}``,
            where each bucket counts the observations above the previous bound (not
            cumulative, as in Prisma) and the last bound is the string ``"+Inf"``. It is
            plain data: ``json.dumps`` takes it as it is.
        """
        out: dict[str, list[dict[str, Any]]] = {"counters": [], "gauges": [], "histograms": []}
        for sample in self.samples():
            value: Any = sample.value
            if isinstance(value, HistogramValue):
                value = {"buckets": _per_bucket(value), "sum": value.sum, "count": value.count}
            out[sample.kind + "s"].append(
                {
                    "key": sample.key,
                    "labels": dict(self._labels),
                    "value": value,
                    "description": sample.description,
                }
            )
        return out

    def prometheus(self) -> str:
        """The metrics as Prometheus text, for a ``/metrics`` endpoint.

        Returns:
            The text exposition format, version 0.0.4: ``# HELP`` and ``# TYPE`` lines and
            the values with the engine's labels, histograms with cumulative ``_bucket``
            series, ``_sum`` and ``_count``.
        """
        lines: list[str] = []
        labels = dict(self._labels)
        for sample in self.samples():
            lines.append(f"# HELP {sample.key} {_escape_help(sample.description)}")
            lines.append(f"# TYPE {sample.key} {sample.kind}")
            value = sample.value
            if isinstance(value, HistogramValue):
                for bound, count in value.buckets:
                    bucket_labels = {**labels, "le": _format_number(bound)}
                    lines.append(f"{sample.key}_bucket{_format_labels(bucket_labels)} {count}")
                lines.append(f"{sample.key}_sum{_format_labels(labels)} {value.sum!r}")
                lines.append(f"{sample.key}_count{_format_labels(labels)} {value.count}")
            else:
                lines.append(f"{sample.key}{_format_labels(labels)} {value}")
        return "\n".join(lines) + "\n"


def _per_bucket(value: HistogramValue) -> list[list[Any]]:
    pairs: list[list[Any]] = []
    previous = 0
    for bound, running in value.buckets:
        pairs.append(["+Inf" if bound == _INF else bound, running - previous])
        previous = running
    return pairs


def _format_number(number: float) -> str:
    return "+Inf" if number == _INF else repr(float(number))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels.items()) + "}"


_DEFAULT_REGISTRY: Any = object()


class PrometheusCollector:
    """A ``prometheus_client`` collector for one or more engines.

    The metrics are read from the engines at each scrape. Needs
    ``pip install "dbpool[prometheus]"``.

    Args:
        *engines: The engines to expose. Several engines in one collector must have
            different ``metrics_labels``, so that their series can be told apart.
        registry: The ``prometheus_client`` registry to register with; by default its
            global ``REGISTRY``, or None to register the collector yourself.

    Raises:
        ArgumentError: When no engine is given.
        ConfigError: When ``prometheus_client`` is not installed, or two engines have
            the same labels.

    Example:
        ```python
        from dbpool.metrics import PrometheusCollector

        orders = dbpool.create_engine(ORDERS_URL, metrics_labels={"db": "orders"})
        users = dbpool.create_engine(USERS_URL, metrics_labels={"db": "users"})
        PrometheusCollector(orders, users)  # prometheus_client serves them from now on
        ```
    """

    def __init__(self, *engines: Engine, registry: Any = _DEFAULT_REGISTRY) -> None:
        if not engines:
            raise ArgumentError("PrometheusCollector() needs at least one engine")
        try:
            import prometheus_client
            import prometheus_client.core
        except ImportError:
            raise ConfigError(
                "PrometheusCollector needs the prometheus_client package, which is not "
                'installed: pip install "dbpool[prometheus]"'
            ) from None
        label_sets = {tuple(sorted(e.metrics.labels.items())) for e in engines}
        if len(label_sets) != len(engines):
            raise ConfigError(
                "PrometheusCollector: engines in one collector need different metrics_labels "
                '(e.g. metrics_labels={"db": "orders"}), or their series would collide'
            )
        self._engines = engines
        self._core = prometheus_client.core
        if registry is _DEFAULT_REGISTRY:
            registry = prometheus_client.REGISTRY
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Any]:
        """Read the engines' metrics; ``prometheus_client`` calls this at each scrape.

        Yields:
            One ``prometheus_client`` metric family per metric, with a series per engine.
        """
        core = self._core
        per_engine = [(dict(e.metrics.labels), e.metrics.samples()) for e in self._engines]
        names = sorted({name for labels, _ in per_engine for name in labels})
        families = {
            "counter": core.CounterMetricFamily,
            "gauge": core.GaugeMetricFamily,
            "histogram": core.HistogramMetricFamily,
        }
        first = per_engine[0][1]
        for index, template in enumerate(first):
            family = families[template.kind](template.key, template.description, labels=names)
            for labels, samples in per_engine:
                values = [labels.get(name, "") for name in names]
                value = samples[index].value
                if isinstance(value, HistogramValue):
                    buckets = [(_format_number(bound), count) for bound, count in value.buckets]
                    family.add_metric(values, buckets=buckets, sum_value=value.sum)
                else:
                    family.add_metric(values, value)
            yield family
