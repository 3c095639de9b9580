"""The machinery of tpcb.py: the TPC-B-like transaction, the two databases, the
contenders, a runner that keeps per-transaction latencies, and native pgbench.

tpcb.py (the command line, the rounds and the tables) runs every (database, mode,
round) in a child process of its own, so that pinning the client to one CPU
(`os.sched_setaffinity`) never leaks into the next mode: the functions here are
what a child runs.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import os
import queue
import random
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import CLOSE, jain, percentile, require_dbpool

DBNAME = "dbpool_tpcb"  # the same name on both servers; made and dropped by tpcb.py
LEDGER = "dbpool_tpcb_ledger"  # one row: the sums at init and the deltas of truncated history

# pgbench's built-in "TPC-B (sort of)" script, statement by statement, in the two
# spellings the contenders need: `:name` for text() and `%(name)s` for the drivers
# (psycopg and PyMySQL both take pyformat).
STATEMENTS = (
    (
        "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid",
        ("delta", "aid"),
    ),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = :aid", ("aid",)),
    ("UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid", ("delta", "tid")),
    (
        "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid",
        ("delta", "bid"),
    ),
    (
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP)",
        ("tid", "bid", "aid", "delta"),
    ),
)
DRIVER_SQL = tuple(re.sub(r":(\w+)", r"%(\1)s", sql) for sql, _ in STATEMENTS)
TIMEOUT_ERRORS = {"PoolTimeoutError", "PoolTimeout", "TimeoutError", "Empty"}

Params = tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int], dict[str, int]]
Tx = Callable[[Params], object]


def tx_params(rng: random.Random, scale: int) -> Params:
    """One transaction's parameters, in pgbench's ranges for the scale."""
    aid = rng.randint(1, 100000 * scale)
    bid = rng.randint(1, scale)
    tid = rng.randint(1, 10 * scale)
    delta = rng.randint(-5000, 5000)
    return (
        {"delta": delta, "aid": aid},
        {"aid": aid},
        {"delta": delta, "tid": tid},
        {"delta": delta, "bid": bid},
        {"tid": tid, "bid": bid, "aid": aid, "delta": delta},
    )


def raw_tx(conn: Any, p: Params) -> None:
    """The transaction on a DB-API connection (autocommit off): five statements, COMMIT.
    psycopg sends BEGIN before the first statement; PyMySQL's session starts one."""
    cur = conn.cursor()
    try:
        cur.execute(DRIVER_SQL[0], p[0])
        cur.execute(DRIVER_SQL[1], p[1])
        cur.fetchone()
        cur.execute(DRIVER_SQL[2], p[2])
        cur.execute(DRIVER_SQL[3], p[3])
        cur.execute(DRIVER_SQL[4], p[4])
    finally:
        cur.close()
    conn.commit()


def engine_tx(begin: Callable[[], Any], clauses: list[Any]) -> Tx:
    """The transaction through an engine: `with engine.begin() as conn: conn.execute(...)`,
    the same code for dbpool and SQLAlchemy (each with its own `text()` clauses)."""
    upd_a, sel_a, upd_t, upd_b, ins_h = clauses

    def tx(p: Params) -> None:
        with begin() as conn:
            conn.execute(upd_a, p[0])
            conn.execute(sel_a, p[1]).scalar()
            conn.execute(upd_t, p[2])
            conn.execute(upd_b, p[3])
            conn.execute(ins_h, p[4])

    return tx


def raw_pool_tx(
    checkout: Callable[[], Any], driver: Callable[[Any], Any], release: Callable[[Any], object]
) -> Tx:
    """The transaction on a connection from a pool of raw driver connections; a failed one
    is rolled back before the connection goes back, as a `with` block would."""

    def tx(p: Params) -> None:
        c = checkout()
        try:
            conn = driver(c)
            try:
                raw_tx(conn, p)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
        finally:
            release(c)

    return tx


# --------------------------------------------------------------------------- databases


@dataclass(frozen=True)
class Database:
    """One server: how to reach the benchmark database, and how to count round trips."""

    key: str  # "postgresql" or "mariadb"
    name: str
    url: str  # for dbpool
    sqlalchemy_url: str
    connect_kwargs: dict[str, Any]  # module.connect(**...) gives a connection, autocommit off
    count_round_trips: Callable[[list[Any]], Callable[[], int]]
    reset: Callable[[Any], None]  # roll back only if a transaction is open

    @property
    def module(self) -> Any:
        if self.key == "postgresql":
            import psycopg

            return psycopg
        import pymysql

        return pymysql

    def connect(self, *, autocommit: bool = False) -> Any:
        return self.module.connect(**{**self.connect_kwargs, "autocommit": autocommit})


