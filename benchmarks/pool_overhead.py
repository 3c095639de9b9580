"""Pool overhead: checkouts + returns per second on a null DB-API connection, pool of 4.

The connection does nothing, so this measures the pool alone: what one checkout
and one return cost, and how that holds up when many threads queue for 4
connections. The strict-FIFO hand-off sketch (in _null_pools.py, ~25 lines) is
the reference for what a fair pool's lock and hand-off cost in Python; the minimal
FIFO pool beside it (the same hand-off with explicit acquire()/release() and no
guarantees at all) is the floor, and "vs minimal" is what a pool's guarantees and
bookkeeping cost on top of it.
"""

from __future__ import annotations

from _harness import (
    fmt_rate,
    fmt_ratio,
    fmt_spread,
    markdown_table,
    median,
    parse_args,
    run_threads,
    selected,
    sweep,
)
from _null_pools import MINIMAL, NULL_POOLS, SKETCH, installed, open_warm

LIMIT = 4
TIMEOUT = 30.0  # seconds; no checkout should ever get near it


def main() -> int:
    args = parse_args(__doc__, seconds=2.0, rounds=3, threads="1,16,64")
    names, notes = installed(selected(NULL_POOLS, args.only), LIMIT, TIMEOUT)

    def measure(name: str, threads: int) -> dict[str, float]:
        pool = open_warm(NULL_POOLS[name], LIMIT, TIMEOUT)
        acquire, release = pool.acquire, pool.release

        def op() -> None:
            release(acquire())

        try:
            return {"rate": run_threads(lambda _: op, threads, args.seconds).rate}
        finally:
            pool.close()

    samples = sweep(names, args.threads, args.rounds, measure)

    rows = []
    for threads in args.threads:
        for name in names:
            rates = samples[name, threads]["rate"]
            rows.append(
                [
                    threads,
                    name,
                    fmt_rate(median(rates)),
                    fmt_spread(rates),
                    fmt_ratio(samples, name, SKETCH, threads),
                    fmt_ratio(samples, name, MINIMAL, threads),
                ]
            )
    print(f"### Pool overhead: checkout + return on a null connection, pool of {LIMIT}")
    print(f"\n{args.seconds:g} s per run, medians of {args.rounds} rounds\n")
    headers = ["threads", "pool", "checkouts/s", "min / max", "vs sketch", "vs minimal"]
    print(markdown_table(headers, rows))
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
