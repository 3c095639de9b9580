"""Engine overhead: client CPU per TPC-B-like transaction, raw psycopg vs dbpool's Engine.

pgbench's built-in TPC-B-like transaction (BEGIN; UPDATE pgbench_accounts; SELECT
abalance; UPDATE pgbench_tellers; UPDATE pgbench_branches; INSERT INTO pgbench_history;
COMMIT; random aid, tid, bid and delta) on PostgreSQL, through one engine with a pool
of 8, written three ways:

* ``raw psycopg``: a connection checked out of the engine's own ``QueuePool``
  (``engine.pool.connect()``), a psycopg cursor, ``cursor.execute`` with ``%s``
  parameters, ``conn.commit()``, the proxy closed: the floor for this pool and driver.
* ``Engine begin()``: ``with engine.begin() as conn: conn.execute(text(...), params)``.
* ``Engine commit-as-you-go``: ``with engine.connect() as conn: ...; conn.commit()``.
* ``Engine begin(), inline text()``: as ``Engine begin()``, but building each
  ``text(...)`` inside the transaction, as code written in one place often does.

The benchmark process is pinned to CPU 0 (``os.sched_setaffinity``), so the server has
the other CPU; the figure that matters is the client's CPU time per transaction (all
its threads), which the rest of the machine disturbs much less than transactions per
second. Ratios are paired within a round, medians over the rounds.

``--instructions`` counts instead of timing: it runs each contender under callgrind
(``valgrind --tool=callgrind``) for N and for 2N transactions on one thread and shows
(Ir(2N) - Ir(N)) / N, the instructions one transaction costs with start-up cancelled
out: the median over ``--layouts`` heap layouts, because where the objects happen to
land moves the count by up to 3 k for the same code. With ``--null`` the server is
replaced by a null psycopg-shaped driver, which leaves dbpool's own work (and the
benchmark loop) alone.

The database ``dbpool_engine_bench`` is created (``pgbench -i -s 4``) on first use and
dropped at the end unless ``--keep`` is given; between runs the tables are vacuumed
(autovacuum may be off) and at the end the books must balance.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _harness import (
    fmt_rate,
    fmt_spread,
    markdown_table,
    median,
    progress,
    require_dbpool,
    run_threads,
    selected,
    sweep,
)

LIMIT = 8  # connections in the pool
SCALE = 4  # pgbench -s
DATABASE = "dbpool_engine_bench"
SERVER_URL = os.environ.get(
    "DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PARAM_SETS = 4096  # random parameter sets made before timing, cycled through

# pgbench's built-in "tpcb-like" script, in dbpool's spelling and in psycopg's.
STATEMENTS = (
    "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid",
    "SELECT abalance FROM pgbench_accounts WHERE aid = :aid",
    "UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid",
    "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP)",
)
RAW = tuple(re.sub(r":[a-z]+", "%s", s) for s in STATEMENTS)

RAW_NAME = "raw psycopg"
CONTENDERS = (
    RAW_NAME,
    "Engine begin()",
    "Engine commit-as-you-go",
    "Engine begin(), inline text()",
)


# --------------------------------------------------------------------------- parameters


def param_sets(seed: int) -> list[tuple[tuple[dict[str, int], ...], tuple[tuple[int, ...], ...]]]:
    """Random parameter sets, one per statement, named (for text()) and positional (for
    psycopg's ``%s``), made before timing so that the loop measures the libraries and
    not the random number generator."""
    rng = random.Random(seed)
    out = []
    for _ in range(PARAM_SETS):
        aid = rng.randint(1, 100000 * SCALE)
        tid = rng.randint(1, 10 * SCALE)
        bid = rng.randint(1, SCALE)
        delta = rng.randint(-5000, 5000)
        named = (
            {"delta": delta, "aid": aid},
            {"aid": aid},
            {"delta": delta, "tid": tid},
            {"delta": delta, "bid": bid},
            {"tid": tid, "bid": bid, "aid": aid, "delta": delta},
        )
        positional = ((delta, aid), (aid,), (delta, tid), (delta, bid), (tid, bid, aid, delta))
        out.append((named, positional))
    return out


# --------------------------------------------------------------------------- transactions


def make_transaction(name: str, engine: Any, seed: int) -> Callable[[], object]:
    """One contender's transaction as a zero-argument callable (thread-local state inside)."""
    dbpool = require_dbpool()
    text = dbpool.text
    params = param_sets(seed)
    cycle = _cycle(params)
    upd_a, sel_a, upd_t, upd_b, ins_h = (text(s) for s in STATEMENTS)
    raw_upd_a, raw_sel_a, raw_upd_t, raw_upd_b, raw_ins_h = RAW

    if name == RAW_NAME:
        connect = engine.pool.connect

        def raw() -> object:
            _, p = next(cycle)
            proxy = connect()
            try:
                conn = proxy.driver_connection
                with conn.cursor() as cur:
                    cur.execute(raw_upd_a, p[0])
                    cur.execute(raw_sel_a, p[1])
                    balance = cur.fetchone()[0]
                    cur.execute(raw_upd_t, p[2])
                    cur.execute(raw_upd_b, p[3])
                    cur.execute(raw_ins_h, p[4])
                conn.commit()
            finally:
                proxy.close()
            return balance

        return raw

    if name == "Engine begin()":
        begin = engine.begin

        def with_begin() -> object:
            p, _ = next(cycle)
            with begin() as conn:
                execute = conn.execute
                execute(upd_a, p[0])
                balance = execute(sel_a, p[1]).scalar()
                execute(upd_t, p[2])
                execute(upd_b, p[3])
                execute(ins_h, p[4])
            return balance

        return with_begin

    if name == "Engine commit-as-you-go":
        connect_ = engine.connect

        def as_you_go() -> object:
            p, _ = next(cycle)
            with connect_() as conn:
                execute = conn.execute
                execute(upd_a, p[0])
                balance = execute(sel_a, p[1]).scalar()
                execute(upd_t, p[2])
                execute(upd_b, p[3])
                execute(ins_h, p[4])
                conn.commit()
            return balance

        return as_you_go

    if name == "Engine begin(), inline text()":
        begin_ = engine.begin
        s0, s1, s2, s3, s4 = STATEMENTS

        def inline() -> object:
            p, _ = next(cycle)
            with begin_() as conn:
                conn.execute(text(s0), p[0])
                balance = conn.execute(text(s1), p[1]).scalar()
                conn.execute(text(s2), p[2])
                conn.execute(text(s3), p[3])
                conn.execute(text(s4), p[4])
            return balance

        return inline

    raise ValueError(f"unknown contender {name!r}")


def _cycle(items: list[Any]) -> Iterator[Any]:
    while True:
        yield from items


# --------------------------------------------------------------------------- the database


def bench_url(server_url: str) -> str:
    dbpool = require_dbpool()
    url = dbpool.make_url(server_url)
    auth = url.username or "postgres"
    host = url.host or "127.0.0.1"
    return f"postgresql://{auth}@{host}:{url.port or 5432}/{DATABASE}"


def setup_database(server_url: str) -> str:
    """Create and fill ``dbpool_engine_bench`` unless it exists; return its URL."""
    import psycopg

    dbpool = require_dbpool()
    url = dbpool.make_url(server_url)
    admin = psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        dbname=url.database or "postgres",
        autocommit=True,
    )
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            admin.execute(f"CREATE DATABASE {DATABASE}")
            progress(f"pgbench -i -s {SCALE} {DATABASE}")
            subprocess.run(
                ["pgbench", "-i", "-q", "-s", str(SCALE), "-h", url.host or "127.0.0.1",
                 "-p", str(url.port or 5432), "-U", url.username or "postgres", DATABASE],
                check=True, capture_output=True,
            )  # fmt: skip
    return bench_url(server_url)


