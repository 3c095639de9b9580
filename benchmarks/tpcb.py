"""TPC-B-like transactions (pgbench's built-in script) through each pool, PostgreSQL and MariaDB.

Per transaction: BEGIN; UPDATE pgbench_accounts; SELECT abalance; UPDATE
pgbench_tellers; UPDATE pgbench_branches; INSERT INTO pgbench_history; COMMIT, with
random ids and delta in pgbench's ranges. The script makes its own database
(`dbpool_tpcb` on each server: `pgbench -i -s 4` on PostgreSQL, tables of the same
shape on MariaDB) and drops it at the end. Contenders share a pool of 8 connections
(dbpool Engine, dbpool QueuePool with raw driver calls, psycopg_pool, SQLAlchemy Core,
DBUtils PooledDB, a bare LifoQueue) and native `pgbench -c 8 -j 2` is the C
reference. The client runs unpinned and pinned to one CPU, each (database, mode,
round) in a child process so the CPU affinity does not leak. Before every run the
history is truncated, the tables vacuumed and a checkpoint taken (PostgreSQL) or
InnoDB's purge and flush awaited (MariaDB); after every run the books must balance.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from _harness import markdown_table, median, progress, selected
from _tpcb import (
    PGBENCH,
    Database,
    RunResult,
    Settings,
    audit,
    between_runs,
    books,
    contender_names,
    create_database,
    drop_database,
    find_pgbench,
    mariadb,
    postgresql,
    run_contender,
    run_pgbench,
    server_connect,
)

SERVERS = {
    "postgresql": lambda: postgresql("127.0.0.1", 5432, "postgres"),
    "mariadb": lambda: mariadb("127.0.0.1", 3306, "root"),
}
FULL = {"seconds": 3.0, "rounds": 3, "threads": "8,16,64"}
QUICK = {"seconds": 2.0, "rounds": 1, "threads": "8,64"}
RUN_OVERHEAD = 1.5  # seconds per run outside the timed part: opening the pool, vacuum, books
RETRIES = 2  # a run that fails as a whole (not one transaction) is repeated at most this often


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="the make bench settings: 2 s, 1 round, 8,64 threads"
    )
    p.add_argument("--seconds", type=float, help="wall time per run (default 3; --quick 2)")
    p.add_argument(
        "--rounds", type=int, help="rounds; medians are reported (default 3; --quick 1)"
    )
    p.add_argument(
        "--threads", help="comma-separated thread counts (default 8,16,64; --quick 8,64)"
    )
    p.add_argument(
        "--only", default="", help="comma-separated substrings: run only matching contenders"
    )
    p.add_argument(
        "--pool-size",
        type=int,
        default=8,
        help="connections in every pool, and pgbench's -c (default 8)",
    )
    p.add_argument(
        "--pool-timeout",
        type=float,
        default=10.0,
        help="checkout timeout where the pool has one (default 10 s)",
    )
    p.add_argument(
        "--scale", type=int, default=4, help="pgbench scale: 100000 accounts each (default 4)"
    )
    p.add_argument(
        "--modes", default="unpinned,pinned", help="unpinned, pinned or both (default both)"
    )
    p.add_argument(
        "--cpu", type=int, default=0, help="the CPU the pinned client runs on (default 0)"
    )
    p.add_argument(
        "--databases",
        default="postgresql,mariadb",
        help="postgresql, mariadb or both (default both)",
    )
    p.add_argument(
        "--pgbench", help="path of pgbench (default: PATH, then /usr/lib/postgresql/*/bin)"
    )
    p.add_argument("--keep", action="store_true", help="keep the dbpool_tpcb databases at the end")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    defaults = QUICK if args.quick else FULL
    args.seconds = args.seconds if args.seconds is not None else defaults["seconds"]
    args.rounds = args.rounds if args.rounds is not None else defaults["rounds"]
    args.threads = [int(x) for x in (args.threads or str(defaults["threads"])).split(",")]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    for m in args.modes:
        if m not in ("unpinned", "pinned"):
            p.error(f"--modes: unknown mode {m!r}")
    for d in args.databases:
        if d not in SERVERS:
            p.error(f"--databases: unknown database {d!r}")
    return args


# --------------------------------------------------------------------------- child


def child(spec: dict[str, Any]) -> int:
    """One round of one mode on one database: every thread count, every contender."""
    if spec["mode"] == "pinned":
        # Before any thread exists: every thread (and pgbench) inherits the mask.
        os.sched_setaffinity(0, {spec["cpu"]})
    db: Database = SERVERS[spec["db"]]()
    s = Settings(spec["pool_size"], spec["pool_timeout"])
    names: list[str] = spec["names"]
    r: int = spec["round"]
    out: list[dict[str, Any]] = []
    admin = db.connect(autocommit=True)
    try:
        for threads in spec["threads"]:
            k = r % len(names)
            for name in [*names[k:], *names[:k]]:
                progress(
                    f"{db.name}, {spec['mode']}, {threads:>2} threads, "
                    f"round {r + 1}/{spec['rounds']}: {name}"
                )
                out.append(
                    {
                        "name": name,
                        "threads": threads,
                        **measure(spec, db, s, admin, name, threads),
                    }
                )
    finally:
        admin.close()
    with open(spec["out"], "w") as f:
        json.dump(out, f)
    return 0


def measure(
    spec: dict[str, Any], db: Database, s: Settings, admin: Any, name: str, threads: int
) -> dict[str, Any]:
    failures: list[str] = []
    for _ in range(RETRIES + 1):
        between_runs(db, admin)
        before = books(admin)
        try:
            if name == PGBENCH:
                run: RunResult = run_pgbench(spec["pgbench"], db, s.pool_size, spec["seconds"])
            else:
                seed = spec["round"] * 100 + threads
                run = run_contender(db, name, s, threads, spec["seconds"], spec["scale"], seed)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            progress(f"  run failed ({failures[-1]}); repeating it")
            time.sleep(3)
            continue
        after = books(admin)
        return {
            "result": asdict(run),
            "books_ok": before.balanced and after.balanced,
            "books": asdict(after),
            "history_rows": after.history_rows - before.history_rows,
            "failures": failures,
        }
    return {"result": None, "failures": failures}


# --------------------------------------------------------------------------- parent


def main() -> int:
    args = parse_args()
    if args.child:
        with open(args.child) as f:
            return child(json.load(f))
    pgbench = find_pgbench(args.pgbench)
    plan: list[tuple[Database, list[str]]] = []
    for key in args.databases:
        db = SERVERS[key]()
        try:
            server_connect(db).close()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            kw = db.connect_kwargs
            print(f"skipped: cannot reach {db.name} at {kw['host']}:{kw['port']} ({reason})")
            continue
        names = selected(contender_names(key, pgbench is not None), args.only)
        if names:
            plan.append((db, names))
        else:
            print(f"skipped: {db.name}: no contender matches --only {args.only!r}")
    runs = sum(len(n) for _, n in plan) * len(args.threads) * args.rounds * len(args.modes)
    progress(f"{runs} runs, about {runs * (args.seconds + RUN_OVERHEAD) / 60:.0f} min")
    for db, names in plan:
        try:
            bench_database(args, db, names, pgbench)
        finally:
            if not args.keep:
                with contextlib.suppress(Exception):
                    drop_database(db)
    return 0


def bench_database(
    args: argparse.Namespace, db: Database, names: list[str], pgbench: str | None
) -> None:
    notes: list[str] = []
    if db.key == "postgresql" and pgbench is None:
        notes.append("pgbench not found: no C reference (give --pgbench PATH)")
        print(f"skipped: {db.name}: pgbench not found, it makes the tables (give --pgbench PATH)")
        return
    progress(
        f"{db.name}: creating {db.connect_kwargs.get('dbname') or db.connect_kwargs.get('database')}"
    )
    t0 = time.perf_counter()
    how = create_database(db, args.scale, pgbench)
    init_seconds = time.perf_counter() - t0
    s = Settings(args.pool_size, args.pool_timeout)

    trips: dict[str, str] = {}
    for name in list(names):
        if name == PGBENCH:
            trips[name] = "7 †"
            continue
        try:
            trips[name] = f"{audit(db, name, s, args.scale):.2f}"
        except ImportError as exc:
            notes.append(f"skipped {name}: {exc}")
            names.remove(name)

    # {(mode, threads, name): {round: sample}}
    samples: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="dbpool_tpcb_") as tmp:
        for r in range(args.rounds):
            # The modes alternate too, starting with the other one every round.
            modes = args.modes if r % 2 == 0 else list(reversed(args.modes))
            for mode in modes:
                spec = {
                    "db": db.key,
                    "mode": mode,
                    "cpu": args.cpu,
                    "round": r,
                    "rounds": args.rounds,
                    "threads": args.threads,
                    "names": names,
                    "seconds": args.seconds,
                    "scale": args.scale,
                    "pool_size": args.pool_size,
                    "pool_timeout": args.pool_timeout,
                    "pgbench": pgbench,
                    "out": os.path.join(tmp, f"{mode}-{r}.json"),
                }
                spec_path = os.path.join(tmp, f"{mode}-{r}.spec.json")
                with open(spec_path, "w") as f:
                    json.dump(spec, f)
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", spec_path], check=False
                )
                if proc.returncode != 0:
                    notes.append(
                        f"{mode}, round {r + 1}: the child process failed (exit {proc.returncode})"
                    )
                    continue
                with open(spec["out"]) as f:
                    for row in json.load(f):
                        samples.setdefault((mode, row["threads"], row["name"]), {})[r] = row

    admin = db.connect(autocommit=True)
    try:
        final = books(admin)
    finally:
        admin.close()
    if final.balanced:
        notes.append(
            f"Books balanced after every run marked ok, and at the end relative to init: "
            f"Σ abalance = Σ tbalance = Σ bbalance = Σ history delta = {final.accounts}."
        )
    else:
        notes.append(f"**Books do NOT balance at the end**: {final}")
    print_tables(args, db, names, samples, trips, notes, how, init_seconds)


def fmt_ms(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def ratio(runs: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]] | None) -> str:
    """tps over the base's, paired within each round (drift cancels), median over rounds."""
    if not base:
        return "-"
    pairs = [
        runs[r]["result"]["tps"] / base[r]["result"]["tps"]
        for r in runs
        if r in base and runs[r]["result"] and base[r]["result"] and base[r]["result"]["tps"]
    ]
    return f"{median(pairs):.2f}x" if pairs else "-"


