"""Shared machinery for the benchmarks: a time-based thread runner, statistics, tables.

Method (see README.md): every run starts N threads on a barrier; each thread loops
until one shared deadline and counts its own operations. Contenders alternate
within each round, the starting contender rotates from round to round, and the
report shows the median over the rounds. Count-based loops mislead on a small
machine with the GIL: a thread can finish a short loop inside one scheduler slice
and never contend with the others.

The second half drives the database throughput benchmarks: one table of
contenders, shared by postgres_throughput.py and mysql_throughput.py.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

Op = Callable[[], object]
Samples = dict[
    tuple[str, int], dict[str, list[float]]
]  # {(contender, threads): {metric: per round}}
CLOSE = methodcaller("close")  # "give it back": proxy.close() for every pool that has one


# --------------------------------------------------------------------------- runner


@dataclass
class Run:
    """One timed run: operations each thread completed before the deadline."""

    counts: list[int]
    seconds: float
    deadline: float  # time.perf_counter() value
    cpu_per_op: float  # process CPU seconds per operation, all threads (this process only)

    @property
    def rate(self) -> float:
        return sum(self.counts) / self.seconds


def run_threads(make_op: Callable[[int], Op], threads: int, seconds: float) -> Run:
    """Run `threads` threads for `seconds` of wall time; thread i loops on make_op(i).

    make_op is called inside the thread, before the barrier, so per-thread state
    can live in the closure it returns. The deadline is set when the last thread
    reaches the barrier. An operation in flight at the deadline is finished but
    not counted (each thread's last operation is the one that crosses it).
    """
    deadline = [0.0]
    cpu_start = [0.0]

    def start() -> None:
        cpu_start[0] = time.process_time()
        deadline[0] = time.perf_counter() + seconds

    barrier = threading.Barrier(threads, action=start)
    counts = [0] * threads
    done = [0] * threads  # including each thread's last operation
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            op = make_op(i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        clock = time.perf_counter
        end = deadline[0]
        n = 0
        try:
            while clock() < end:
                op()
                n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[i] = max(n - 1, 0)
        done[i] = n

    gc.collect()
    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cpu = time.process_time() - cpu_start[0]
    if errors:
        raise errors[0]
    return Run(counts, seconds, deadline[0], cpu / max(sum(done), 1))


def sweep(
    names: Sequence[str],
    thread_counts: Iterable[int],
    rounds: int,
    measure: Callable[[str, int], dict[str, float]],
) -> Samples:
    """Call measure(name, threads) for every contender, rounds times per thread count.

    Within a round every contender runs once; the starting contender rotates from
    one round to the next. Returns every sample: {(name, threads): {metric: [..]}}.
    """
    samples: Samples = {}
    for threads in thread_counts:
        for r in range(rounds):
            k = r % len(names) if names else 0
            for name in [*names[k:], *names[:k]]:
                progress(f"{threads:>3} threads, round {r + 1}/{rounds}: {name}")
                for metric, value in measure(name, threads).items():
                    samples.setdefault((name, threads), {}).setdefault(metric, []).append(value)
    return samples


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when all equal, 1/n when one gets everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


# --------------------------------------------------------------------------- output


def fmt_rate(x: float) -> str:
    """185000 -> '185 k', 4100000 -> '4.10 M' (three significant digits)."""
    for scale, unit in ((1e6, " M"), (1e3, " k"), (1.0, "")):
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{x:.3g}"


def fmt_spread(values: Sequence[float]) -> str:
    return f"{fmt_rate(min(values))} / {fmt_rate(max(values))}"


def fmt_ratio(samples: Samples, name: str, base: str, threads: int) -> str:
    """name's rate over base's, paired within each round (drift cancels), median over rounds."""
    if (base, threads) not in samples:
        return "-"
    pairs = zip(samples[name, threads]["rate"], samples[base, threads]["rate"], strict=True)
    return f"{median([a / b for a, b in pairs]):.2f}x"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; columns after the first two are right-aligned."""
    body = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(out) + " |"

    rule = ["-" * w if i < 2 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([line(headers), line(rule), *(line(r) for r in body)])


# --------------------------------------------------------------------------- command line


def parse_args(
    doc: str | None, *, seconds: float, rounds: int, threads: str
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=seconds, help=f"wall time per run (default {seconds})"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help=f"rounds; medians are reported (default {rounds})",
    )
    parser.add_argument(
        "--threads",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[int(x) for x in threads.split(",")],
        help=f"comma-separated thread counts (default {threads})",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated substrings: run only matching contenders"
    )
    return parser.parse_args()


def selected(names: Iterable[str], only: str) -> list[str]:
    wanted = [w.strip().lower() for w in only.split(",") if w.strip()]
    return [n for n in names if not wanted or any(w in n.lower() for w in wanted)]


def require_dbpool() -> Any:
    """Import dbpool; ImportError (so the contender is skipped) while its core is missing."""
    import dbpool

    for name in ("QueuePool", "create_engine", "PoolTimeoutError"):
        if not hasattr(dbpool, name):
            raise ImportError(f"dbpool.{name} does not exist yet")
    return dbpool


# --------------------------------------------------------------------------- databases

SQL = "SELECT 1"
LIMIT = 4  # connections in every pool
AUDIT_CHECKOUTS = 200
RETRY_PAUSE = 3.0  # seconds before repeating a run that lost its connections


@dataclass(frozen=True)
class Database:
    """How to reach one database, and how to count the round trips on its connections."""

    name: str
    url: str  # for dbpool
    sqlalchemy_url: str
    module: Any  # the DB-API module
    # module.connect(**connect_kwargs) gives an autocommit connection
    connect_kwargs: dict[str, Any]
    # audit(raw_connections) starts counting round trips; calling its result stops and returns the count
    audit: Callable[[list[Any]], Callable[[], int]]
    # reset(raw_connection): roll back only if a transaction is open (no round trip otherwise)
    reset: Callable[[Any], None]

    def connect(self) -> Any:
        return self.module.connect(**self.connect_kwargs)


@dataclass
class Opened:
    """A contender's pool, opened and warmed: op() is one checkout + query + return."""

    op: Op
    raw: list[Any]  # the DB-API connections it opened (for the round-trip audit)
    close: Callable[[], None]


@dataclass(frozen=True)
class DbContender:
    name: str
    open: Callable[[Database], Opened]


def query(conn: Any) -> None:
    """Exactly one round trip: execute and fetch on a cursor."""
    cur = conn.cursor()
    cur.execute(SQL)
    cur.fetchall()
    cur.close()


def execute_driver_sql(conn: Any) -> None:
    """The same one round trip through a SQLAlchemy-style Connection."""
    conn.exec_driver_sql(SQL).fetchall()


def checkout_op(
    checkout: Callable[[], Any], run: Callable[[Any], object], release: Callable[[Any], object]
) -> Op:
    """op(): one checkout, ``run`` on what it gave, and its release. Every contender's op
    is made here, so each pays the same calls around its own work."""

    def op() -> None:
        c = checkout()
        try:
            run(c)
        finally:
            release(c)

    return op


def prefill(
    checkout: Callable[[], Any], release: Callable[[Any], object], raw: Callable[[Any], Any]
) -> list[Any]:
    """Hold LIMIT connections at once (so all are open before timing), then return them."""
    held = [checkout() for _ in range(LIMIT)]
    conns = [raw(h) for h in held]
    for h in held:
        release(h)
    return conns


def open_bare_queue(db: Database) -> Opened:
    import queue

    conns = [db.connect() for _ in range(LIMIT)]
    q: queue.LifoQueue[Any] = queue.LifoQueue()
    for c in conns:
        q.put(c)

    def close() -> None:
        for c in conns:
            c.close()

    return Opened(checkout_op(q.get, query, q.put), conns, close)


def open_dbpool_engine(db: Database) -> Opened:
    engine = require_dbpool().create_engine(
        db.url, connection_limit=LIMIT, isolation_level="AUTOCOMMIT"
    )
    raw = prefill(engine.connect, CLOSE, lambda c: c.driver_connection)
    return Opened(checkout_op(engine.connect, execute_driver_sql, CLOSE), raw, engine.dispose)


def open_dbpool_queuepool(db: Database) -> Opened:
    # The stand-alone pool cannot ask psycopg or PyMySQL whether a transaction is open
    # (it looks for `in_transaction`), so by default it calls rollback() on every return,
    # which PyMySQL sends to the server. Give it the driver's answer, as a dialect would.
    pool = require_dbpool().QueuePool(db.connect, connection_limit=LIMIT, reset=db.reset)
    op = checkout_op(pool.connect, lambda c: query(c.driver_connection), CLOSE)
    raw = prefill(pool.connect, CLOSE, lambda c: c.driver_connection)
    return Opened(op, raw, pool.dispose)


def open_sqlalchemy(db: Database) -> Opened:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        db.sqlalchemy_url,
        pool_size=LIMIT,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        skip_autocommit_rollback=True,  # else Connection.close() sends ROLLBACK on PyMySQL
    )
    raw = prefill(engine.connect, CLOSE, lambda c: c.connection.driver_connection)
    return Opened(checkout_op(engine.connect, execute_driver_sql, CLOSE), raw, engine.dispose)


def open_dbutils(db: Database) -> Opened:
    from dbutils.pooled_db import PooledDB

    # ping=0: no ping() round trip at checkout; reset=False: no ROLLBACK at return
    # (both are done under DBUtils' pool lock); autocommit connections need neither.
    pool = PooledDB(
        db.module, maxconnections=LIMIT, blocking=True, ping=0, reset=False, **db.connect_kwargs
    )
    raw = prefill(pool.connection, CLOSE, lambda c: c.dbapi_connection)
    return Opened(checkout_op(pool.connection, query, CLOSE), raw, pool.close)


COMMON_DB_CONTENDERS = [
    DbContender("dbpool Engine", open_dbpool_engine),
    DbContender("dbpool QueuePool", open_dbpool_queuepool),
    DbContender("SQLAlchemy Core", open_sqlalchemy),
    DbContender("DBUtils PooledDB", open_dbutils),
    DbContender("bare LifoQueue", open_bare_queue),
]


def audit(db: Database, contender: DbContender) -> float:
    """Round trips per checkout, counted on the wire over AUDIT_CHECKOUTS serial checkouts.

    Counting starts after as many checkouts again, so one-time work per connection
    (psycopg prepares a statement on its fifth execution) is left out.
    """
    opened = contender.open(db)
    try:
        for _ in range(AUDIT_CHECKOUTS):
            opened.op()
        stop = db.audit(opened.raw)
        for _ in range(AUDIT_CHECKOUTS):
            opened.op()
        return stop() / AUDIT_CHECKOUTS
    finally:
        opened.close()


def db_throughput_main(
    doc: str | None,
    label: str,
    make_db: Callable[[], Database],
    contenders: list[DbContender],
    baselines: list[str],
) -> int:
    """Entry point shared by the database benchmarks; prints one Markdown table."""
    args = parse_args(doc, seconds=1.5, rounds=5, threads="1,16,64")
    try:
        db = make_db()
        db.connect().close()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"skipped: cannot reach {label} ({reason})")
        return 0
    # Pin before any thread exists (threads inherit the mask): the server gets the other CPU.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})

    wanted = selected([c.name for c in contenders], args.only)
    by_name = {c.name: c for c in contenders if c.name in wanted}
    notes: list[str] = []
    trips: dict[str, float] = {}
    for name, c in list(by_name.items()):
        try:
            trips[name] = audit(db, c)
        except ImportError as exc:
            notes.append(f"skipped {name}: {exc}")
            del by_name[name]

    def run_once(name: str, threads: int) -> dict[str, float]:
        opened = by_name[name].open(db)
        try:
            run = run_threads(lambda _: opened.op, threads, args.seconds)
            return {"rate": run.rate, "cpu": run.cpu_per_op}
        finally:
            with contextlib.suppress(Exception):
                opened.close()

    repeated: list[str] = []

    def measure(name: str, threads: int) -> dict[str, float]:
        # A run that loses its connections (the server restarted, a backend was killed)
        # is repeated with a fresh pool, at most twice; a note under the table says so.
        for _ in range(2):
            try:
                return run_once(name, threads)
            except Exception as exc:
                repeated.append(f"{name} at {threads} threads ({type(exc).__name__})")
                progress(f"  run failed ({exc!r}); repeating it")
                time.sleep(RETRY_PAUSE)
        return run_once(name, threads)

    samples = sweep(list(by_name), args.threads, args.rounds, measure)

    rows = []
    for threads in args.threads:
        for name in by_name:
            rates = samples[name, threads]["rate"]
            ratios = [fmt_ratio(samples, name, b, threads) for b in baselines]
            rows.append(
                [
                    threads,
                    name,
                    fmt_rate(median(rates)),
                    fmt_spread(rates),
                    *ratios,
                    f"{median(samples[name, threads]['cpu']) * 1e6:.0f}",
                    f"{trips[name]:.2f}",
                ]
            )
    headers = [
        "threads",
        "pool",
        "queries/s",
        "min / max",
        *(f"vs {b}" for b in baselines),
        "client CPU µs/query",
        "round trips/checkout",
    ]
    print(f"### {db.name}: `{SQL}` per checkout, autocommit, pool of {LIMIT}, pinned to CPU 0")
    print(f"\n{args.seconds:g} s per run, medians of {args.rounds} rounds\n")
    print(markdown_table(headers, rows))
    for name, t in trips.items():
        if abs(t - 1.0) > 0.01:
            notes.append(f"warning: {name} makes {t:.2f} round trips per checkout (expected 1)")
    if repeated:
        notes.append("runs repeated after an error: " + "; ".join(repeated))
    for note in notes:
        print(f"\n{note}")
    return 0
