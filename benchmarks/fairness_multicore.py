"""The price of strict FIFO on a multi-core machine, and fair designs that try to avoid it.

Issue 11's moonshot: unpinned, 64 threads sharing a pool of 8 on a 2-core machine,
strict FIFO runs pgbench's TPC-B-like transaction about a third slower than a barging
``queue.LifoQueue``. This script measures that gap and the throwaway pools that try to
close it, all over the same raw psycopg connections and the same transaction (BEGIN;
UPDATE accounts; SELECT abalance; UPDATE tellers; UPDATE branches; INSERT history;
COMMIT: seven round trips, random ids and delta as pgbench draws them):

| contender | what it does when a connection comes back and threads wait |
|---|---|
| ``lifo`` | the reference: ``queue.LifoQueue``; whoever asks first takes it (barging) |
| ``fifo`` | strict FIFO hand-off to the longest waiter (dbpool's rule, ~20 lines) |
| ``dbpool`` | ``dbpool.QueuePool`` itself |
| ``samecpu`` | hand-off to the oldest of the first ``WINDOW`` waiters that last ran on the returning thread's CPU (``sched_getcpu()``), a waiter overtaken ``BYPASS`` times is served next |
| ``quantum2`` | a thread that gave a connection back keeps it for its next checkout if that comes within ``GRACE`` s, once (2 checkouts per turn); else FIFO |
| ``pinhold`` | strict FIFO, and a thread is pinned to one CPU (the lowest it may use) from asking for a connection until it gives it back |
| ``pinhere`` | strict FIFO, and a thread is pinned to the CPU it asks on until it gives the connection back |

Every thread loops for the same wall time (after a warm-up) and records the wait of
each checkout; the columns are per transaction over the measured window. CPU
migrations and context switches come from ``/proc/self/task/<tid>/sched`` (the
kernel's ``se.nr_migrations`` and ``nr_switches`` for each worker thread), client CPU
from ``time.process_time()``, server CPU from ``/proc/<backend pid>/stat`` of the
pool's PostgreSQL backends (same machine; needs permission to read them).
``--cpus`` sets the affinity of the whole client (``0`` = one CPU, as a pinned
deployment runs; several ``--cpus`` alternate within each round). Before every run the
branches and tellers are vacuumed and the history truncated, as pgbench does.

    .venv/bin/python benchmarks/fairness_multicore.py --threads 64 --cpus 0,1 --cpus 0

It creates the database ``dbpool_fair`` (``pgbench -i``) and drops it at the end unless
``--keep``. Absolute figures drift; compare contenders within one table.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from _harness import jain, markdown_table, percentile, selected

ADMIN_URL = os.environ.get("DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
WINDOW = 4  # samecpu: how far down the queue a same-CPU waiter may be taken from
BYPASS = 4  # samecpu: a waiter overtaken this many times is served next
GRACE = 0.002  # quantum2: seconds a given-back connection stays reserved for its thread
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The CPU the calling thread runs on (glibc; Python's os module has no sched_getcpu).
sched_getcpu: Callable[[], int] = ctypes.CDLL(None, use_errno=True).sched_getcpu


# --------------------------------------------------------------------------- the work


@dataclass
class Slot:
    """One pooled connection with its cursor (made once, as dbpool's engine does)."""

    conn: Any
    cur: Any
    backend_pid: int


def tpcb(slot: Slot, rng: random.Random, scale: int) -> None:
    """pgbench's built-in tpcb-like script: 7 round trips (BEGIN ... COMMIT)."""
    aid = rng.randint(1, 100_000 * scale)
    tid = rng.randint(1, 10 * scale)
    bid = rng.randint(1, scale)
    delta = rng.randint(-5000, 5000)
    cur = slot.cur
    cur.execute(
        "UPDATE pgbench_accounts SET abalance = abalance + %s WHERE aid = %s", (delta, aid)
    )
    cur.execute("SELECT abalance FROM pgbench_accounts WHERE aid = %s", (aid,))
    cur.fetchone()
    cur.execute("UPDATE pgbench_tellers SET tbalance = tbalance + %s WHERE tid = %s", (delta, tid))
    cur.execute(
        "UPDATE pgbench_branches SET bbalance = bbalance + %s WHERE bid = %s", (delta, bid)
    )
    cur.execute(
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
        " VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP)",
        (tid, bid, aid, delta),
    )
    slot.conn.commit()


# --------------------------------------------------------------------------- the pools


class Waiter:
    __slots__ = ("bypassed", "cpu", "lock", "slot")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.slot: Slot | None = None
        self.cpu = -1
        self.bypassed = 0


class Fifo:
    """Strict FIFO: a returned connection goes straight to the longest waiter."""

    def __init__(self, slots: list[Slot]) -> None:
        self._lock = threading.Lock()
        self._idle = list(slots)
        self._waiters: deque[Waiter] = deque()

    def acquire(self) -> Slot:
        with self._lock:
            if self._idle:  # idle connections exist only while nobody waits
                return self._idle.pop()
            waiter = Waiter()
            self._enqueue(waiter)
        waiter.lock.acquire()
        assert waiter.slot is not None
        return waiter.slot

    def release(self, slot: Slot) -> None:
        with self._lock:
            if not self._waiters:
                self._idle.append(slot)
                return
            waiter = self._choose()
            waiter.slot = slot
        waiter.lock.release()

    def leave(self) -> None:
        """The calling thread stops using the pool."""

    def _enqueue(self, waiter: Waiter) -> None:
        self._waiters.append(waiter)

    def _choose(self) -> Waiter:
        return self._waiters.popleft()


class SameCpu(Fifo):
    """Prefer a waiter that last ran on this CPU, among the first WINDOW, overtaking
    nobody more than BYPASS times (so Jain stays ~1 and the extra wait is bounded)."""

    def _enqueue(self, waiter: Waiter) -> None:
        waiter.cpu = sched_getcpu()  # where it goes to sleep: its wake-up's prev_cpu
        self._waiters.append(waiter)

    def _choose(self) -> Waiter:
        waiters = self._waiters
        head = waiters[0]
        cpu = sched_getcpu()
        if head.cpu == cpu or head.bypassed >= BYPASS:
            return waiters.popleft()
        for i in range(1, min(WINDOW, len(waiters))):
            candidate = waiters[i]
            if candidate.bypassed >= BYPASS:
                break  # it may not be overtaken again: serve the head, in order
            if candidate.cpu == cpu:
                for j in range(i):
                    waiters[j].bypassed += 1
                del waiters[i]
                return candidate
        return waiters.popleft()


class Quantum2(Fifo):
    """A thread keeps the connection it gives back for its very next checkout, once.

    Not strict FIFO (the returning thread overtakes the waiters for one more turn), but
    every thread still gets the same share. A real pool would need a timer to pass on a
    reservation its thread never claims; here every thread asks again at once, and
    leave() passes it on when the thread stops.
    """

    def __init__(self, slots: list[Slot]) -> None:
        super().__init__(slots)
        self._reserved: dict[int, tuple[Slot, float]] = {}
        self._streak: dict[int, int] = {}

    def acquire(self) -> Slot:
        me = threading.get_ident()
        with self._lock:
            reserved = self._reserved.pop(me, None)
            if reserved is not None:
                self._streak[me] += 1
                return reserved[0]
            self._streak[me] = 1
        return super().acquire()

    def release(self, slot: Slot) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._waiters and self._streak.get(me, 0) < 2:
                self._reserved[me] = (slot, time.monotonic() + GRACE)
                return
        super().release(slot)

    def leave(self) -> None:
        with self._lock:
            reserved = self._reserved.pop(threading.get_ident(), None)
        if reserved is not None:
            super().release(reserved[0])


class PinHolders(Fifo):
    """Strict FIFO; from asking for a connection until giving it back, a thread runs on
    one CPU only (its wake-up, its queries and its GIL hand-offs all stay there)."""

    def __init__(self, slots: list[Slot]) -> None:
        super().__init__(slots)
        self._all = os.sched_getaffinity(0)
        self._home = {min(self._all)}

    def acquire(self) -> Slot:
        os.sched_setaffinity(0, self._home)  # per thread: Linux affinity is per task
        return super().acquire()

    def release(self, slot: Slot) -> None:
        super().release(slot)
        os.sched_setaffinity(0, self._all)


class PinHere(Fifo):
    """Strict FIFO; from asking for a connection until giving it back, a thread stays on
    the CPU it asked on (holders spread over the CPUs; nobody is moved to a home CPU)."""

    def __init__(self, slots: list[Slot]) -> None:
        super().__init__(slots)
        self._all = os.sched_getaffinity(0)

    def acquire(self) -> Slot:
        os.sched_setaffinity(0, {sched_getcpu()})
        return super().acquire()

    def release(self, slot: Slot) -> None:
        super().release(slot)
        os.sched_setaffinity(0, self._all)


class Lifo:
    """The reference: queue.LifoQueue; whoever asks first gets the connection (barging)."""

    def __init__(self, slots: list[Slot]) -> None:
        import queue

        self._queue: queue.LifoQueue[Slot] = queue.LifoQueue()
        for slot in slots:
            self._queue.put(slot)
        self.acquire = self._queue.get
        self.release = self._queue.put

    def leave(self) -> None:
        pass


class DbpoolQueuePool:
    """dbpool.QueuePool over the same connections (each proxy's driver connection)."""

    def __init__(self, slots: list[Slot]) -> None:
        import dbpool

        self._slot = {id(s.conn): s for s in slots}
        spare = list(slots)

        def creator() -> Any:
            if spare:
                return spare.pop().conn
            raise RuntimeError("dbpool asked for a connection beyond the 8 it was given")

        self._pool = dbpool.QueuePool(creator, connection_limit=len(slots), pool_timeout=0)
        held = [self._pool.connect() for _ in slots]  # open all 8 before the clock starts
        for proxy in held:
            proxy.close()

    def acquire(self) -> Any:
        return self._pool.connect()

    def release(self, proxy: Any) -> None:
        proxy.close()

    def slot_of(self, proxy: Any) -> Slot:
        return self._slot[id(proxy.driver_connection)]

    def leave(self) -> None:
        pass

    def close(self) -> None:
        self._pool.dispose()


POOLS: dict[str, Callable[[list[Slot]], Any]] = {
    "lifo": Lifo,
    "fifo": Fifo,
    "dbpool": DbpoolQueuePool,
    "samecpu": SameCpu,
    "quantum2": Quantum2,
    "pinhold": PinHolders,
    "pinhere": PinHere,
}


# --------------------------------------------------------------------------- measuring


def task_sched(tid: int) -> dict[str, float]:
    """The kernel's scheduler counters for one thread of this process."""
    wanted = {"se.nr_migrations", "nr_switches", "se.sum_exec_runtime"}
    out = {}
    with open(f"/proc/self/task/{tid}/sched") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name.strip() in wanted:
                out[name.strip()] = float(value)
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Result:
    tps: float
    jain: float
    never_served: int
    wait_p50_ms: float
    wait_p99_ms: float
    wait_max_ms: float
    migrations: float  # per transaction, all worker threads
    switches: float  # per transaction
    client_cpu_ms: float  # per transaction, whole process
    server_cpu_ms: float  # per transaction, the pool's backends
    extra: dict[str, float] = field(default_factory=dict)


def run_once(
    make_pool: Callable[[list[Slot]], Any],
    slots: list[Slot],
    threads: int,
    seconds: float,
    warmup: float,
    scale: int,
    cpus: set[int],
) -> Result:
    os.sched_setaffinity(0, cpus)  # the worker threads made below inherit it
    pool = make_pool(slots)
    window = [0.0, 0.0]
    counts = [0] * threads
    waits: list[list[float]] = [[] for _ in range(threads)]
    tids = [0] * threads
    asking = [0.0] * threads  # when each thread asked for the connection it waits for

    def start() -> None:
        window[0] = time.perf_counter() + warmup
        window[1] = window[0] + seconds

    barrier = threading.Barrier(threads + 1, action=start)
    read = threading.Event()

    def worker(i: int) -> None:
        tids[i] = threading.get_native_id()
        rng = random.Random(i)
        mine = waits[i]
        clock = time.perf_counter
        acquire, release = pool.acquire, pool.release
        slot_of = getattr(pool, "slot_of", None)
        barrier.wait()
        begin, end = window
        n = 0
        while (asked := clock()) < end:
            asking[i] = asked
            handle = acquire()
            got = clock()
            asking[i] = 0.0
            try:
                tpcb(slot_of(handle) if slot_of else handle, rng, scale)
            finally:
                release(handle)
            if begin <= got < end:  # a wait that ended in the window, however long
                mine.append(got - asked)
            if begin <= clock() < end:
                n += 1
        counts[i] = n
        pool.leave()
        read.wait()  # stay alive until the counters of every thread have been read

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    before = [task_sched(t) for t in tids]
    cpu0 = time.process_time()
    server0 = sum(process_cpu(s.backend_pid) for s in slots)
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    # Threads still waiting at the end (a barging pool's starved ones): count the wait so
    # far, else the longest waits would be the ones left out.
    still = [window[1] - t for t in list(asking) if 0.0 < t < window[1]]
    after = [task_sched(t) for t in tids]
    cpu1 = time.process_time()
    server1 = sum(process_cpu(s.backend_pid) for s in slots)
    read.set()
    for w in workers:
        w.join()
    if hasattr(pool, "close"):
        pool.close()
    total = sum(counts) or 1

    def per_txn(key: str) -> float:
        return sum(a[key] - b[key] for a, b in zip(after, before, strict=True)) / total

    every = [x for per in waits for x in per] + still
    return Result(
        tps=sum(counts) / seconds,
        jain=jain(counts),
        never_served=sum(1 for c in counts if c == 0),
        wait_p50_ms=percentile(every, 50) * 1e3,
        wait_p99_ms=percentile(every, 99) * 1e3,
        wait_max_ms=max(every, default=float("nan")) * 1e3,
        migrations=per_txn("se.nr_migrations"),
        switches=per_txn("nr_switches"),
        client_cpu_ms=(cpu1 - cpu0) / total * 1e3,
        server_cpu_ms=(server1 - server0) / total * 1e3,
    )


def run_count(
    make_pool: Callable[[list[Slot]], Any], slots: list[Slot], threads: int, n: int, scale: int
) -> int:
    """Every thread runs ``n`` transactions (no clock): for counting instructions under
    ``valgrind --tool=callgrind``, where time means nothing; the difference between two
    values of ``n`` is the cost of the extra transactions alone."""
    pool = make_pool(slots)
    slot_of = getattr(pool, "slot_of", None)
    barrier = threading.Barrier(threads)

    def worker(i: int) -> None:
        rng = random.Random(i)
        barrier.wait()
        for _ in range(n):
            handle = pool.acquire()
            try:
                tpcb(slot_of(handle) if slot_of else handle, rng, scale)
            finally:
                pool.release(handle)
        pool.leave()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if hasattr(pool, "close"):
        pool.close()
    return threads * n


# --------------------------------------------------------------------------- the database


def admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


@contextlib.contextmanager
def database(url: str, name: str, scale: int, keep: bool) -> Iterator[str]:
    """A pgbench-initialised database of its own; yields its URL."""
    from dbpool import make_url

    base = make_url(url)
    with admin(url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    target = url.rsplit("/", 1)[0] + f"/{name}"
    if not exists:
        env = dict(os.environ, PGHOST=base.host or "127.0.0.1", PGPORT=str(base.port or 5432))
        env["PGUSER"] = base.username or "postgres"
        if base.password:
            env["PGPASSWORD"] = base.password
        cmd = ["pgbench", "-i", "-q", "-s", str(scale), name]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    try:
        yield target
    finally:
        if not keep:
            with admin(url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_tables(url: str) -> None:
    """What pgbench does before a run (and a checkpoint), so that no run pays for the
    bloat or the dirty pages of the one before."""
    with admin(url) as conn:
        conn.execute("VACUUM pgbench_branches")
        conn.execute("VACUUM pgbench_tellers")
        conn.execute("TRUNCATE pgbench_history")
        conn.execute("CHECKPOINT")


def open_slots(url: str, n: int) -> list[Slot]:
    import psycopg

    slots = []
    for _ in range(n):
        conn = psycopg.connect(url, application_name="dbpool_fair_bench")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.commit()
        slots.append(Slot(conn, conn.cursor(), pid))
    return slots


# --------------------------------------------------------------------------- main


def cpu_set(text: str) -> frozenset[int]:
    return frozenset(int(c) for c in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--url", default=ADMIN_URL, help="a superuser URL of the server")
    parser.add_argument("--db", default="dbpool_fair", help="database to create and use")
    parser.add_argument("--scale", type=int, default=4, help="pgbench -s")
    parser.add_argument("--threads", default="64", help="comma-separated thread counts")
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured wall time per run")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="contenders whose name contains one of these")
    parser.add_argument(
        "--cpus", type=cpu_set, action="append", help="client affinity, e.g. 0 or 0,1 (repeat)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--count", type=int, help="untimed: N transactions per thread (callgrind)")
    args = parser.parse_args()
    names = selected(POOLS, args.only)
    affinities = args.cpus or [frozenset(os.sched_getaffinity(0))]
    thread_counts = [int(t) for t in args.threads.split(",")]
    configs = [(t, cpus, name) for t in thread_counts for cpus in affinities for name in names]
    runs: dict[tuple[int, frozenset[int], str], list[Result]] = {c: [] for c in configs}

    if args.count:
        with database(args.url, args.db, args.scale, keep=True) as url:
            for name in names:
                slots = open_slots(url, args.pool_size)
                try:
                    done = run_count(POOLS[name], slots, thread_counts[0], args.count, args.scale)
                finally:
                    for s in slots:
                        s.conn.close()
                print(f"{name}: {done} transactions")
        return 0

    with database(args.url, args.db, args.scale, args.keep) as url:
        for r in range(args.rounds):
            # rotate the starting contender from round to round; affinities alternate within
            for threads in thread_counts:
                for cpus in affinities:
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        fresh_tables(url)
                        slots = open_slots(url, args.pool_size)
                        try:
                            res = run_once(
                                POOLS[name], slots, threads, args.seconds, args.warmup,
                                args.scale, set(cpus),
                            )  # fmt: skip
                        finally:
                            for s in slots:
                                s.conn.close()
                        runs[threads, cpus, name].append(res)
                        cpu_text = ",".join(map(str, sorted(cpus)))
                        print(
                            f"round {r + 1} threads {threads} cpus {cpu_text} {name}: "
                            f"{res.tps:.0f} tps, Jain {res.jain:.2f}, max wait "
                            f"{res.wait_max_ms:.0f} ms, {res.migrations:.2f} migrations/txn",
                            file=sys.stderr,
                        )

    med = statistics.median
    rows = []
    for threads, cpus, name in configs:
        rs = runs[threads, cpus, name]
        ref = runs.get((threads, cpus, "lifo"))
        ratio = med([a.tps / b.tps for a, b in zip(rs, ref, strict=True)]) if ref else None
        fifo = runs.get((threads, cpus, "fifo"))
        wait_ratio = (
            med([a.wait_max_ms / b.wait_max_ms for a, b in zip(rs, fifo, strict=True)])
            if fifo
            else None
        )
        rows.append(
            [
                str(threads),
                ",".join(map(str, sorted(cpus))),
                name,
                f"{med([x.tps for x in rs]):.0f}",
                f"{min(x.tps for x in rs):.0f} / {max(x.tps for x in rs):.0f}",
                f"{ratio:.2f}x" if ratio else "-",
                f"{med([x.jain for x in rs]):.2f}",
                f"{med([x.wait_p99_ms for x in rs]):.0f}",
                f"{med([x.wait_max_ms for x in rs]):.0f}",
                f"{wait_ratio:.2f}x" if wait_ratio else "-",
                f"{med([x.migrations for x in rs]):.2f}",
                f"{med([x.switches for x in rs]):.1f}",
                f"{med([x.client_cpu_ms for x in rs]):.3f}",
                f"{med([x.server_cpu_ms for x in rs]):.3f}",
            ]
        )
    print(
        f"\npool of {args.pool_size}, {args.seconds:g} s per run after {args.warmup:g} s "
        f"warm-up, medians of {args.rounds} rounds; ratios paired within a round\n"
    )
    print(
        markdown_table(
            [
                "threads",
                "client CPUs",
                "pool",
                "tps",
                "min / max",
                "vs lifo",
                "Jain",
                "wait p99 ms",
                "max ms",
                "max vs fifo",
                "migrations/txn",
                "switches/txn",
                "client CPU ms/txn",
                "server CPU ms/txn",
            ],
            rows,
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [
                    {"threads": t, "cpus": sorted(c), "pool": n, "runs": [vars(x) for x in rs]}
                    for (t, c, n), rs in runs.items()
                ],
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