def errors_cell(results: Sequence[dict[str, Any]], books_off: int) -> str:
    total: dict[str, int] = {}
    for res in results:
        for kind, n in res["errors"].items():
            total[kind] = total.get(kind, 0) + n
    n = sum(total.values())
    timeouts = sum(res["timeouts"] for res in results)
    cell = str(n)
    if timeouts:
        cell += f" ({timeouts} timeouts)"
    elif n:
        cell += " (" + ", ".join(f"{k} {v}" for k, v in sorted(total.items())) + ")"
    if books_off:
        cell += f" + {books_off} unbalanced"
    return cell


def print_tables(
    args: argparse.Namespace,
    db: Database,
    names: list[str],
    samples: dict[tuple[str, int, str], dict[int, dict[str, Any]]],
    trips: dict[str, str],
    notes: list[str],
    how: str,
    init_seconds: float,
) -> None:
    ps = args.pool_size
    summary_rows = []
    for mode in args.modes:
        where = f"pinned to CPU {args.cpu}" if mode == "pinned" else "unpinned"
        print(f"### TPC-B-like transactions on {db.name}: pool of {ps}, client {where}\n")
        print(
            f"{args.seconds:g} s per run, medians of {args.rounds} rounds; {how} "
            f"(made in {init_seconds:.1f} s); before every run: history truncated, "
            + (
                "VACUUM, CHECKPOINT"
                if db.key == "postgresql"
                else "InnoDB purge and flush awaited"
            )
            + "\n"
        )
        rows = []
        for threads in args.threads:
            summary: list[object] = [threads, where]
            for name in names:
                runs = {
                    r: x for r, x in samples.get((mode, threads, name), {}).items() if x["result"]
                }
                failed = sum(
                    1 for x in samples.get((mode, threads, name), {}).values() if not x["result"]
                )
                if failed:
                    notes.append(f"{name} at {threads} threads ({mode}): {failed} run(s) failed")
                if not runs:
                    summary.append("-")
                    continue
                res = [x["result"] for x in runs.values()]
                tps = [x["tps"] for x in res]
                books_off = sum(1 for x in runs.values() if not x["books_ok"])
                for x in runs.values():
                    if x["history_rows"] != x["result"]["committed"]:
                        notes.append(
                            f"{name} at {threads} threads ({mode}): {x['history_rows']} history rows "
                            f"for {x['result']['committed']} transactions the client saw commit"
                        )
                migs = [x["migrations"] for x in res if x["migrations"] is not None]

                def med(key: str, res: list[dict[str, Any]] = res) -> float:
                    return median([x[key] for x in res])

                row = [
                    threads,
                    name,
                    f"{median(tps):.0f}",
                    f"{min(tps):.0f} / {max(tps):.0f}",
                    ratio(runs, samples.get((mode, threads, "bare LifoQueue"))),
                ]
                if db.key == "postgresql":
                    row.append(ratio(runs, samples.get((mode, threads, "psycopg_pool"))))
                row += [
                    fmt_ms(med("p50")),
                    fmt_ms(med("p99")),
                    fmt_ms(med("max")),
                    f"{med('jain'):.2f}",
                    errors_cell(res, books_off),
                    f"{med('cpu_ms'):.2f}",
                    f"{median(migs):.2f}" if migs else "n/a",
                    trips.get(name, "?"),
                    "ok" if not books_off else f"OFF in {books_off}/{len(runs)}",
                ]
                rows.append(row)
                summary.append(f"{median(tps):.0f}")
            summary_rows.append(summary)
        headers = ["threads", "pool", "tps", "min / max", "vs LifoQueue"]
        if db.key == "postgresql":
            headers.append("vs psycopg_pool")
        headers += [
            "p50 ms",
            "p99 ms",
            "max ms",
            "Jain",
            f"errors ({args.rounds} runs)",
            "client CPU ms/tx",
            "migrations/tx",
            "round trips/tx",
            "books",
        ]
        print(markdown_table(headers, rows))
        print()
    print(f"### {db.name}, TPC-B-like, pool of {ps}: transactions per second (medians)\n")
    print(markdown_table(["threads", "client", *names], summary_rows))
    print()
    if PGBENCH in names:
        notes.append(
            f"{PGBENCH}: `pgbench -n -c {ps} -j 2 -T S` (simple protocol: † 7 round trips, one per "
            f"statement), the same {ps} clients at every thread count; its latencies and Jain "
            f"(over its {ps} clients) come from its per-transaction log, its CPU from getrusage "
            "of the child, its migrations from /proc polled every 50 ms."
        )
    for note in dict.fromkeys(notes):
        print(f"{note}\n")


if __name__ == "__main__":
    raise SystemExit(main())
