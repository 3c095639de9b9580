"""A serverless traffic spike against the test PostgreSQL server, shared by the spike test
(tests/integration/test_spike.py) and its benchmark (benchmarks/spike.py).

A spike is many short-lived "function instances" at once: each one an engine with
``connection_limit=1`` (as in examples/serverless_handler.py) that runs a few short
transactions, each holding its connection for a moment in ``pg_sleep``, and is disposed.
The instances are threads spread over several worker processes (this module, run as
``python -m tests.integration.spike_support``); every one of them is made before the
spike, so all start together when the parent says "go".

They log in as a role of their own (``spike_role``), an ordinary non-superuser role like an
application's, so PostgreSQL's superuser-reserved slots stay free for the watcher: a
superuser connection, opened before the spike, that samples the server's own view
(``pg_stat_activity``) throughout the run.

Protocol with a worker: the parent writes one JSON line (the URL and the workload) on its
stdin, so the password never shows in a process list; the worker makes its engines and
answers ``ready``; on ``go`` it starts its instances and, when all are done, prints one JSON
line, one ``[end, error, code, message]`` per instance (``end`` on the system-wide
monotonic clock, which every process shares on Linux).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from dbpool import make_url

ROOT = Path(__file__).resolve().parents[2]
ROLE_PREFIX = "dbpool_spike_"
TOO_MANY = "dbpool.exc.TooManyConnectionsError"
SAMPLE_EVERY = 0.02  # seconds between the watcher's looks at pg_stat_activity
READY_TIMEOUT = 120.0  # for the workers to start and make their engines (a loaded machine)
GONE_TIMEOUT = 30.0  # for the server to forget closed sessions; usually milliseconds


@dataclass(frozen=True)
class Spike:
    """The workload: how many instances, over how many processes, doing what."""

    instances: int
    processes: int
    queries: int = 3  # transactions per instance, one after another
    hold: float = 0.5  # seconds each transaction holds its connection (pg_sleep)
    pool_timeout: float = 0.5  # the instances' engines' setting
    # Generous: a connect that is merely slow while the server forks a hundred backends
    # must not turn into a timeout; refusals are what the spike is about.
    connect_timeout: float = 30.0

    def shares(self) -> list[int]:
        """How many instances each worker process runs (as even as it gets)."""
        q, r = divmod(self.instances, self.processes)
        return [q + (1 if k < r else 0) for k in range(self.processes)]


@dataclass(frozen=True)
class Outcome:
    """One instance: when it finished, and how it failed if it did."""

    seconds: float  # from the spike's start to its last query done (or to its failure)
    error: str | None = None  # the exception's module.class
    code: str | None = None  # its ``code`` attribute (P2037, ...), if any
    message: str | None = None  # its first line (dbpool's messages never hold a password)

    @property
    def kind(self) -> str:
        """The error as the tables show it, e.g. ``TooManyConnectionsError (P2037)``."""
        name = (self.error or "").rpartition(".")[2]
        return f"{name} ({self.code})" if self.code else name


@dataclass(frozen=True)
class SpikeRun:
    """What one spike did, seen from the instances and from the server."""

    spike: Spike
    outcomes: list[Outcome]
    wall: float  # seconds from the start to the last instance done
    role_peak: int  # most connections of the instances' role the server showed at once
    server_peak: int  # most client connections the server showed at once (anyone's)
    samples: int  # how many times the watcher looked

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def errors_by_kind(self) -> Counter[str]:
        return Counter(o.kind for o in self.failures)

    def latencies(self) -> list[float]:
        """Seconds from the start to the last query done, for the instances that finished."""
        return sorted(o.seconds for o in self.outcomes if o.error is None)


# --------------------------------------------------------------------------- the server


def admin_connect(admin_url: str) -> Any:
    """A psycopg connection as the (superuser) admin URL's user, in autocommit, outside
    every pool; dbpool-only query parameters in the URL are left out."""
    import psycopg

    url = make_url(admin_url)
    return psycopg.connect(
        host=url.host or "127.0.0.1", port=url.port or 5432, dbname=url.database or "postgres",
        user=url.username, password=url.password, autocommit=True,
    )  # fmt: skip


def server_limits(admin_url: str) -> tuple[int, int]:
    """(max_connections, superuser_reserved_connections) of the server."""
    with admin_connect(admin_url) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
        ).fetchone()
        return int(row[0]), int(row[1])


@dataclass(frozen=True)
class Role:
    """The application role the instances log in as."""

    name: str
    password: str

    def url(self, server_url: str) -> str:
        """``server_url`` as this role (password included: never print it)."""
        url = make_url(server_url).set(username=self.name, password=self.password)
        return url.render_as_string(hide_password=False)


def role_sessions(conn: Any, role: str) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
    return int(row.fetchone()[0])


def wait_until_gone(admin_url: str, role: str, timeout: float = GONE_TIMEOUT) -> int:
    """Wait for the server to forget the role's sessions; terminate what is left after
    ``timeout``. Returns how many were left (0 when all went away by themselves)."""
    with admin_connect(admin_url) as conn:
        deadline = time.monotonic() + timeout
        while (left := role_sessions(conn, role)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            deadline = time.monotonic() + timeout
            while role_sessions(conn, role) and time.monotonic() < deadline:
                time.sleep(0.05)
        return left


@contextlib.contextmanager
def spike_role(admin_url: str, *, connection_limit: int | None = None) -> Iterator[Role]:
    """A fresh LOGIN role (with a password, for PgBouncer's scram-sha-256), dropped at the
    end after its sessions are gone. ``connection_limit`` gives the role a CONNECTION
    LIMIT: a small spike then meets the same refusals without filling the server."""
    from psycopg import sql

    role = Role(f"{ROLE_PREFIX}{secrets.token_hex(4)}", secrets.token_urlsafe(18))
    limit = "" if connection_limit is None else f" CONNECTION LIMIT {int(connection_limit)}"
    with admin_connect(admin_url) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}" + limit).format(
                sql.Identifier(role.name), sql.Literal(role.password)
            )
        )
    try:
        yield role
    finally:
        wait_until_gone(admin_url, role.name, timeout=5)
        with admin_connect(admin_url) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role.name)))


class Watcher:
    """Samples the server's own view of its connections from a thread, until stopped:
    the most the role held at once, and the most client connections overall."""

    def __init__(self, admin_url: str, role: str) -> None:
        self._conn = admin_connect(admin_url)  # before the spike: it may fill the server
        self._role = role
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="spike-watcher", daemon=True)
        self.role_peak = 0
        self.server_peak = 0
        self.samples = 0
        self.error: BaseException | None = None

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                row = self._conn.execute(
                    "SELECT count(*) FILTER (WHERE usename = %s),"
                    " count(*) FILTER (WHERE backend_type = 'client backend')"
                    " FROM pg_stat_activity",
                    (self._role,),
                ).fetchone()
                self.role_peak = max(self.role_peak, int(row[0]))
                self.server_peak = max(self.server_peak, int(row[1]))
                self.samples += 1
                self._stop.wait(SAMPLE_EVERY)
        except BaseException as exc:  # raised by __exit__
            self.error = exc

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._conn.close()
        if self.error is not None and exc_info[0] is None:
            raise RuntimeError(f"the watcher failed: {self.error!r}") from self.error


# --------------------------------------------------------------------------- the spike


@dataclass
class Route:
    """How the instances reach the server, and what their sessions left behind."""

    url: str  # password included: never print it
    # The role's sessions the server still had GONE_TIMEOUT after the route was closed
    # (they were terminated then); 0 when every instance's connection went away by itself.
    lingering: int = 0


@contextlib.contextmanager
def direct(admin_url: str, role: Role) -> Iterator[Route]:
    """Straight to the server; at the end, waits until the server has forgotten the
    instances' sessions."""
    route = Route(role.url(admin_url))
    try:
        yield route
    finally:
        route.lingering = wait_until_gone(admin_url, role.name)


@contextlib.contextmanager
def through_pgbouncer(
    admin_url: str, role: Role, *, pool_size: int, clients: int
) -> Iterator[Route]:
    """Through a PgBouncer of the instances' own in transaction mode (at most
    ``pool_size`` server connections, ``clients`` client connections accepted), with
    ``pgbouncer=true``; at the end PgBouncer is stopped, which closes its server
    connections, and the server must forget them. Raises
    ``tests.pgbouncer.PgBouncerUnavailable`` when PgBouncer is missing or will not start."""
    from tests import pgbouncer

    bouncer = pgbouncer.start(
        role.url(admin_url), pool_mode="transaction", pool_size=pool_size,
        max_client_conn=clients,
    )  # fmt: skip
    url = make_url(bouncer.url).update_query({"pgbouncer": "true"})
    route = Route(url.render_as_string(hide_password=False))
    try:
        yield route
    finally:
        bouncer.stop()
        route.lingering = wait_until_gone(admin_url, role.name)


def run_spike(url: str, spike: Spike, *, admin_url: str, role: str) -> SpikeRun:
    """Start the workers, let every instance go at once against ``url`` (as ``role``), and
    watch the server throughout. Each instance disposes its engine when it is done; the
    server's sessions may outlive the call by a moment (see ``direct``)."""
    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(_worker(url, spike, n)) for n in spike.shares()]
        deadline = time.monotonic() + READY_TIMEOUT
        for proc, stderr in workers:
            if _read_line(proc, deadline) != "ready":
                raise RuntimeError(f"a spike worker did not start:\n{_tail(stderr)}")
        with Watcher(admin_url, role) as watcher:
            start = time.monotonic()
            for proc, _ in workers:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            outcomes: list[Outcome] = []
            for proc, stderr in workers:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if proc.returncode != 0:
                    raise RuntimeError(f"a spike worker failed:\n{_tail(stderr)}")
                for end, error, code, message in json.loads(out):
                    outcomes.append(Outcome(end - start, error, code, message))
    wall = max(o.seconds for o in outcomes)
    return SpikeRun(spike, outcomes, wall, watcher.role_peak, watcher.server_peak, watcher.samples)