def drop_database(server_url: str) -> None:
    import psycopg

    dbpool = require_dbpool()
    url = dbpool.make_url(server_url)
    with psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        dbname=url.database or "postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def vacuum(url: str) -> None:
    """VACUUM the tables so that dead rows from earlier runs do not slow the later ones."""
    import psycopg

    with psycopg.connect(url.replace("postgresql://", "postgresql://", 1), autocommit=True) as c:
        c.execute("VACUUM pgbench_accounts, pgbench_tellers, pgbench_branches, pgbench_history")


def books_balance(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
            " (SELECT sum(tbalance) FROM pgbench_tellers),"
            " (SELECT sum(bbalance) FROM pgbench_branches),"
            " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
            " (SELECT count(*) FROM pgbench_history)"
        ).fetchone()
    assert row is not None
    a, t, b, h, n = row
    verdict = "balance" if a == t == b == h else "DO NOT BALANCE"
    return f"books {verdict} after {n} transactions (accounts {a}, tellers {t}, branches {b}, history {h})"


# --------------------------------------------------------------------------- null driver


class _NullResult:
    """What column_names() reads of psycopg's ``cursor.pgresult``."""

    __slots__ = ("nfields", "status")

    def __init__(self, status: int, nfields: int) -> None:
        self.status = status
        self.nfields = nfields

    def fname(self, i: int) -> bytes:
        return b"abalance"


