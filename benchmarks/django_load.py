"""Django under load: requests/s and latency of examples/django_app, 64 clients, per backend.

    .venv/bin/python benchmarks/django_load.py          # about 6 minutes
    .venv/bin/python benchmarks/django_load.py --databases postgresql --only dbpool,pool

The example project (one view, two queries: a product and a count) is served by
gunicorn, one gthread worker with a thread per client, and loaded by
examples/django_app/loadtest.py in its own process: 64 keep-alive clients, each
asking again as soon as it has its answer, for ``--seconds`` of wall time after
``--warmup`` unmeasured seconds. Every run gets a fresh server. Contenders alternate
within a round, the starting one rotating; tables show medians over ``--rounds``, and
the ratios are paired within each round.

PostgreSQL: stock Django with ``CONN_MAX_AGE=0`` (a connection per request), stock
with ``CONN_MAX_AGE=60`` (a persistent connection per thread), Django's own pool
(psycopg_pool, ``min_size=max_size=4``) and dbpool's backend with
``connection_limit=4``. MariaDB: stock (over PyMySQL as MySQLdb) with
``CONN_MAX_AGE=0`` and ``60``, and stock ``CONN_MAX_AGE=0`` with PyMySQL's
``ssl_disabled`` (see ``stock_without_tls_attempt``), against dbpool's backend with
``connection_limit=4``. No other contender has driver options in ``OPTIONS``.

While each run goes on, the server is asked every 50 ms how many connections the
app holds (``pg_stat_activity`` and MariaDB's processlist, by the benchmark's own
database); the table shows the most seen. "server CPU ms/request" is the CPU time of
gunicorn's processes in the measured window per answer: the app's cost of a request,
which other load on a shared machine disturbs much less than requests/s.

gunicorn (all its threads) is pinned to CPU 0 and the load generator to CPU 1
(``--no-pin`` to let them float); the database servers run where the OS puts them.
The app's worker is bound by its GIL, so it needs one CPU; pinning keeps the load
generator and the app from trading places between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import fmt_rate, markdown_table, median, progress, selected

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "django_app"
LIMIT = 4  # connections for the pooled contenders
SAMPLE_EVERY = 0.05  # seconds between looks at the server's connections
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "admin_db": "test"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root", "admin_db": "test"}


# --------------------------------------------------------------------------- servers


class Postgres:
    label = "PostgreSQL"

    def __init__(self, database: str) -> None:
        self.database = database

    def admin(self, dbname: str | None = None) -> Any:
        import psycopg

        return psycopg.connect(
            host=PG["host"], port=PG["port"], user=PG["user"],
            dbname=dbname or PG["admin_db"], autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def create(self) -> None:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def drop(self) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def counter(self) -> Callable[[], int]:
        conn = self.admin()  # connected to another database: it does not count itself

        def count() -> int:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            return int(conn.execute(sql, (self.database,)).fetchone()[0])

        count.close = conn.close  # type: ignore[attr-defined]
        return count

    def stock(self, **extra: Any) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": self.database, "USER": PG["user"], "HOST": PG["host"], "PORT": PG["port"],
            **extra,
        }  # fmt: skip

    def dbpool_url(self) -> str:
        return (
            f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}"
            f"?connection_limit={LIMIT}"
        )


class MariaDB:
    label = "MariaDB"

    def __init__(self, database: str) -> None:
        self.database = database

    def admin(self) -> Any:
        import pymysql

        return pymysql.connect(
            host=MY["host"], port=MY["port"], user=MY["user"], autocommit=True,
            connect_timeout=5,
        )  # fmt: skip

    def create(self) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.database}`")
        conn.close()

    def drop(self) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        conn.close()

    def counter(self) -> Callable[[], int]:
        conn = self.admin()  # connected to no database: it does not count itself

        def count() -> int:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM information_schema.processlist WHERE db = %s",
                    (self.database,),
                )
                return int(cur.fetchone()[0])

        count.close = conn.close  # type: ignore[attr-defined]
        return count

    def stock(self, **extra: Any) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": self.database, "USER": MY["user"], "HOST": MY["host"], "PORT": MY["port"],
            **extra,
        }  # fmt: skip

    def dbpool_url(self) -> str:
        return (
            f"mysql://{MY['user']}@{MY['host']}:{MY['port']}/{self.database}"
            f"?connection_limit={LIMIT}"
        )


Server = Postgres | MariaDB

# Stock Django's MySQL backend wants mysqlclient; PyMySQL stands in for it.
PYMYSQL_AS_MYSQLDB = "import pymysql\npymysql.install_as_MySQLdb()\n"


# --------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Contender:
    name: str
    servers: tuple[str, ...]  # labels of the servers it runs on
    # settings(server) -> the body of a settings module after `from djapp.settings import *`
    settings: Callable[[Any], str]


def databases(entry: object) -> str:
    return f"DATABASES = {{'default': {entry!r}}}\n"


def stock(conn_max_age: int) -> Callable[[Any], str]:
    def settings(server: Server) -> str:
        preamble = PYMYSQL_AS_MYSQLDB if isinstance(server, MariaDB) else ""
        return preamble + databases(server.stock(CONN_MAX_AGE=conn_max_age))

    return settings


def stock_without_tls_attempt(server: Server) -> str:
    # PyMySQL 2 tries TLS by default ("preferred") and builds an SSL context, loading the
    # system's CA certificates, for every new connection: about 25 ms of CPU each here.
    entry = server.stock(CONN_MAX_AGE=0, OPTIONS={"ssl_disabled": True})
    return PYMYSQL_AS_MYSQLDB + databases(entry)


def native_pool(server: Server) -> str:
    pool = {"min_size": LIMIT, "max_size": LIMIT}
    return databases(server.stock(OPTIONS={"pool": pool}))


def dbpool_backend(server: Server) -> str:
    return (
        "from dbpool.contrib.django import config\n"
        f"DATABASES = {{'default': config({server.dbpool_url()!r})}}\n"
    )


BOTH = ("PostgreSQL", "MariaDB")
CONTENDERS = [
    Contender("stock, CONN_MAX_AGE=0", BOTH, stock(0)),
    Contender("stock, CONN_MAX_AGE=0, ssl_disabled", ("MariaDB",), stock_without_tls_attempt),
    Contender("stock, CONN_MAX_AGE=60", BOTH, stock(60)),
    Contender(f"Django pool (psycopg_pool, {LIMIT})", ("PostgreSQL",), native_pool),
    Contender(f"dbpool, connection_limit={LIMIT}", BOTH, dbpool_backend),
]
REFERENCE = "stock, CONN_MAX_AGE=0"
NATIVE = CONTENDERS[3].name


# --------------------------------------------------------------------------- one run


class Sampler:
    """Ask the server how many connections the app holds, every SAMPLE_EVERY s, in a thread."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count
        self.most = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            self.most = max(self.most, self.count())

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def python_path(workdir: Path) -> str:
    """The generated settings modules, the example project, then the caller's own path."""
    return os.pathsep.join(filter(None, [str(workdir), str(APP), os.environ.get("PYTHONPATH")]))


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def run_once(
    server: Server, contender: Contender, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One fresh gunicorn under load; the load generator's summary plus the most server
    connections seen."""
    module = f"bench_{slug(server.label)}_{slug(contender.name)}".replace("-", "_")
    (workdir / f"{module}.py").write_text(
        "from djapp.settings import *  # noqa: F403\n" + contender.settings(server)
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": python_path(workdir),
        "DATABASE_URL": server.dbpool_url(),  # read by djapp.settings, then replaced
    }
    command = [
        sys.executable, str(APP / "loadtest.py"), "--serve",
        "--clients", str(args.clients), "--seconds", str(args.seconds),
        "--warmup", str(args.warmup),
    ]  # fmt: skip
    if args.pin:
        command += ["--server-cpus", "0", "--client-cpus", "1"]
    count = server.counter()
    try:
        with Sampler(count) as sampler:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    finally:
        count.close()  # type: ignore[attr-defined]
    if done.returncode != 0:
        raise RuntimeError(f"load test failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["server_connections"] = sampler.most
    if done.stderr.strip():
        summary["stderr"] = done.stderr[-2000:]
    return summary


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def database(server: Server, workdir: Path) -> Iterator[None]:
    """The benchmark's database, with the example's table and products, dropped at the end."""
    server.create()
    try:
        module = f"bench_{slug(server.label)}_migrate"
        (workdir / f"{module}.py").write_text(
            "from djapp.settings import *  # noqa: F403\n" + stock(0)(server)
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": module,
            "PYTHONPATH": python_path(workdir),
            "DATABASE_URL": server.dbpool_url(),
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=APP, env=env, check=True
        )
        yield
    finally:
        server.drop()


def paired_ratio(rates: list[float], base: list[float]) -> str:
    return f"{median([a / b for a, b in zip(rates, base, strict=True)]):.2f}x"


def report(label: str, results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    names = list(results)
    baselines = [b for b in (REFERENCE, NATIVE) if b in results]
    rows = []
    for name in names:
        runs = results[name]
        rates = [r["requests_per_second"] for r in runs]
        rows.append(
            [
                label,
                name,
                fmt_rate(median(rates)),
                f"{fmt_rate(min(rates))} / {fmt_rate(max(rates))}",
                *(
                    paired_ratio(rates, [r["requests_per_second"] for r in results[b]])
                    for b in baselines
                ),
                f"{median([r['p50_ms'] for r in runs]):.1f}",
                f"{median([r['p99_ms'] for r in runs]):.1f}",
                f"{median([r['server_cpu_ms_per_request'] for r in runs]):.2f}",
                str(sum(r["errors"] for r in runs)),
                str(max(r["server_connections"] for r in runs)),
            ]
        )
    headers = [
        "database",
        "contender",
        "requests/s",
        "min / max",
        *(f"vs {b}" for b in baselines),
        "p50 ms",
        "p99 ms",
        "server CPU ms/request",
        f"errors ({args.rounds} runs)",
        "server connections (max)",
    ]
    return markdown_table(headers, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured wall time per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured lead-in per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--databases", default="postgresql,mariadb", help="comma-separated: postgresql,mariadb"
    )
    parser.add_argument("--only", default="", help="run only contenders matching these")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin gunicorn to CPU 0 and the load generator to CPU 1",
    )
    args = parser.parse_args()
    args.pin = args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2

    wanted = args.databases.lower().split(",")
    suffix = secrets.token_hex(3)
    servers: list[Server] = []
    if "postgresql" in wanted:
        servers.append(Postgres(f"dbpool_djapp_bench_{suffix}"))
    if "mariadb" in wanted or "mysql" in wanted:
        servers.append(MariaDB(f"dbpool_djapp_bench_{suffix}"))

    tables: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="djapp-bench-") as tmp:
        workdir = Path(tmp)
        for server in servers:
            try:
                server.drop()  # also proves the server answers
            except Exception as exc:
                notes.append(
                    f"skipped {server.label}: {type(exc).__name__}: {exc}".splitlines()[0]
                )
                continue
            names = selected([c.name for c in CONTENDERS if server.label in c.servers], args.only)
            by_name = {c.name: c for c in CONTENDERS if c.name in names}
            results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            with database(server, workdir):
                for r in range(args.rounds):
                    k = r % len(names)
                    for name in [*names[k:], *names[:k]]:
                        progress(f"{server.label}, round {r + 1}/{args.rounds}: {name}")
                        summary = run_once(server, by_name[name], args, workdir)
                        progress(
                            f"  {summary['requests_per_second']:.0f} req/s, "
                            f"p99 {summary['p99_ms']:.1f} ms, errors {summary['errors']}, "
                            f"server connections {summary['server_connections']}"
                        )
                        results[name].append(summary)
            tables.append(report(server.label, results, args))
            for name, runs in results.items():
                kinds: dict[str, int] = {}
                for run in runs:
                    for kind, n in run["error_kinds"].items():
                        kinds[kind] = kinds.get(kind, 0) + n
                if kinds:
                    notes.append(f"{server.label}, {name}: errors {kinds}")

    print(
        f"### examples/django_app under load: {args.clients} keep-alive clients, gunicorn "
        f"gthread (1 worker, {args.clients} threads), one view with two queries\n"
    )
    pinned = "gunicorn pinned to CPU 0, load generator to CPU 1" if args.pin else "unpinned"
    print(
        f"{args.seconds:g} s measured per run after {args.warmup:g} s warm-up, medians of "
        f"{args.rounds} rounds; errors summed over the rounds; {pinned}\n"
    )
    for table in tables:
        print(table + "\n")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