@contextlib.contextmanager
def _worker(
    url: str, spike: Spike, instances: int
) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """A worker process running ``instances`` of the spike's instances, told what to do;
    killed at the end if it is still running. Its stderr goes to a file: a pipe nobody
    reads could fill up with log lines and stall it."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.spike_support"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert proc.stdin is not None
            config = {"url": url, "instances": instances, "spike": asdict(spike)}
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            proc.stdin.flush()
            yield proc, stderr
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The worker's next line, or "" when it ends or ``deadline`` passes first."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    return proc.stdout.readline().decode().strip() if ready else ""


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode(errors="replace")[-3000:]


# --------------------------------------------------------------------------- the worker


def _instance(engine: Any, spike: Spike, results: list[Any], i: int) -> None:
    """One function instance: a few transactions on its one connection, then it ends."""
    from dbpool import text

    hold = text("SELECT pg_sleep(:seconds)")
    try:
        for _ in range(spike.queries):
            with engine.begin() as conn:
                conn.execute(hold, {"seconds": spike.hold})
        results[i] = [time.monotonic(), None, None, None]
    except Exception as exc:
        lines = str(exc).splitlines() or [""]
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        results[i] = [time.monotonic(), name, getattr(exc, "code", None), lines[0][:300]]
    finally:
        engine.dispose()


def worker() -> None:
    import dbpool

    config = json.loads(sys.stdin.readline())
    spike = Spike(**config["spike"])
    engines = [
        dbpool.create_engine(
            config["url"],
            connection_limit=1,
            pool_timeout=spike.pool_timeout,
            connect_timeout=spike.connect_timeout,
        )
        for _ in range(config["instances"])
    ]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    results: list[Any] = [None] * len(engines)
    threads = [
        threading.Thread(target=_instance, args=(engine, spike, results, i))
        for i, engine in enumerate(engines)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    worker()