_ROWS = _NullResult(2, 1)  # TUPLES_OK
_COMMAND = _NullResult(1, 0)  # COMMAND_OK


class _NullInfo:
    encoding = "utf-8"


class _NullPgConn:
    transaction_status = 0  # IDLE: reset on return has nothing to do
    socket = -1


class NullCursor:
    """Accepts anything; a SELECT gives one row of one column."""

    def __init__(self, connection: NullConnection) -> None:
        self.connection = connection
        self.pgresult: _NullResult | None = None
        self._rowcount = -1

    @property
    def rowcount(self) -> int:  # as psycopg's: a property over the slot
        return self._rowcount

    def execute(self, sql: str, params: Any = None) -> NullCursor:
        select = sql[0] == "S"
        self.pgresult = _ROWS if select else _COMMAND
        self._rowcount = 1
        return self

    def executemany(self, sql: str, seq: Any) -> None:
        self.pgresult = _COMMAND
        self._rowcount = len(seq)

    def fetchone(self) -> tuple[int]:
        return (0,)

    def fetchall(self) -> list[tuple[int]]:
        return [(0,)] if self.pgresult is _ROWS else []

    def close(self) -> None:
        pass

    def __enter__(self) -> NullCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class NullConnection:
    """A psycopg-shaped connection that talks to no one."""

    info = _NullInfo()
    pgconn = _NullPgConn()
    autocommit = False

    def cursor(self) -> NullCursor:
        return NullCursor(self)

    def execute(self, sql: str, params: Any = None) -> NullCursor:
        return NullCursor(self).execute(sql or "-", params)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- modes


def make_engine(url: str, null: bool) -> Any:
    dbpool = require_dbpool()
    if null:
        return dbpool.create_engine(
            "postgresql://postgres@127.0.0.1:5432/null", creator=NullConnection,
            connection_limit=LIMIT, pool_timeout=30,
        )  # fmt: skip
    return dbpool.create_engine(url, connection_limit=LIMIT, pool_timeout=30)


def warm(engine: Any) -> None:
    """Open every connection and let psycopg prepare the statements on each."""
    conns = [engine.connect() for _ in range(LIMIT)]
    for conn in conns:
        conn.close()


def run_count(name: str, transactions: int, url: str, null: bool) -> None:
    """Run ``transactions`` transactions of one contender on one thread (for callgrind)."""
    engine = make_engine(url, null)
    try:
        warm(engine)
        tx = make_transaction(name, engine, seed=1)
        # Start-up's objects out of the collector's sight: a full collection walks the
        # whole heap, and whether one falls in the N or the 2N run would move the
        # difference by thousands of instructions per transaction.
        gc.collect()
        gc.freeze()
        for _ in range(transactions):
            tx()
    finally:
        engine.dispose()


