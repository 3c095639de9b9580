"""The ``dbpool`` command: ``dbpool check [URL]`` proves a database and its pool work.

It resolves the settings (printing them, password hidden), opens the pool, runs a short
probe with several threads sharing it, and prints the pool's status. Every failure is
one line on stderr (``dbpool: error: ...``) and a non-zero exit: 2 for a bad URL or
setting, 1 for anything else. The password never appears in the output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from urllib.parse import quote

from dbpool import __version__
from dbpool.engine import Engine, create_engine
from dbpool.exc import ConfigError, DBPoolError, PoolTimeoutError
from dbpool.sql import text
from dbpool.url import URL, make_url

DEFAULT_URL = "sqlite:///dbpool-check.db"

# What a 0 means for the settings where 0 switches something off.
_ZERO_MEANS = {
    "pool_timeout": "wait forever",
    "connect_timeout": "no limit",
    "max_idle_connection_lifetime": "never",
    "max_connection_lifetime": "none",
    "leak_detection_threshold": "off",
    "validation_timeout": "no limit",
    "socket_timeout": "no limit",
    "reap_idle_after": "off",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command != "check":
        parser.print_usage(sys.stderr)
        return 2
    url: URL | None = None
    try:
        raw, origin = _choose_url(args.url)
        url = make_url(raw)
        with _library_logging(verbose=args.verbose):
            return check(
                url, origin, threads=args.threads, checkouts=args.checkouts, sql=args.query
            )
    except ConfigError as exc:
        _error(exc, url)
        return 2
    except KeyboardInterrupt:
        print("dbpool: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is still one line, never a traceback
        _error(exc, url)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbpool", description="A fast, strictly fair database connection pool."
    )
    parser.add_argument("--version", action="version", version=f"dbpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check_ = commands.add_parser(
        "check",
        help="open a pool and run a short concurrent probe",
        description="Resolve the settings, open the pool, run a short concurrent probe "
        f"and print the pool status. URL defaults to $DATABASE_URL, else {DEFAULT_URL}.",
    )
    check_.add_argument("url", nargs="?", metavar="URL", help="database URL with settings")
    check_.add_argument("--threads", type=_positive, default=4, metavar="N",
                        help="threads sharing the pool (default 4)")  # fmt: skip
    check_.add_argument("--checkouts", type=_positive, default=25, metavar="N",
                        help="checkouts per thread (default 25)")  # fmt: skip
    check_.add_argument("--query", default="SELECT 1", metavar="SQL",
                        help="the statement each checkout runs (default SELECT 1)")  # fmt: skip
    check_.add_argument("-v", "--verbose", action="store_true",
                        help="also show dbpool's log lines (INFO and up) on stderr")  # fmt: skip
    return parser


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def _choose_url(given: str | None) -> tuple[str, str]:
    if given:
        return given, "given"
    env = os.environ.get("DATABASE_URL")
    if env:
        return env, "from DATABASE_URL"
    return DEFAULT_URL, "no URL given and no DATABASE_URL: the embedded SQLite default"


@contextmanager
def _library_logging(*, verbose: bool) -> Iterator[None]:
    """Show the library's log lines on stderr with ``--verbose``; otherwise only errors,
    as the probe reports timeouts and failures itself, in one line each."""
    logger = logging.getLogger("dbpool")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.ERROR)
    level = logger.level
    if verbose and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _error(exc: BaseException, url: URL | None) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PoolTimeoutError):
        message = f"{exc.code} {message}"
    elif not isinstance(exc, DBPoolError):
        message = f"unexpected {type(exc).__name__}: {message}"
    # Defence in depth: no dbpool message should hold the password, but a driver's might.
    if url is not None and url.password:
        for secret in {url.password, quote(url.password, safe="")}:
            message = message.replace(secret, "***")
    print(f"dbpool: error: {message}", file=sys.stderr)


# -- the check ---------------------------------------------------------------------------


def check(url: URL, origin: str, *, threads: int, checkouts: int, sql: str) -> int:
    """Print the settings, open the pool, probe it, print its status; raise on failure."""
    return check_engine(create_engine(url), f"{url} ({origin})", threads=threads,
                        checkouts=checkouts, sql=sql)  # fmt: skip


def check_engine(
    engine: Engine,
    described: str,
    *,
    threads: int,
    checkouts: int,
    sql: str,
    sources: Mapping[str, str] | None = None,
    echo: Callable[..., object] = print,
) -> int:
    """The check on an engine made by the caller (the Flask command makes it from the
    app's config); ``sources`` names where settings given outside the URL came from.
    The engine is disposed at the end."""
    dialect = engine.dialect
    echo(f"dbpool {__version__}: checking {described}")
    echo(f"database: {dialect.name} via {dialect.driver}, {dialect.describe()}")
    echo()
    rows = [(name, value, (sources or {}).get(name, source))
            for name, value, source in settings_rows(engine)]  # fmt: skip
    echo(_table(rows, header=("setting", "value", "from")))
    echo()
    probe = Probe(engine, sql, threads, checkouts)
    try:
        started = time.monotonic()
        engine.open()
        echo(f"opened the pool: first connection in {_ms(time.monotonic() - started)}")
        probe.run()
        echo(probe.report())
        echo()
        status = engine.status()
        echo("pool status: " + " ".join(f"{f.name}={getattr(status, f.name)}"
                                        for f in fields(status)))  # fmt: skip
    finally:
        engine.dispose()
    probe.raise_failure()
    echo("OK")
    return 0


def settings_rows(engine: Engine) -> list[tuple[str, str, str]]:
    """One row per setting: its name, its value in words, and where it came from.

    Settings that mean nothing for the database (the dialect's ``inapplicable_settings``)
    are left out, unless the URL gives one: then the row says it has no effect."""
    rows = []
    inapplicable = engine.dialect.inapplicable_settings
    for name, value in engine.config.items():
        given = name in engine.url.query
        if name in inapplicable:
            if not given:
                continue
            source = f"URL (no effect on {engine.dialect.name})"
        elif given:
            source = "URL"
        elif name == "connection_limit":
            special = engine.dialect.default_connection_limit
            source = f"default ({engine.dialect.name})" if special else "default (cores*2+1)"
        else:
            source = "default"
        rows.append((name, _show(name, value), source))
    return rows


def _show(name: str, value: object) -> str:
    if value is None:
        return "off" if name == "pre_ping" else "driver default"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value == 0 and name in _ZERO_MEANS:
            return f"0 ({_ZERO_MEANS[name]})"
        if name == "pre_ping":
            return "every checkout" if value == 0 else f"{value:g} s window"
        return f"{value:g} s"
    return str(value)


@dataclass
class Probe:
    """Threads that start together and each check out ``checkouts`` times, running ``sql``."""

    engine: Engine
    sql: str
    threads: int
    checkouts: int
    waits: list[float] = field(default_factory=list)
    timeouts: list[PoolTimeoutError] = field(default_factory=list)
    error: Exception | None = None  # the first failure other than a timeout; stops the probe
    stopped: bool = False  # set on Ctrl-C: the workers stop after their current checkout
    elapsed: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        barrier = threading.Barrier(self.threads)
        workers = [
            threading.Thread(
                target=self._work, args=(barrier,), name=f"dbpool-check-{i}", daemon=True
            )
            for i in range(self.threads)
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                worker.join()
        finally:
            self.stopped = True
        self.elapsed = time.monotonic() - started

    def _work(self, barrier: threading.Barrier) -> None:
        statement = text(self.sql)
        barrier.wait()
        for _ in range(self.checkouts):
            if self.error is not None or self.stopped:
                return
            started = time.monotonic()
            try:
                with self.engine.connect() as conn:
                    waited = time.monotonic() - started
                    conn.execute(statement).all()
            except PoolTimeoutError as exc:
                with self._lock:
                    self.timeouts.append(exc)
                continue
            except Exception as exc:
                with self._lock:
                    self.error = self.error or exc
                return
            with self._lock:
                self.waits.append(waited)

    def raise_failure(self) -> None:
        """Raise the first error, else the first timeout: a healthy pool has neither."""
        if self.error is not None:
            raise self.error
        if self.timeouts:
            raise self.timeouts[0]

    def report(self) -> str:
        done = len(self.waits)
        rate = done / self.elapsed if self.elapsed else 0.0
        mean = sum(self.waits) / done if done else 0.0
        rows = [
            ("checkouts done", f"{done} of {self.threads * self.checkouts}"),
            ("timeouts", str(len(self.timeouts))),
            ("wait max", _ms(max(self.waits, default=0.0))),
            ("wait mean", _ms(mean)),
            ("elapsed", f"{_ms(self.elapsed)} ({rate:,.0f} checkouts/s)"),
        ]
        title = f"probe: {self.threads} threads x {self.checkouts} checkouts running {self.sql}"
        return title + "\n" + _table(rows, indent="  ")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _table(
    rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, indent: str = ""
) -> str:
    """Left-aligned plain-text columns, with a rule under the header if there is one."""
    body = [list(row) for row in rows]
    if header:
        body = [list(header), [], *body]
    widths = [max(len(row[i]) for row in body if row) for i in range(len(body[0]))]
    if header:
        body[1] = ["-" * width for width in widths]
    return "\n".join(
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in body
    )
