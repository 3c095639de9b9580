"""Run a selection of Django's own test suite on Django's stock backends and on dbpool's,
on PostgreSQL and on MariaDB, and compare the outcomes test by test.

    .venv/bin/python tests/django_suite/run.py [--database postgresql] [--backend dbpool]
                                               [--apps basic transactions] [--parallel N]

The suite is the sdist of the Django version installed in the running interpreter
(``pip download --no-binary :all: django==<version>``), fetched and unpacked once into
.cache/django-suite/. Its ``tests/runtests.py`` runs against that *installed* Django
(the one dbpool's backends import), never the sdist's own copy: PYTHONPATH holds only
the settings package here, and each run records the Django it imported, which must be
the sdist's version.

Exit status 0 only when every run finished and dbpool fails no test that the stock
backend does not fail. A server that cannot be reached skips its database, or fails
the run under DBPOOL_REQUIRE_DATABASES=1 (as CI sets it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dbpool import DBPoolError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = REPO / ".cache" / "django-suite"

# Chosen for what a pool can break: connection open/close and reuse (backends,
# handlers, servers, test_utils), transactions and savepoints (transactions,
# transaction_hooks, select_for_update, get_or_create), several aliases
# (multiple_database), session state set per connection (timezones, db_functions,
# introspection, schema), and the everyday ORM on top. About 3,500 tests, about a
# minute a run on an idle 2-core machine. `migrations` (784 tests, 30 s more per run)
# is left out for time only.
APPS = (
    "basic",
    "transactions",
    "transaction_hooks",
    "backends",
    "select_for_update",
    "get_or_create",
    "update",
    "delete",
    "delete_regress",
    "bulk_create",
    "lookup",
    "aggregation",
    "expressions",
    "queries",
    "raw_query",
    "db_functions",
    "model_fields",
    "many_to_one",
    "one_to_one",
    "m2m_through",
    "custom_pk",
    "signals",
    "save_delete_hooks",
    "fixtures",
    "multiple_database",
    "handlers",
    "servers",
    "test_utils",
    "timezones",
    "introspection",
    "schema",
)

DATABASES = {
    "postgresql": os.environ.get(
        "DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("DBPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ("stock", "dbpool")
REQUIRE_DATABASES = os.environ.get("DBPOOL_REQUIRE_DATABASES") == "1"
# The prefix in djs_settings/base.py: test databases are test_dbpool_djs_<side>_<alias>.
SIDE_PREFIX = {
    ("postgresql", "stock"): "pg_stock",
    ("postgresql", "dbpool"): "pg_dbpool",
    ("mysql", "stock"): "my_stock",
    ("mysql", "dbpool"): "my_dbpool",
}


@dataclass
class Run:
    database: str
    backend: str
    seconds: float = 0.0
    crashed: str = ""  # why no result was recorded; empty when the run finished
    outcome: dict[str, Any] = field(default_factory=dict)
    leftover_databases: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.database}-{self.backend}"

    @property
    def settings(self) -> str:
        return f"djs_settings.{self.database}_{self.backend}"

    def ids(self, *kinds: str) -> set[str]:
        found: set[str] = set()
        for kind in kinds:
            found.update(self.outcome.get(kind, ()))
        return found

    @property
    def bad(self) -> set[str]:
        return self.ids("failures", "errors", "unexpected_successes")

    def count(self, kind: str) -> int:
        return len(self.outcome.get(kind, ()))


# --- the Django sdist ---------------------------------------------------------------


def django_tests_dir(version: str) -> Path:
    """The unpacked sdist's tests/ directory, downloading and unpacking it on first use."""
    unpacked = CACHE / f"django-{version}"
    if (unpacked / "tests" / "runtests.py").is_file():
        return unpacked / "tests"
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = next(iter(sorted(CACHE.glob(f"[dD]jango-{version}.tar.gz"))), None)
    if archive is None:
        archive = download_sdist(version)
    # Unpack beside the target and rename, so an interrupted unpack is never mistaken
    # for a complete one.
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=CACHE))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:  # Python < 3.10.12 / 3.11.4
                tar.extractall(staging)
        (top,) = staging.iterdir()
        shutil.rmtree(unpacked, ignore_errors=True)
        top.rename(unpacked)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return unpacked / "tests"


def download_sdist(version: str) -> Path:
    print(f"downloading the Django {version} sdist from PyPI ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="download-", dir=CACHE) as scratch:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--no-binary", ":all:", f"django=={version}", "--dest", scratch),
            ],
            check=True,
        )
        (downloaded,) = Path(scratch).glob("*.tar.gz")
        return Path(shutil.move(downloaded, CACHE / downloaded.name))


