"""Load the product view with concurrent keep-alive clients; print a JSON summary.

    python loadtest.py http://127.0.0.1:8000 --clients 64 --seconds 5 --warmup 2
    python loadtest.py --serve --clients 64 --seconds 5

The first form loads a server that is already running. ``--serve`` starts one here
(gunicorn, one gthread worker with a thread per client, on a free loopback port, this
directory's ``djapp`` with ``DATABASE_URL`` and ``DJANGO_SETTINGS_MODULE`` from the
environment), loads it, and stops it.

Every client is a thread with its own HTTP/1.1 keep-alive connection that asks for
``/products/<id>/`` again and again until one shared deadline; ids cycle over the 50
sample products. The clock is time-based (every client works for the same wall time)
and the first ``--warmup`` seconds are not measured: requests/s and the latencies are
those of the answers received within the measured window. An error is any answer
other than 200 and any failed request (the client then reconnects); errors are counted
over the whole run, warm-up included. Run it in its own process, not in the server's:
the clients must not share the server's GIL. After the load, the summary also holds
what ``/pool/`` answers (the backend and its pool's status, as the server sees them).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

HERE = Path(__file__).resolve().parent
SAMPLE_PRODUCTS = 50  # as created by catalog/migrations/0001_initial.py


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def run(
    url: str,
    clients: int,
    seconds: float,
    warmup: float,
    timeout: float,
    server_cpu: Callable[[], float] | None = None,
) -> dict:
    """Load ``url``; ``server_cpu()``, if given, is the server's CPU seconds so far."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    measure_from = [0.0]
    deadline = [0.0]

    def start() -> None:
        measure_from[0] = time.perf_counter() + warmup
        deadline[0] = measure_from[0] + seconds

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[Counter[str]] = [Counter() for _ in range(clients)]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        done = latencies[i]
        failed = errors[i]
        n = i
        barrier.wait()
        clock = time.perf_counter
        begin, end = measure_from[0], deadline[0]
        while (sent := clock()) < end:
            path = f"/products/{n % SAMPLE_PRODUCTS + 1}/"
            n += clients
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                failed[type(exc).__name__] += 1
                conn.close()  # the next request reconnects
                continue
            received = clock()
            if response.status != 200:
                failed[f"HTTP {response.status}"] += 1
            elif begin <= received <= end:
                done.append(received - sent)
        conn.close()

    window_cpu: list[float] = []  # the server's CPU seconds as the window opens and closes

    def watch_cpu(read: Callable[[], float]) -> None:
        started.wait()
        for moment in (measure_from[0], deadline[0]):
            time.sleep(max(0.0, moment - time.perf_counter()))
            window_cpu.append(read())

    started = threading.Event()
    barrier = threading.Barrier(clients, action=lambda: (start(), started.set()))
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if server_cpu is not None:
        threads.append(threading.Thread(target=watch_cpu, args=(server_cpu,), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    every = [x for per_client in latencies for x in per_client]
    error_kinds = sum(errors, Counter())
    summary = {
        "clients": clients,
        "seconds": seconds,
        "requests": len(every),
        "requests_per_second": len(every) / seconds,
        "p50_ms": percentile(every, 50) * 1000,
        "p99_ms": percentile(every, 99) * 1000,
        "max_ms": max(every, default=float("nan")) * 1000,
        "clients_served": sum(1 for per_client in latencies if per_client),
        "errors": sum(error_kinds.values()),
        "error_kinds": dict(error_kinds),
    }
    if len(window_cpu) == 2:
        cpu_per_request = (window_cpu[1] - window_cpu[0]) / max(len(every), 1)
        summary["server_cpu_ms_per_request"] = cpu_per_request * 1000
    return summary


def get_json(url: str, path: str, timeout: float) -> object:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:500]!r}")
    return json.loads(body)


@dataclass(frozen=True)
class Served:
    """A running gunicorn: where it listens, and the process id of its arbiter."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the arbiter and its workers so far."""
        arbiter = psutil.Process(self.pid)
        total = 0.0
        for process in [arbiter, *arbiter.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total


@contextlib.contextmanager
def gunicorn(
    threads: int,
    env: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[Served]:
    """Serve djapp with gunicorn (one gthread worker) on a free loopback port.

    ``env`` is the server's environment (``DATABASE_URL``...), this process's by default;
    ``cpus`` the CPUs it may run on (Linux), all by default.
    The listening socket is made here and handed to gunicorn (``fd://``), so the port is
    never free for someone else to take between choosing it and binding it.
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    command = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gthread", "--workers", "1", "--threads", str(threads),
        "--bind", f"fd://{listener.fileno()}", "--chdir", str(HERE),
        "--log-level", "warning", "--graceful-timeout", "10",
        "djapp.wsgi:application",
    ]  # fmt: skip
    # Set in the child before gunicorn starts, so that every process and thread inherits it.
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    server = subprocess.Popen(command, pass_fds=[listener.fileno()], env=env, preexec_fn=pin)
    listener.close()  # gunicorn holds it now
    try:
        deadline = time.monotonic() + startup_timeout
        while True:  # the socket accepts at once; the worker answers once Django is loaded
            try:
                get_json(url, "/pool/", timeout=startup_timeout)
                break
            except OSError as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    why = f"gunicorn did not start (exit code {server.poll()})"
                    raise RuntimeError(why) from exc
                time.sleep(0.1)
        yield Served(url, server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cpu_list(text: str) -> set[int]:
    return {int(cpu) for cpu in text.split(",")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("url", nargs="?", help="a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--serve", action="store_true", help="start gunicorn here and load it")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured wall time")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request")
    parser.add_argument("--server-cpus", type=cpu_list, help="with --serve: e.g. 0 (Linux)")
    parser.add_argument("--client-cpus", type=cpu_list, help="the clients' CPUs, e.g. 1")
    args = parser.parse_args()
    if bool(args.url) == args.serve:
        parser.error("give either a server URL or --serve")
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)  # before any thread exists: all inherit it

    def load(url: str, server_cpu: Callable[[], float] | None = None) -> dict:
        summary = run(url, args.clients, args.seconds, args.warmup, args.timeout, server_cpu)
        summary["pool"] = get_json(url, "/pool/", args.timeout)
        return summary

    if args.serve:
        with gunicorn(threads=args.clients, cpus=args.server_cpus) as server:
            summary = load(server.url, server.cpu_seconds)
    else:
        summary = load(args.url)
    json.dump(summary, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