def postgresql(host: str, port: int, user: str) -> Database:
    from postgres_throughput import count_round_trips
    from postgres_throughput import reset as pg_reset

    return Database(
        key="postgresql",
        name="PostgreSQL",
        url=f"postgresql://{user}@{host}:{port}/{DBNAME}",
        sqlalchemy_url=f"postgresql+psycopg://{user}@{host}:{port}/{DBNAME}",
        connect_kwargs={
            "host": host,
            "port": port,
            "user": user,
            "dbname": DBNAME,
            "autocommit": False,
            "connect_timeout": 5,
        },
        count_round_trips=count_round_trips,
        reset=pg_reset,
    )


def mariadb(host: str, port: int, user: str) -> Database:
    from mysql_throughput import count_round_trips
    from mysql_throughput import reset as my_reset

    return Database(
        key="mariadb",
        name="MariaDB",
        url=f"mysql://{user}@{host}:{port}/{DBNAME}",
        sqlalchemy_url=f"mysql+pymysql://{user}@{host}:{port}/{DBNAME}",
        connect_kwargs={
            "host": host,
            "port": port,
            "user": user,
            "password": "",
            "database": DBNAME,
            "autocommit": False,
            "connect_timeout": 5,
        },
        count_round_trips=count_round_trips,
        reset=my_reset,
    )


def server_connect(db: Database) -> Any:
    """An autocommit connection to the server's default database (to create or drop ours)."""
    kwargs = dict(db.connect_kwargs, autocommit=True)
    if db.key == "postgresql":
        kwargs["dbname"] = "postgres"
    else:
        kwargs.pop("database")
    return db.module.connect(**kwargs)


def find_pgbench(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    found = shutil.which("pgbench")
    if found:
        return found

    def version(path: str) -> float:
        m = re.search(r"postgresql/([\d.]+)/", path)
        return float(m.group(1)) if m else 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), key=version)
    return candidates[-1] if candidates else None


def pgbench_args(db: Database) -> list[str]:
    kw = db.connect_kwargs
    return ["-h", str(kw["host"]), "-p", str(kw["port"]), "-U", str(kw["user"])]


# Tables of pgbench's shape, for MariaDB (and for PostgreSQL when pgbench is absent).
MARIADB_DDL = (
    "CREATE TABLE pgbench_branches (bid INT NOT NULL PRIMARY KEY, bbalance INT, filler CHAR(88)) ENGINE=InnoDB",
    "CREATE TABLE pgbench_tellers (tid INT NOT NULL PRIMARY KEY, bid INT, tbalance INT, filler CHAR(84)) ENGINE=InnoDB",
    "CREATE TABLE pgbench_accounts (aid INT NOT NULL PRIMARY KEY, bid INT, abalance INT, filler CHAR(84)) ENGINE=InnoDB",
    "CREATE TABLE pgbench_history (tid INT, bid INT, aid INT, delta INT, mtime DATETIME, filler CHAR(22)) ENGINE=InnoDB",
)


def create_database(db: Database, scale: int, pgbench: str | None) -> str:
    """(Re)create the benchmark database with pgbench's tables at `scale` and the ledger.
    Returns how it was made (for the notes)."""
    admin = server_connect(db)
    try:
        if db.key == "postgresql":
            admin.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {DBNAME}")
        else:
            cur = admin.cursor()
            cur.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
            cur.execute(f"CREATE DATABASE {DBNAME}")
    finally:
        admin.close()

    conn = db.connect(autocommit=True)
    try:
        cur = conn.cursor()
        if db.key == "postgresql":
            if pgbench is None:
                raise RuntimeError("pgbench not found (give --pgbench PATH)")
            subprocess.run(
                [pgbench, *pgbench_args(db), "-i", "-s", str(scale), "-q", DBNAME],
                check=True,
                capture_output=True,
                timeout=600,
            )
            how = f"`pgbench -i -s {scale}`"
        else:
            for ddl in MARIADB_DDL:
                cur.execute(ddl)
            fill = (
                ("pgbench_branches", "seq, 0, ''", scale),
                ("pgbench_tellers", "seq, (seq - 1) DIV 10 + 1, 0, ''", 10 * scale),
                ("pgbench_accounts", "seq, (seq - 1) DIV 100000 + 1, 0, ''", 100000 * scale),
            )
            for table, cols, n in fill:
                # MariaDB's Sequence engine makes the rows server-side in a second or two.
                cur.execute(f"INSERT INTO {table} SELECT {cols} FROM seq_1_to_{n}")
            cur.execute("ANALYZE TABLE pgbench_branches, pgbench_tellers, pgbench_accounts")
            cur.fetchall()
            how = f"tables of pgbench's shape at scale {scale}, InnoDB"
        cur.execute(f"CREATE TABLE {LEDGER} (a0 BIGINT, t0 BIGINT, b0 BIGINT, truncated BIGINT)")
        cur.execute(
            f"INSERT INTO {LEDGER} SELECT "
            "(SELECT SUM(abalance) FROM pgbench_accounts), "
            "(SELECT SUM(tbalance) FROM pgbench_tellers), "
            "(SELECT SUM(bbalance) FROM pgbench_branches), "
            "(SELECT COALESCE(SUM(delta), 0) FROM pgbench_history)"
        )
        cur.close()
    finally:
        conn.close()
    return how


