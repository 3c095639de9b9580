"""A serverless traffic spike on PostgreSQL: straight to the server, and through PgBouncer.

    .venv/bin/python benchmarks/spike.py            # about 40 seconds
    .venv/bin/python benchmarks/spike.py --instances 300 --processes 8 --pool-size 10

More "function instances" than the server's ``max_connections`` (by default half as many
again) start at once. Each is an engine with ``connection_limit=1``, as in
examples/serverless_handler.py, that runs ``--queries`` transactions one after another,
each holding its connection for ``--hold`` seconds in ``pg_sleep``, and is then disposed.
The instances are threads in ``--processes`` worker processes, all made before the spike
so that they start together. They log in as a role the benchmark creates (an ordinary
LOGIN role, like an application's) and drops at the end; a superuser connection samples
``pg_stat_activity`` every 20 ms throughout.

Two routes, one after the other (alternating from round to round):

- straight to PostgreSQL: the server fills up and refuses the rest, which retry within
  their ``--pool-timeout`` and then fail with ``TooManyConnectionsError`` (P2037);
- through PgBouncer in transaction mode (``pgbouncer=true``) with ``--pool-size`` server
  connections: PgBouncer accepts every client and queues their transactions.

The machinery is shared with the spike test: tests/integration/spike_support.py.

The direct route fills the whole server for a few seconds: anything else using it then
gets "too many clients". Do not run it against a server that others depend on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

from _harness import markdown_table, percentile, progress, selected

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the spike machinery lives with the tests

from tests import pgbouncer  # noqa: E402
from tests.integration import spike_support  # noqa: E402
from tests.integration.spike_support import Spike, SpikeRun  # noqa: E402

DEFAULT_URL = os.environ.get(
    "DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ROUTES = ("direct", "pgbouncer")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="a superuser URL of the server (default: the test one)"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=0,
        help="function instances (default: 1.5 x max_connections)",
    )
    parser.add_argument("--processes", type=int, default=6, help="worker processes (default 6)")
    parser.add_argument(
        "--queries", type=int, default=3, help="transactions per instance (default 3)"
    )
    parser.add_argument(
        "--hold", type=float, default=0.5, help="seconds of pg_sleep per transaction (default 0.5)"
    )
    parser.add_argument(
        "--pool-timeout", type=float, default=0.5, help="the instances' pool_timeout (default 0.5)"
    )
    parser.add_argument(
        "--pool-size", type=int, default=20, help="PgBouncer's server connections (default 20)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds; medians are reported (default 1)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated substrings of direct,pgbouncer: run only those routes",
    )
    return parser.parse_args()


def one_run(
    route: str, args: argparse.Namespace, role: spike_support.Role, spike: Spike
) -> SpikeRun:
    if route == "direct":
        with spike_support.direct(args.url, role) as way:
            return spike_support.run_spike(way.url, spike, admin_url=args.url, role=role.name)
    clients = spike.instances + 50
    with spike_support.through_pgbouncer(
        args.url, role, pool_size=args.pool_size, clients=clients
    ) as way:
        return spike_support.run_spike(way.url, spike, admin_url=args.url, role=role.name)


def fmt_errors(runs: list[SpikeRun]) -> str:
    """The median count of each kind of error over the rounds, e.g. '52 TooManyConnectionsError (P2037)'."""
    kinds: Counter[str] = Counter()
    for run in runs:
        kinds.update(run.errors_by_kind())
    if not kinds:
        return "0"
    parts = []
    for kind in sorted(kinds):
        count = statistics.median([run.errors_by_kind()[kind] for run in runs])
        parts.append(f"{count:g} {kind}")
    return ", ".join(parts)


def row(label: str, runs: list[SpikeRun]) -> list[object]:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    def latency(q: float) -> str:
        values = [percentile(run.latencies(), q) for run in runs if run.latencies()]
        return f"{med(values):.2f}" if values else "-"

    spike = runs[0].spike
    return [
        label,
        spike.instances,
        spike.processes,
        fmt_errors(runs),
        f"{med([run.role_peak for run in runs]):g}",
        latency(50),
        latency(99),
        latency(100),
        f"{med([run.wall for run in runs]):.2f}",
    ]


def main() -> int:
    args = parse_args()
    try:
        max_connections, reserved = spike_support.server_limits(args.url)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"skipped: cannot reach PostgreSQL ({reason})")
        return 0
    instances = args.instances or max_connections + max_connections // 2
    spike = Spike(
        instances=instances,
        processes=args.processes,
        queries=args.queries,
        hold=args.hold,
        pool_timeout=args.pool_timeout,
    )
    routes = selected(ROUTES, args.only)
    runs: dict[str, list[SpikeRun]] = {r: [] for r in routes}
    notes: list[str] = []
    missing: set[str] = set()  # routes that cannot run here (PgBouncer not installed)
    with spike_support.spike_role(args.url) as role:
        for r in range(args.rounds):
            k = r % len(routes)
            for route in [*routes[k:], *routes[:k]]:
                if route in missing:
                    continue
                progress(f"round {r + 1}/{args.rounds}: {route}, {instances} instances")
                try:
                    runs[route].append(one_run(route, args, role, spike))
                except pgbouncer.PgBouncerUnavailable as exc:
                    missing.add(route)
                    notes.append(f"PgBouncer left out: {str(exc).splitlines()[0]}")

    labels = {
        "direct": "straight to PostgreSQL",
        "pgbouncer": f"PgBouncer, transaction mode, pool {args.pool_size}",
    }
    headers = [
        "route",
        "instances",
        "processes",
        "errors (by kind)",
        "peak server connections",
        "p50 s",
        "p99 s",
        "max s",
        "wall s",
    ]
    rows = [row(labels[route], runs[route]) for route in routes if runs[route]]
    print(
        f"### A spike of {instances} function instances against PostgreSQL "
        f"(max_connections {max_connections}, {reserved} reserved for superusers)"
    )
    rounds = f", medians of {args.rounds} rounds" if args.rounds > 1 else ""
    print(
        f"\nEach instance: an engine with connection_limit=1 and pool_timeout={args.pool_timeout:g}, "
        f"{args.queries} transactions of pg_sleep({args.hold:g}), in {args.processes} processes{rounds}. "
        "Peak server connections: the instances' role in pg_stat_activity, sampled every 20 ms. "
        "Latency: from the spike's start to an instance's last query, instances that finished.\n"
    )
    print(markdown_table(headers, rows))
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
