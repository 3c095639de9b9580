"""What socket_timeout costs: `SELECT 1` per checkout through dbpool's Engine, with and
without it, on PostgreSQL (psycopg: the watchdog arms and disarms a deadline around each
statement) and MySQL (PyMySQL: its read and write timeouts), pool of 4, autocommit.

The contenders differ only in socket_timeout (0 = none, 30 s = armed on every call, and
never reached). Rounds alternate the contenders; medians are reported.
"""

from __future__ import annotations

import os
from typing import Any

from _harness import (
    fmt_rate,
    fmt_spread,
    markdown_table,
    median,
    parse_args,
    require_dbpool,
    run_threads,
    selected,
    sweep,
)

LIMIT = 4
URLS = {
    "postgresql": os.environ.get(
        "DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("DBPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
TIMEOUTS = {"socket_timeout=0": 0, "socket_timeout=30": 30}


def main() -> int:
    args = parse_args(__doc__, seconds=2.0, rounds=5, threads="1,16")
    dbpool = require_dbpool()
    names = selected([f"{db} {label}" for db in URLS for label in TIMEOUTS], args.only)

    def measure(name: str, threads: int) -> dict[str, float]:
        db, label = name.split(" ", 1)
        engine = dbpool.create_engine(
            URLS[db],
            connection_limit=LIMIT,
            isolation_level="AUTOCOMMIT",
            socket_timeout=TIMEOUTS[label],
            pool_timeout=30,
        )
        conns = [engine.connect() for _ in range(LIMIT)]  # warm: none opened while timed
        for conn in conns:
            conn.close()

        def op() -> None:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").all()

        def make_op(_: Any) -> Any:
            return op

        try:
            return {"rate": run_threads(make_op, threads, args.seconds).rate}
        finally:
            engine.dispose()

    samples = sweep(names, args.threads, args.rounds, measure)
    rows = []
    for threads in args.threads:
        for name in names:
            rates = samples[name, threads]["rate"]
            rows.append([threads, name, fmt_rate(median(rates)), fmt_spread(rates)])
    print(f"### socket_timeout overhead: SELECT 1 per checkout, pool of {LIMIT}")
    print(f"\n{args.seconds:g} s per run, medians of {args.rounds} rounds\n")
    print(markdown_table(["threads", "engine", "queries/s", "min / max"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