def drop_database(db: Database) -> None:
    admin = server_connect(db)
    try:
        cur = admin.cursor()
        if db.key == "postgresql":
            cur.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        else:
            cur.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
    finally:
        admin.close()


@dataclass(frozen=True)
class Books:
    """The sums the books-balance check compares, relative to the state at init."""

    accounts: int
    tellers: int
    branches: int
    history: int  # sum(delta) of pgbench_history plus that of every truncated history
    history_rows: int  # rows in pgbench_history now

    @property
    def balanced(self) -> bool:
        return self.accounts == self.tellers == self.branches == self.history


def books(admin: Any) -> Books:
    cur = admin.cursor()
    cur.execute(
        "SELECT (SELECT SUM(abalance) FROM pgbench_accounts) - a0, "
        "(SELECT SUM(tbalance) FROM pgbench_tellers) - t0, "
        "(SELECT SUM(bbalance) FROM pgbench_branches) - b0, "
        "(SELECT COALESCE(SUM(delta), 0) FROM pgbench_history) + truncated, "
        f"(SELECT COUNT(*) FROM pgbench_history) FROM {LEDGER}"
    )
    row = cur.fetchone()
    cur.close()
    return Books(*(int(v) for v in row))


def between_runs(db: Database, admin: Any) -> None:
    """Bring the tables back to the same state before every run, whoever ran before.

    The history is truncated (its deltas are kept in the ledger, so the books still
    balance against the state at init). PostgreSQL (autovacuum is off): VACUUM of the
    updated tables, then a CHECKPOINT so that no run pays for the previous one's dirty
    pages and every run starts the same full-page-write cycle. MariaDB: wait until
    InnoDB has purged the old row versions and written the tables' dirty pages.
    """
    cur = admin.cursor()
    cur.execute(
        f"UPDATE {LEDGER} SET truncated = truncated + "
        "(SELECT COALESCE(SUM(delta), 0) FROM pgbench_history)"
    )
    cur.execute("TRUNCATE pgbench_history")
    if db.key == "postgresql":
        cur.execute("VACUUM pgbench_branches, pgbench_tellers, pgbench_accounts")
        cur.execute("CHECKPOINT")
    else:
        # FOR EXPORT flushes the tables' changes to disk (and waits for their purge).
        cur.execute("FLUSH TABLES pgbench_branches, pgbench_tellers, pgbench_accounts FOR EXPORT")
        cur.execute("UNLOCK TABLES")
        deadline = time.monotonic() + 3  # the counter is server-wide: others may keep it up
        while time.monotonic() < deadline:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
            row = cur.fetchone()
            if row is None or int(row[1]) < 200:
                break
            time.sleep(0.05)
    cur.close()


# --------------------------------------------------------------------------- contenders


@dataclass
class Opened:
    """A contender's pool, opened and warmed: tx(params) runs one transaction."""

    tx: Tx
    raw: list[Any]  # the DB-API connections it opened (for the round-trip audit)
    close: Callable[[], None]


@dataclass(frozen=True)
class Settings:
    pool_size: int
    pool_timeout: float


def prefill(
    n: int,
    checkout: Callable[[], Any],
    release: Callable[[Any], object],
    raw: Callable[[Any], Any],
) -> list[Any]:
    """Hold n connections at once (so all are open before timing), then return them."""
    held = [checkout() for _ in range(n)]
    conns = [raw(h) for h in held]
    for h in held:
        release(h)
    return conns


