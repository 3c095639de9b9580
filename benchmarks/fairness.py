"""Fairness: many threads share a pool of 4; who gets served, and how long do they wait?

Every checkout holds its connection for 1 ms with the GIL released (time.sleep,
like a query), with pool_timeout 1 s. A strict-FIFO pool serves every thread
about equally; a pool that lets newcomers barge past waiters serves the same
load but starves some threads into timeouts while connections are free. A thread
that times out counts it and carries on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from _harness import (
    Op,
    fmt_rate,
    jain,
    markdown_table,
    median,
    parse_args,
    percentile,
    run_threads,
    selected,
    sweep,
)
from _null_pools import NULL_POOLS, SKETCH, installed, open_warm

LIMIT = 4
HOLD = 0.001  # seconds a checkout keeps its connection
TIMEOUT = 1.0  # pool_timeout, seconds
CONTENDERS = ["dbpool QueuePool", "SQLAlchemy QueuePool", "DBUtils PooledDB", SKETCH]


@dataclass
class Attempt:
    end: float  # time.perf_counter() when the checkout attempt ended
    wait: float  # seconds from asking to getting a connection or a timeout
    served: bool


def measure(name: str, threads: int, seconds: float) -> dict[str, float]:
    pool = open_warm(NULL_POOLS[name], LIMIT, TIMEOUT)
    # a pool that cannot time out gets an exception class that is never raised
    timeout_error = pool.timeout_error or type("NeverRaised", (Exception,), {})
    logs: list[list[Attempt]] = [[] for _ in range(threads)]

    def make_op(i: int) -> Op:
        log, acquire, release = logs[i], pool.acquire, pool.release
        clock, sleep = time.perf_counter, time.sleep

        def op() -> None:
            t0 = clock()
            try:
                conn = acquire()
            except timeout_error:
                t1 = clock()
                log.append(Attempt(t1, t1 - t0, served=False))
                return
            t1 = clock()
            sleep(HOLD)
            release(conn)
            log.append(Attempt(t1, t1 - t0, served=True))

        return op

    try:
        run = run_threads(make_op, threads, seconds)
    finally:
        pool.close()
    # Served and timed out count within the run's window; the wait statistics take
    # every attempt, including one that began in the window and ended after it.
    served = [sum(1 for a in log if a.served and a.end <= run.deadline) for log in logs]
    timeouts = sum(1 for log in logs for a in log if not a.served and a.end <= run.deadline)
    waits = [a.wait * 1000 for log in logs for a in log]
    return {
        "rate": sum(served) / run.seconds,
        "never": sum(1 for n in served if n == 0),
        "jain": jain(served),
        "p50": percentile(waits, 50),
        "p99": percentile(waits, 99),
        "max": max(waits),
        "mean": sum(waits) / len(waits),
        "timeouts": timeouts if pool.timeout_error else float("nan"),
    }


def main() -> int:
    args = parse_args(__doc__, seconds=3.0, rounds=3, threads="16,64")
    names, notes = installed(selected(CONTENDERS, args.only), LIMIT, TIMEOUT)

    samples = sweep(names, args.threads, args.rounds, lambda n, t: measure(n, t, args.seconds))

    rows = []
    for threads in args.threads:
        for name in names:
            m = {k: median(v) for k, v in samples[name, threads].items()}
            rows.append(
                [
                    threads,
                    name,
                    fmt_rate(m["rate"]),
                    f"{m['never']:g}",
                    f"{m['jain']:.2f}",
                    *(f"{m[k]:.1f}" for k in ("p50", "p99", "max", "mean")),
                    "n/a" if math.isnan(m["timeouts"]) else f"{m['timeouts']:g}",
                ]
            )
    headers = [
        "threads",
        "pool",
        "checkouts/s",
        "never served",
        "Jain",
        "wait p50 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "timeouts",
    ]
    print(
        f"### Fairness: pool of {LIMIT}, each checkout holds {HOLD * 1000:g} ms (GIL released), pool_timeout {TIMEOUT:g} s"
    )
    print(f"\n{args.seconds:g} s per run, medians of {args.rounds} rounds\n")
    print(markdown_table(headers, rows))
    if "DBUtils PooledDB" in names:
        print(
            "\nDBUtils has no checkout timeout: its callers wait as long as it takes (timeouts n/a)."
        )
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
