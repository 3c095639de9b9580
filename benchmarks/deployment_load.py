"""docs/deployment.md's recipe under load: gunicorn workers pinned to CPUs, or not.

gunicorn (gthread, one worker per CPU) serves examples/gunicorn/app.py, a TPC-B-like
bank transfer per request on dbpool, with examples/gunicorn/gunicorn.conf.py: each
worker pinned to a CPU of its own and one thread per pooled connection. The variants
change one thing each: ``unpinned`` drops the ``post_fork`` pinning; ``threads=64``
gives each worker 64 threads for its 8 connections (requests then wait inside the
pool, in its FIFO queue, instead of in gunicorn's). A load generator in a process of
its own keeps ``--clients`` keep-alive HTTP clients busy for the same wall time; it runs
unpinned, like the database server, sharing the machine with the workers.

    .venv/bin/python benchmarks/deployment_load.py --rounds 3

Per variant: requests/s, p50/p99/max latency, errors, and per request the CPU
migrations of the workers' threads (``/proc/<pid>/task/*/sched``) and the workers' CPU.
Variants alternate within a round with a rotating start, each with a fresh server;
the tables and history are vacuumed and truncated before each run. It creates the
database ``dbpool_deploy_bench`` (``pgbench -i``) and drops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _harness import markdown_table, percentile
from fairness_multicore import ADMIN_URL, database, fresh_tables

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gunicorn"
VARIANTS = {
    "pinned, threads = limit (the recipe)": "",
    "unpinned, threads = limit": "def post_fork(server, worker):\n    pass\n",
    "pinned, threads=64": "threads = 64\n",
    "unpinned, threads=64": "threads = 64\ndef post_fork(server, worker):\n    pass\n",
}


# --------------------------------------------------------------------------- the clients


def load(port: int, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """``clients`` keep-alive clients asking /transfer until one shared deadline."""
    window = [0.0, 0.0]

    def start() -> None:
        window[0] = time.perf_counter() + warmup
        window[1] = window[0] + seconds

    barrier = threading.Barrier(clients, action=start)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[Counter[str]] = [Counter() for _ in range(clients)]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, failed = latencies[i], errors[i]
        barrier.wait()
        begin, end = window
        clock = time.perf_counter
        while (sent := clock()) < end:
            try:
                conn.request("GET", "/transfer")
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                failed[type(exc).__name__] += 1
                conn.close()
                continue
            received = clock()
            if response.status != 200:
                failed[f"HTTP {response.status}"] += 1
            elif begin <= received < end:
                mine.append(received - sent)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [x for per in latencies for x in per]
    return {
        "rps": len(every) / seconds,
        "p50_ms": percentile(every, 50) * 1e3,
        "p99_ms": percentile(every, 99) * 1e3,
        "max_ms": max(every, default=float("nan")) * 1e3,
        "errors": sum(sum(c.values()) for c in errors),
        "requests": len(every),
    }


# --------------------------------------------------------------------------- the server


def workers_of(arbiter: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(arbiter).children()]


def counters(pids: list[int]) -> tuple[float, float]:
    """(CPU migrations of every thread, CPU seconds) of these processes so far."""
    migrations = 0.0
    cpu = 0.0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{tid}/sched") as f,
            ):
                for line in f:
                    if line.startswith("se.nr_migrations"):
                        migrations += float(line.partition(":")[2])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return migrations, cpu


@contextlib.contextmanager
def serve(database_url: str, extra_config: str, scale: int) -> Iterator[tuple[int, int]]:
    """gunicorn with the example configuration plus ``extra_config``; (port, arbiter pid)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "variant.conf.py"
        base = EXAMPLE / "gunicorn.conf.py"
        config.write_text(f"exec(open({str(base)!r}).read())\n{extra_config}")
        listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
        port = listener.getsockname()[1]
        command = [
            sys.executable, "-m", "gunicorn", "-c", str(config),
            "--bind", f"fd://{listener.fileno()}", "--log-level", "warning",
            "app:application",
        ]  # fmt: skip
        env = dict(os.environ, DATABASE_URL=database_url, TPCB_SCALE=str(scale))
        server = subprocess.Popen(command, cwd=EXAMPLE, env=env, pass_fds=[listener.fileno()])
        listener.close()
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/worker")
                    conn.getresponse().read()
                    conn.close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("gunicorn did not start") from None
                    time.sleep(0.1)
            yield port, server.pid
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def run_once(url: str, extra: str, args: argparse.Namespace) -> dict[str, Any]:
    with serve(url, extra, args.scale) as (port, arbiter):
        workers = workers_of(arbiter)
        # The load generator runs in a process of its own (its own GIL).
        command = [
            sys.executable, __file__, "--client", str(port), "--clients", str(args.clients),
            "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        ]  # fmt: skip
        client = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        time.sleep(args.warmup + 0.3)  # the clients' warm-up: roughly when the window opens
        m0, c0 = counters(workers)
        time.sleep(args.seconds - 0.6)
        m1, c1 = counters(workers)
        out, _ = client.communicate(timeout=args.seconds + args.warmup + 120)
    result: dict[str, Any] = json.loads(out)
    served = result["rps"] * (args.seconds - 0.6)  # requests in the sampled stretch, about
    result["migrations"] = (m1 - m0) / max(served, 1)
    result["worker_cpu_ms"] = (c1 - c0) / max(served, 1) * 1e3
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--url", default=ADMIN_URL, help="a superuser URL of the server")
    parser.add_argument("--db", default="dbpool_deploy_bench")
    parser.add_argument("--scale", type=int, default=4, help="pgbench -s")
    parser.add_argument("--limit", type=int, default=8, help="connection_limit per worker")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="variants whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)  # internal: load a port
    args = parser.parse_args()
    if args.client:
        json.dump(load(args.client, args.clients, args.seconds, args.warmup), sys.stdout)
        return 0

    names = [n for n in VARIANTS if args.only in n]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with database(args.url, args.db, args.scale, args.keep) as url:
        app_url = f"{url}?connection_limit={args.limit}&application_name=dbpool_deploy_bench"
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fresh_tables(url)
                res = run_once(app_url, VARIANTS[name], args)
                runs[name].append(res)
                print(f"round {r + 1} {name}: {json.dumps(res)}", file=sys.stderr)

    med = statistics.median
    base = runs.get(names[0], [])
    rows = []
    for name in names:
        rs = runs[name]
        ratio = med([a["rps"] / b["rps"] for a, b in zip(rs, base, strict=True)])
        rows.append(
            [
                name,
                f"{args.clients}",
                f"{med([x['rps'] for x in rs]):.0f}",
                f"{min(x['rps'] for x in rs):.0f} / {max(x['rps'] for x in rs):.0f}",
                f"{ratio:.2f}x",
                f"{med([x['p50_ms'] for x in rs]):.0f}",
                f"{med([x['p99_ms'] for x in rs]):.0f}",
                f"{med([x['max_ms'] for x in rs]):.0f}",
                str(sum(x["errors"] for x in rs)),
                f"{med([x['migrations'] for x in rs]):.2f}",
                f"{med([x['worker_cpu_ms'] for x in rs]):.2f}",
            ]
        )
    cpus = len(os.sched_getaffinity(0))
    print(
        f"\ngunicorn gthread, {cpus} workers, connection_limit={args.limit} per worker, "
        f"{args.seconds:g} s measured after {args.warmup:g} s warm-up, medians of "
        f"{args.rounds} rounds; errors summed; vs = paired ratio to the first row\n"
    )
    headers = [
        "variant", "clients", "requests/s", "min / max", "vs recipe", "p50 ms", "p99 ms",
        "max ms", "errors", "worker migrations/request", "worker CPU ms/request",
    ]  # fmt: skip
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