def dbpool_engine(db: Database, s: Settings) -> tuple[Any, list[Any]]:
    """A dbpool Engine with its pool filled, and its DB-API connections."""
    engine = require_dbpool().create_engine(
        db.url, connection_limit=s.pool_size, pool_timeout=s.pool_timeout
    )
    raw = prefill(s.pool_size, engine.connect, CLOSE, lambda c: c.driver_connection)
    return engine, raw


def open_dbpool_engine(db: Database, s: Settings) -> Opened:
    engine, raw = dbpool_engine(db, s)
    clauses = [require_dbpool().text(sql) for sql, _ in STATEMENTS]
    return Opened(engine_tx(engine.begin, clauses), raw, engine.dispose)


def pipelined_tx(begin: Callable[[], Any]) -> Tx:
    """The transaction through dbpool's Engine, its five statements sent together in a
    psycopg ``pipeline()`` on the driver connection, their replies read at the block's
    end: 3 round trips (psycopg sends BEGIN on its own, then the five, then COMMIT).
    The SELECT has a cursor of its own so that reading its row waits for nothing."""

    def tx(p: Params) -> None:
        with begin() as conn:
            pg = conn.driver_connection
            with pg.cursor() as cur, pg.cursor() as sel:
                with pg.pipeline():
                    cur.execute(DRIVER_SQL[0], p[0])
                    sel.execute(DRIVER_SQL[1], p[1])
                    cur.execute(DRIVER_SQL[2], p[2])
                    cur.execute(DRIVER_SQL[3], p[3])
                    cur.execute(DRIVER_SQL[4], p[4])
                sel.fetchone()

    return tx


def open_dbpool_pipelined(db: Database, s: Settings) -> Opened:
    engine, raw = dbpool_engine(db, s)
    return Opened(pipelined_tx(engine.begin), raw, engine.dispose)


def open_dbpool_queuepool(db: Database, s: Settings) -> Opened:
    # reset: ask the driver whether a transaction is open, as a dialect would (the
    # stand-alone pool's generic reset would send ROLLBACK on every return on PyMySQL).
    pool = require_dbpool().QueuePool(
        db.connect, connection_limit=s.pool_size, pool_timeout=s.pool_timeout, reset=db.reset
    )
    driver = lambda c: c.driver_connection  # noqa: E731
    raw = prefill(s.pool_size, pool.connect, CLOSE, driver)
    return Opened(raw_pool_tx(pool.connect, driver, CLOSE), raw, pool.dispose)


def open_psycopg_pool(db: Database, s: Settings) -> Opened:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        min_size=s.pool_size,
        max_size=s.pool_size,
        kwargs=db.connect_kwargs,
        timeout=s.pool_timeout,
        open=True,
    )
    pool.wait()
    raw = prefill(s.pool_size, pool.getconn, pool.putconn, lambda c: c)
    return Opened(raw_pool_tx(pool.getconn, lambda c: c, pool.putconn), raw, pool.close)


def open_sqlalchemy(db: Database, s: Settings) -> Opened:
    import sqlalchemy

    # pool_reset_on_return=None: its pool would send ROLLBACK on every return on PyMySQL,
    # even after engine.begin() has committed (a 7th round trip); engine.begin() rolls
    # back a failed transaction itself, so the reset has nothing left to do here.
    engine = sqlalchemy.create_engine(
        db.sqlalchemy_url,
        pool_size=s.pool_size,
        max_overflow=0,
        pool_timeout=s.pool_timeout,
        pool_reset_on_return=None,
    )
    clauses = [sqlalchemy.text(sql) for sql, _ in STATEMENTS]
    raw = prefill(s.pool_size, engine.connect, CLOSE, lambda c: c.connection.driver_connection)
    return Opened(engine_tx(engine.begin, clauses), raw, engine.dispose)


def open_dbutils(db: Database, s: Settings) -> Opened:
    from dbutils.pooled_db import PooledDB  # type: ignore[import-untyped]

    # ping=0: no ping round trip at checkout; reset=False: roll back only transactions
    # opened with begin() (we commit, and roll back a failed one ourselves), where the
    # default would send ROLLBACK on every return on PyMySQL. No checkout timeout exists.
    pool = PooledDB(
        db.module,
        maxconnections=s.pool_size,
        blocking=True,
        ping=0,
        reset=False,
        **db.connect_kwargs,
    )
    raw = prefill(s.pool_size, pool.connection, CLOSE, lambda c: c.dbapi_connection)
    return Opened(raw_pool_tx(pool.connection, lambda c: c, CLOSE), raw, pool.close)