def instructions(name: str, transactions: int, url: str, null: bool, layout: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, os.path.abspath(__file__), "--count", str(transactions),
        "--contender", name, "--url", url,
    ]  # fmt: skip
    if null:
        command.append("--null")
    # A fixed hash seed: string hashing decides dict and set layouts, and with them a
    # few thousand instructions per run that would otherwise differ between runs. The
    # padding moves where the heap's objects land (layout 0 adds none): that moves the
    # count per transaction by up to 3 k, the same code in one layout or another.
    env = {**os.environ, "PYTHONHASHSEED": "0", "DBPOOL_BENCH_LAYOUT": "x" * (31 * layout)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def instructions_main(args: argparse.Namespace, url: str) -> None:
    names = selected(CONTENDERS, args.only)
    n, layouts = args.transactions, range(args.layouts)

    def per_transaction(job: tuple[str, int]) -> float:
        name, layout = job
        progress(f"callgrind: {name}, layout {layout}, {n} and {2 * n} transactions")
        small = instructions(name, n, url, args.null, layout)
        large = instructions(name, 2 * n, url, args.null, layout)
        return (large - small) / n

    jobs = [(name, layout) for name in names for layout in layouts]
    # Two at a time: each is one single-threaded valgrind, and counts do not depend on
    # what else runs.
    with ThreadPoolExecutor(max_workers=2) as executor:
        counts = dict(zip(jobs, executor.map(per_transaction, jobs), strict=True))
    per_layout = {name: [counts[name, layout] for layout in layouts] for name in names}
    per_tx = {name: median(values) for name, values in per_layout.items()}
    base = per_tx.get(RAW_NAME)
    rows = []
    for name in names:
        vs = f"{per_tx[name] / base:.3f}x" if base else "-"
        extra = f"{(per_tx[name] - base) / 1000:+.1f} k" if base else "-"
        spread = f"{min(per_layout[name]) / 1000:.1f} / {max(per_layout[name]) / 1000:.1f}"
        rows.append([name, f"{per_tx[name] / 1000:.1f} k", spread, vs, extra])
    driver = "a null psycopg-shaped driver" if args.null else "PostgreSQL (psycopg)"
    print(f"### Instructions per TPC-B-like transaction on one thread, {driver}")
    print(
        f"\ncallgrind, (Ir({2 * n} tx) - Ir({n} tx)) / {n}; medians over {args.layouts} "
        "heap layouts\n"
    )
    print(markdown_table(
        ["contender", "instructions/tx", "min / max", "vs raw", "more than raw"], rows))  # fmt: skip


def timed_main(args: argparse.Namespace, url: str) -> None:
    names = selected(CONTENDERS, args.only)
    # Pin before any thread exists (threads inherit the mask): the server gets the other CPU.
    if hasattr(os, "sched_setaffinity") and not args.no_pin:
        os.sched_setaffinity(0, {0})

    def measure(name: str, threads: int) -> dict[str, float]:
        if not args.null:
            vacuum(url)
        engine = make_engine(url, args.null)
        try:
            warm(engine)
            seeds = iter(range(threads * 7919, threads * 7919 + threads))
            run = run_threads(
                lambda i: make_transaction(name, engine, next(seeds) + i), threads, args.seconds
            )
            return {"rate": run.rate, "cpu": run.cpu_per_op}
        finally:
            engine.dispose()

    samples = sweep(names, args.threads, args.rounds, measure)
    rows = []
    for threads in args.threads:
        for name in names:
            s = samples[name, threads]
            cpu_vs = tps_vs = "-"
            if (RAW_NAME, threads) in samples:
                raw = samples[RAW_NAME, threads]
                cpu_vs = (
                    f"{median([a / b for a, b in zip(s['cpu'], raw['cpu'], strict=True)]):.3f}x"
                )
                tps_vs = (
                    f"{median([a / b for a, b in zip(s['rate'], raw['rate'], strict=True)]):.3f}x"
                )
            rows.append([
                threads, name, fmt_rate(median(s["rate"])), fmt_spread(s["rate"]), tps_vs,
                f"{median(s['cpu']) * 1e6:.0f}",
                f"{min(s['cpu']) * 1e6:.0f} / {max(s['cpu']) * 1e6:.0f}", cpu_vs,
            ])  # fmt: skip
    where = "a null driver" if args.null else "PostgreSQL"
    pin = "unpinned" if args.no_pin else "pinned to CPU 0"
    print(f"### TPC-B-like transaction on {where}: raw psycopg vs dbpool's Engine, pool of "
          f"{LIMIT}, {pin}")  # fmt: skip
    print(
        f"\n{args.seconds:g} s per run, medians of {args.rounds} rounds; ratios paired per round\n"
    )
    print(markdown_table(
        ["threads", "contender", "tx/s", "min / max", "tx/s vs raw", "client CPU µs/tx",
         "min / max", "CPU vs raw"], rows))  # fmt: skip
    if not args.null:
        print(f"\n{books_balance(url)}")


def parse(doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per run (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians shown (3)")
    parser.add_argument(
        "--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
        help="comma-separated thread counts (1,8)",
    )  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated substrings of contenders")
    parser.add_argument("--url", default=SERVER_URL, help="a superuser URL of the server")
    parser.add_argument("--null", action="store_true", help="a null driver, no server")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DATABASE} database")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions with callgrind"
    )
    parser.add_argument(
        "--transactions", type=int, default=1000, help="N for --instructions (1000)"
    )
    parser.add_argument(
        "--layouts", type=int, default=3, help="heap layouts for --instructions; medians (3)"
    )
    # Internal: one contender, a fixed number of transactions (what --instructions runs).
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--contender", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse(__doc__)
    if args.count:
        run_count(args.contender, args.count, args.url, args.null)
        return 0
    url = args.url
    created = False
    if not args.null:
        try:
            url = setup_database(args.url)
            created = True
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"skipped: cannot set up {DATABASE} on PostgreSQL ({reason})")
            return 0
    try:
        if args.instructions:
            instructions_main(args, url)
        else:
            timed_main(args, url)
    finally:
        if created and not args.keep:
            with contextlib.suppress(Exception):
                drop_database(args.url)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    progress(f"done in {time.monotonic() - started:.0f} s")
    raise SystemExit(code)