# --- servers and their leftovers ----------------------------------------------------


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def drop_test_databases(database: str, side: str) -> list[str]:
    """Drop what a run left of its test databases (clones included); return their names.

    A finished run destroys its own: anything found here is a finding in itself.
    """
    import dbpool

    pattern = f"test_dbpool_djs_{side}_%"
    if database == "postgresql":
        listing = "SELECT datname FROM pg_database WHERE datname LIKE :pattern"
        drop = 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'
    else:
        listing = "SELECT schema_name FROM information_schema.schemata"
        listing += " WHERE schema_name LIKE :pattern"
        drop = "DROP DATABASE IF EXISTS `{}`"
    # DROP DATABASE cannot run inside a transaction block on PostgreSQL.
    url = DATABASES[database]
    with dbpool.create_engine(url, connection_limit=1, isolation_level="AUTOCOMMIT") as engine:
        with engine.connect() as conn:
            names = sorted(conn.execute(dbpool.text(listing), {"pattern": pattern}).scalars())
            for name in names:
                conn.exec_driver_sql(drop.format(name))
    return names


# --- one run ------------------------------------------------------------------------


def results_dir(django_version: str) -> Path:
    """Where a Django version's logs, per-test outcomes and summaries go."""
    return CACHE / f"results-{django_version}"


def run_suite(
    run: Run,
    tests_dir: Path,
    logs: Path,
    apps: list[str],
    *,
    parallel: int,
    timeout: float,
    verbose: bool,
) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{run.name}.log"
    result_path = logs / f"{run.name}.json"
    result_path.unlink(missing_ok=True)
    env = {
        **os.environ,
        # Only the settings package: the sdist's own django/ stays off the path, so the
        # installed Django is what runs.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "DBPOOL_DJS_RESULT": str(result_path),
    }
    command = [sys.executable, "runtests.py", f"--settings={run.settings}", "--noinput"]
    command += [f"--parallel={parallel}", *apps]
    label = f"{run.database} / {run.backend}"
    print(f"--> {label}: log in {log_path.relative_to(REPO)}", flush=True)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            cwd=tests_dir,
            env=env,
            stdout=subprocess.PIPE if verbose else log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so a timeout ends the test processes it forked too
        )
        if verbose:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                print(line, end="", flush=True)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = None
    run.seconds = time.monotonic() - started
    if result_path.is_file():
        run.outcome = json.loads(result_path.read_text(encoding="utf-8"))
    elif returncode is None:
        run.crashed = f"no result after {timeout:.0f} s (killed)"
    else:
        run.crashed = f"runtests.py exited {returncode} before any result was recorded"
    side = SIDE_PREFIX[run.database, run.backend]
    try:
        run.leftover_databases = drop_test_databases(run.database, side)
    except DBPoolError as exc:  # the server went away: the run's own result says more
        print(f"    could not check for leftover test databases: {exc}", flush=True)
    if run.crashed:
        print(f"<-- {label} CRASHED: {run.crashed}; the end of its log:\n" + indent(
            tail(log_path, 30)), flush=True)  # fmt: skip
    else:
        print(
            f"<-- {label}: ran {run.outcome['ran']}, failures {run.count('failures')},"
            f" errors {run.count('errors')}, skipped {run.count('skipped')}"
            f" in {run.seconds:.0f} s",
            flush=True,
        )


def tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# --- comparison and reports ---------------------------------------------------------


@dataclass
class Comparison:
    database: str
    regressions: list[str]  # fail or error with dbpool, not with stock
    only_skipped_with_dbpool: list[str]  # pass with stock, skipped with dbpool
    fixed: list[str]  # fail with stock, not with dbpool


def compare(stock: Run, pooled: Run) -> Comparison:
    stock_passed = stock.ids("passed", "expected_failures")
    return Comparison(
        database=stock.database,
        regressions=sorted(pooled.bad - stock.bad),
        only_skipped_with_dbpool=sorted(pooled.ids("skipped") & stock_passed),
        fixed=sorted(stock.bad - pooled.bad),
    )


COLUMNS = (
    "database",
    "backend",
    "tests run",
    "passed",
    "failures",
    "errors",
    "skipped",
    "expected failures",
    "seconds",
)


def table_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        if run.crashed:
            counts = ["crashed"] + [""] * 5
        else:
            counts = [str(run.outcome["ran"])] + [
                str(run.count(kind))
                for kind in ("passed", "failures", "errors", "skipped", "expected_failures")
            ]
        rows.append([run.database, run.backend, *counts, f"{run.seconds:.0f}"])
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        # The two name columns align left, the numbers right.
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in rows)])