def open_bare_queue(db: Database, s: Settings) -> Opened:
    conns = [db.connect() for _ in range(s.pool_size)]
    q: queue.LifoQueue[Any] = queue.LifoQueue()
    for c in conns:
        q.put(c)

    def checkout() -> Any:
        return q.get(timeout=s.pool_timeout)

    def close() -> None:
        for c in conns:
            c.close()

    return Opened(raw_pool_tx(checkout, lambda c: c, q.put), conns, close)


PGBENCH = "pgbench (C)"
# Not the same transaction on the wire: its statements go out before earlier ones are
# checked (see pipelined_tx). A lever for the application, shown next to the pools.
PIPELINED = "dbpool + pipeline()"
CONTENDERS: dict[str, Callable[[Database, Settings], Opened]] = {
    "dbpool Engine": open_dbpool_engine,
    "dbpool QueuePool": open_dbpool_queuepool,
    "psycopg_pool": open_psycopg_pool,
    "SQLAlchemy Core": open_sqlalchemy,
    "DBUtils PooledDB": open_dbutils,
    "bare LifoQueue": open_bare_queue,
    PIPELINED: open_dbpool_pipelined,
}
POSTGRESQL_ONLY = {"psycopg_pool", PIPELINED, PGBENCH}


def contender_names(db_key: str, pgbench: bool) -> list[str]:
    names = [n for n in CONTENDERS if db_key == "postgresql" or n not in POSTGRESQL_ONLY]
    if db_key == "postgresql" and pgbench:
        names.append(PGBENCH)
    return names


def audit(db: Database, name: str, s: Settings, scale: int, n: int = 50) -> float:
    """Round trips per transaction on the wire, over n serial transactions.

    Counting starts after 10 transactions per pooled connection, so one-time work
    (psycopg prepares a statement on its fifth execution on a connection, and FIFO
    pools hand out every connection in turn) is left out.
    """
    opened = CONTENDERS[name](db, s)
    try:
        rng = random.Random(0)
        for _ in range(10 * s.pool_size):
            opened.tx(tx_params(rng, scale))
        stop = db.count_round_trips(opened.raw)
        for _ in range(n):
            opened.tx(tx_params(rng, scale))
        return stop() / n
    finally:
        opened.close()


# --------------------------------------------------------------------------- runner


@dataclass
class RunResult:
    """One timed run of one contender; what the tables show, before medians."""

    tps: float
    p50: float  # ms, per transaction, including the wait for a connection
    p99: float
    max: float
    jain: float
    cpu_ms: float  # client process CPU per transaction
    migrations: float | None  # CPU migrations per transaction (worker threads)
    errors: dict[str, int] = field(default_factory=dict)  # by exception class
    timeouts: int = 0
    committed: int = 0  # transactions that completed, including those crossing the deadline