def write_summaries(
    runs: list[Run], comparisons: list[Comparison], django_version: str, apps: list[str]
) -> None:
    summary = {
        "django": django_version,
        "apps": apps,
        "runs": [
            {
                "database": r.database,
                "backend": r.backend,
                "seconds": round(r.seconds, 1),
                "crashed": r.crashed,
                "leftover_databases": r.leftover_databases,
                "ran": r.outcome.get("ran"),
                **{
                    kind: r.count(kind)
                    for kind in ("passed", "failures", "errors", "skipped", "expected_failures")
                },
                "failing": sorted(r.bad),
            }
            for r in runs
        ],
        "comparisons": [c.__dict__ for c in comparisons],
    }
    results = results_dir(django_version)
    (results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    parts = [
        f"# Django {django_version} test suite: stock vs dbpool backends",
        "",
        "Apps: " + ", ".join(f"`{a}`" for a in apps),
        "",
        markdown_table(table_rows(runs)),
    ]
    for c in comparisons:
        parts += ["", f"## {c.database}: failing with dbpool, not with stock", ""]
        parts += [f"- `{t}`" for t in c.regressions] or ["none"]
    (results / "summary.md").write_text("\n".join(parts) + "\n", encoding="utf-8")


def report(runs: list[Run], comparisons: list[Comparison]) -> bool:
    """Print the table and the differences; True when dbpool is as good as stock."""
    print("\n" + text_table(table_rows(runs)))
    ok = True
    for run in runs:
        if run.crashed:
            ok = False
            print(f"\n{run.database} / {run.backend} crashed: {run.crashed}")
        if run.leftover_databases:
            print(
                f"\n{run.database} / {run.backend} left test databases behind (dropped now):"
                f" {', '.join(run.leftover_databases)}"
            )
    for c in comparisons:
        print(f"\n{c.database}: failing with dbpool, not with stock: {len(c.regressions)}")
        for test_id in c.regressions:
            print(f"  {test_id}")
        ok = ok and not c.regressions
        if c.only_skipped_with_dbpool:
            print(f"{c.database}: skipped with dbpool, passed with stock:")
            for test_id in c.only_skipped_with_dbpool:
                print(f"  {test_id}")
        if c.fixed:
            print(f"{c.database}: failing with stock, not with dbpool: {len(c.fixed)}")
    return ok


# --- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", action="append", choices=sorted(DATABASES))
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--apps", nargs="+", default=list(APPS), metavar="APP")
    parser.add_argument(
        "--parallel", type=int, default=1, help="runtests.py processes (each clones the DB)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2,
        help="databases tested at once (each runs stock, then dbpool); 1 with --verbose",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("-v", "--verbose", action="store_true", help="stream runtests output")
    args = parser.parse_args(argv)

    django_version = installed_version("django")
    tests_dir = django_tests_dir(django_version)
    print(f"Django {django_version}: the installed package, tests from {tests_dir}", flush=True)

    databases = []
    unreachable = []
    for database in args.database or list(DATABASES):
        if reachable(DATABASES[database]):
            databases.append(database)
        else:
            unreachable.append(database)
            print(f"{database} server is not reachable: skipping its runs", flush=True)

    def run_database(database: str) -> list[Run]:
        runs = []
        for backend in args.backend or BACKENDS:
            run = Run(database, backend)
            run_suite(
                run,
                tests_dir,
                results_dir(django_version),
                args.apps,
                parallel=args.parallel,
                timeout=args.timeout,
                verbose=args.verbose,
            )
            ran_with = run.outcome.get("django", {}).get("version")
            if ran_with and ran_with != django_version:
                run.crashed = f"ran Django {ran_with}, not {django_version}"
            runs.append(run)
        return runs

    # The two servers are separate, so their runs can overlap; a database's own stock
    # and dbpool runs never do.
    jobs = 1 if args.verbose else args.jobs
    with ThreadPoolExecutor(max_workers=jobs) as executor:
        runs = [run for done in executor.map(run_database, databases) for run in done]

    if not runs:
        print("nothing ran: no database server was reachable")
        return 1 if REQUIRE_DATABASES else 0
    by_side = {(r.database, r.backend): r for r in runs}
    comparisons = [
        compare(by_side[db, "stock"], by_side[db, "dbpool"])
        for db in DATABASES
        if (db, "stock") in by_side and (db, "dbpool") in by_side
    ]
    write_summaries(runs, comparisons, django_version, args.apps)
    ok = report(runs, comparisons)
    summary = (results_dir(django_version) / "summary.md").relative_to(REPO)
    print(f"\nsummary: {summary}, summary.json, logs and per-test outcomes beside it")
    if unreachable and REQUIRE_DATABASES:
        print(f"FAILED: {', '.join(unreachable)} not reachable and DBPOOL_REQUIRE_DATABASES=1")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