def sched_counters(path: str) -> int | None:
    """se.nr_migrations from a /proc/.../sched file; None where the kernel has no such file."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("se.nr_migrations"):
                    return int(line.split(":")[1])
    except OSError:
        return None
    return None


def run_threads(
    make_tx: Callable[[int], Callable[[], object]], threads: int, seconds: float
) -> RunResult:
    """Run `threads` threads for `seconds` of wall time, each looping on its own make_tx(i).

    As in _harness.run_threads: a barrier, then one shared deadline; a transaction
    counts for tps if it ended before the deadline, and one in flight then is finished.
    Every transaction's latency (checkout to return) is kept, those crossing the
    deadline included: a thread starved for seconds shows up in max, not only in Jain.
    """
    deadline = [0.0]
    cpu_start = [0.0]

    def start() -> None:
        cpu_start[0] = time.process_time()
        deadline[0] = time.perf_counter() + seconds

    barrier = threading.Barrier(threads, action=start)
    counts = [0] * threads
    done = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    migrations: list[int | None] = [None] * threads
    errors: list[Counter[str]] = [Counter() for _ in range(threads)]  # per thread: no races
    fatal: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            tx = make_tx(i)
        except BaseException as exc:
            fatal.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        m0 = sched_counters("/proc/thread-self/sched")
        clock = time.perf_counter
        end = deadline[0]
        lat = latencies[i]
        errs = errors[i]
        n = ok = 0
        t0 = clock()
        while t0 < end:
            try:
                tx()
            except Exception as exc:
                errs[type(exc).__name__] += 1
                t0 = clock()
                continue
            t1 = clock()
            lat.append(t1 - t0)
            ok += 1
            if t1 <= end:
                n += 1
            t0 = t1
        m1 = sched_counters("/proc/thread-self/sched")
        counts[i] = n
        done[i] = ok
        if m0 is not None and m1 is not None:
            migrations[i] = m1 - m0

    gc.collect()
    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cpu = time.process_time() - cpu_start[0]
    if fatal:
        raise fatal[0]
    all_lat = [x * 1000 for lat in latencies for x in lat]
    committed = sum(done)
    failed = sum(errors, Counter[str]())
    per = max(committed, 1)
    migs = None if any(m is None for m in migrations) else sum(m or 0 for m in migrations) / per
    return RunResult(
        tps=sum(counts) / seconds,
        p50=percentile(all_lat, 50),
        p99=percentile(all_lat, 99),
        max=max(all_lat, default=float("nan")),
        jain=jain(counts),
        cpu_ms=cpu * 1000 / per,
        migrations=migs,
        errors=dict(failed),
        timeouts=sum(v for k, v in failed.items() if k in TIMEOUT_ERRORS),
        committed=committed,
    )


def run_contender(
    db: Database, name: str, s: Settings, threads: int, seconds: float, scale: int, seed: int
) -> RunResult:
    opened = CONTENDERS[name](db, s)
    try:

        def make_tx(i: int) -> Callable[[], object]:
            rng = random.Random(seed * 1000 + i)
            tx = opened.tx

            def one() -> object:
                return tx(tx_params(rng, scale))

            return one

        return run_threads(make_tx, threads, seconds)
    finally:
        with contextlib.suppress(Exception):
            opened.close()


def task_migrations(pid: int) -> int | None:
    total = 0
    paths = glob.glob(f"/proc/{pid}/task/*/sched")
    if not paths:
        return None
    for p in paths:
        m = sched_counters(p)
        if m is None:
            return None
        total += m
    return total


def run_pgbench(pgbench: str, db: Database, clients: int, seconds: float) -> RunResult:
    """Native pgbench (`-n -c clients -j 2 -T seconds`, its built-in TPC-B-like script,
    simple protocol), logging every transaction so latencies and per-client counts come
    from the same data as for the Python contenders. CPU from getrusage(RUSAGE_CHILDREN);
    migrations polled from its /proc/<pid>/task/*/sched every 50 ms (the last ≤ 50 ms of
    the run are missed)."""
    with tempfile.TemporaryDirectory(prefix="dbpool_tpcb_pgbench_") as tmp:
        prefix = os.path.join(tmp, "log")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [
            pgbench,
            *pgbench_args(db),
            "-n",
            "-c",
            str(clients),
            "-j",
            str(min(2, clients)),
            "-T",
            str(max(1, round(seconds))),
            "-l",
            f"--log-prefix={prefix}",
            DBNAME,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mig: int | None = None
        while proc.poll() is None:
            m = task_migrations(proc.pid)
            if m is not None:
                mig = m
            time.sleep(0.05)
        out, err = proc.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        m_tps = re.search(r"^tps = ([\d.]+)", out, re.M)
        if m_tps is None:
            raise RuntimeError(f"pgbench failed: {(err or out).strip().splitlines()[-1:]}")
        m_failed = re.search(r"number of failed transactions: (\d+)", out)
        failed = int(m_failed.group(1)) if m_failed else 0
        per_client: Counter[int] = Counter()
        lat: list[float] = []
        for path in Path(tmp).iterdir():
            for line in path.read_text().splitlines():
                fields = line.split()
                # client_id transaction_no time script_no time_epoch time_us
                if len(fields) >= 6 and fields[2].isdigit():
                    per_client[int(fields[0])] += 1
                    lat.append(int(fields[2]) / 1000)
    committed = len(lat)
    per = max(committed, 1)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return RunResult(
        tps=float(m_tps.group(1)),
        p50=percentile(lat, 50),
        p99=percentile(lat, 99),
        max=max(lat, default=float("nan")),
        jain=jain([per_client[c] for c in range(clients)]),
        cpu_ms=cpu * 1000 / per,
        migrations=None if mig is None else mig / per,
        errors={"failed transactions": failed} if failed else {},
        committed=committed,
    )
