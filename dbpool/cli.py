"""The ``dbpool`` command: ``dbpool check [URL]`` proves a database and its pool work.

It resolves the settings (printing them, password hidden), opens the pool, runs a short
probe with several threads sharing it, and prints the pool's status; with a direct URL
(``--direct-url``, or ``DIRECT_URL`` along with ``DATABASE_URL``) it then opens one
connection there and runs the probe's statement on it too. Every failure is
one line on stderr (``dbpool: error: ...``) and a non-zero exit: 2 for a bad URL or
setting, 1 for anything else. The password never appears in the output.

``dbpool budget [URL] --instances N`` asks the server how many connections N instances
may open (dbpool/budget.py does the work; this module parses and prints) and exits 1
when the URL's connection_limit does not fit, so it can gate a deploy.
"""

from __future__ import annotations

import argparse
import json
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
from dbpool.budget import as_json, parse_headroom, probe, report
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
    if args.command == "budget":
        return budget_command(args)
    if args.command != "check":
        parser.print_usage(sys.stderr)
        return 2
    url: URL | None = None
    direct: URL | None = None
    try:
        raw, origin = _choose_url(args.url)
        url = make_url(raw)
        direct_raw, direct_origin = _choose_direct_url(args.direct_url, given_url=bool(args.url))
        direct = _parse_quietly(direct_raw)
        with _library_logging(verbose=args.verbose):
            return check(
                url, origin, threads=args.threads, checkouts=args.checkouts, sql=args.query,
                direct_url=direct_raw, direct_origin=direct_origin,
            )  # fmt: skip
    except ConfigError as exc:
        _error(exc, url, direct)
        return 2
    except KeyboardInterrupt:
        print("dbpool: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is still one line, never a traceback
        _error(exc, url, direct)
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
    check_.add_argument("--direct-url", metavar="URL",
                        help="the database without the external pooler, checked too "
                        "(default $DIRECT_URL when URL comes from $DATABASE_URL)")  # fmt: skip
    check_.add_argument("--threads", type=_positive, default=4, metavar="N",
                        help="threads sharing the pool (default 4)")  # fmt: skip
    check_.add_argument("--checkouts", type=_positive, default=25, metavar="N",
                        help="checkouts per thread (default 25)")  # fmt: skip
    check_.add_argument("--query", default="SELECT 1", metavar="SQL",
                        help="the statement each checkout runs (default SELECT 1)")  # fmt: skip
    check_.add_argument("-v", "--verbose", action="store_true",
                        help="also show dbpool's log lines (INFO and up) on stderr")  # fmt: skip
    budget_ = commands.add_parser(
        "budget",
        help="how many connections each instance may open (exit 1 if it does not fit)",
        description="Ask the server for its connection limit and who holds connections now, "
        "and print the budget for N instances of this application, the recommended "
        "connection_limit per instance, and whether the URL's connection_limit fits (exit "
        f"status 0) or not (1). URL defaults to $DATABASE_URL, else {DEFAULT_URL}.",
    )
    budget_.add_argument("url", nargs="?", metavar="URL", help="database URL with settings")
    budget_.add_argument("--instances", type=_positive, required=True, metavar="N",
                         help="instances of the application (a pool each)")  # fmt: skip
    budget_.add_argument("--headroom", type=_headroom, default=None, metavar="N|P%",
                         help="connections kept free for admin and migrations "
                         "(default 10%% of the limit, at least 3)")  # fmt: skip
    budget_.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _headroom(value: str) -> float | int:
    try:
        return parse_headroom(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _choose_direct_url(given: str | None, *, given_url: bool) -> tuple[str | None, str]:
    """``--direct-url``, else ``DIRECT_URL`` when the URL comes from ``DATABASE_URL`` (as
    create_engine() reads them: as a pair, see dbpool/direct.py)."""
    if given:
        return given, "given"
    env = os.environ.get("DIRECT_URL")
    if env and not given_url and os.environ.get("DATABASE_URL"):
        return env, "from DIRECT_URL"
    return None, ""


def _parse_quietly(raw: str | None) -> URL | None:
    """The URL, for hiding its password in messages; None if it does not parse (then
    create_engine() says why, with the password masked)."""
    try:
        return None if raw is None else make_url(raw)
    except ConfigError:
        return None


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


def _error(exc: BaseException, *urls: URL | None) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PoolTimeoutError):
        message = f"{exc.code} {message}"
    elif not isinstance(exc, DBPoolError):
        message = f"unexpected {type(exc).__name__}: {message}"
    print(f"dbpool: error: {_masked(message, *urls)}", file=sys.stderr)


def _masked(message: str, *urls: URL | None) -> str:
    """Defence in depth: no dbpool message should hold a password, but a driver's might."""
    for url in urls:
        if url is not None and url.password:
            for secret in {url.password, quote(url.password, safe="")}:
                message = message.replace(secret, "***")
    return message


# -- the check ---------------------------------------------------------------------------


def check(url: URL, origin: str, *, threads: int, checkouts: int, sql: str,
          direct_url: str | None = None, direct_origin: str = "") -> int:  # fmt: skip
    """Print the settings, open the pool, probe it, print its status; raise on failure."""
    engine = create_engine(url, direct_url=direct_url)
    return check_engine(engine, f"{url} ({origin})", threads=threads, checkouts=checkouts,
                        sql=sql, direct_origin=direct_origin)  # fmt: skip


def check_engine(
    engine: Engine,
    described: str,
    *,
    threads: int,
    checkouts: int,
    sql: str,
    sources: Mapping[str, str] | None = None,
    echo: Callable[..., object] = print,
    direct_origin: str = "",
) -> int:
    """The check on an engine made by the caller (the Flask command makes it from the
    app's config); ``sources`` names where settings given outside the URL came from.
    The direct URL, if the engine has one, is checked too. The engine is disposed at
    the end."""
    dialect = engine.dialect
    echo(f"dbpool {__version__}: checking {described}")
    echo(f"database: {dialect.name} via {dialect.driver}, {dialect.describe()}")
    echo(_direct_line(engine, direct_origin))
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
        if probe.error is None and not probe.timeouts and engine.direct_url is not None:
            echo(_check_direct(engine, sql))
    finally:
        engine.dispose()
    probe.raise_failure()
    echo("OK")
    return 0


def _direct_line(engine: Engine, origin: str) -> str:
    if engine.direct_url is not None:
        return f"direct URL: {engine.direct_url}" + (f" ({origin})" if origin else "")
    if engine.config.pgbouncer:
        return ("direct URL: none (engine.direct() needs one with pgbouncer=true: "
                "--direct-url, direct_url or DIRECT_URL)")  # fmt: skip
    return "direct URL: none (engine.direct() opens an unpooled connection on the URL above)"


def _check_direct(engine: Engine, sql: str) -> str:
    """Open one connection on the direct URL, run ``sql`` there, close it; the report
    line, or an error naming the direct URL."""
    started = time.monotonic()
    try:
        with engine.direct() as conn:
            opened = time.monotonic() - started
            conn.execute(text(sql)).all()
    except Exception as exc:
        reason = _masked(" ".join(str(exc).split()) or type(exc).__name__, engine.direct_url)
        error = ConfigError if isinstance(exc, ConfigError) else DBPoolError
        raise error(f"direct URL {engine.direct_url}: {reason}") from exc
    return f"direct connection: opened in {_ms(opened)}, ran {sql}, closed"


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


# -- the budget --------------------------------------------------------------------------


def budget_command(args: argparse.Namespace) -> int:
    """``dbpool budget``: 0 when the URL's connection_limit x instances fits the server's
    budget, 1 when it does not (or the server cannot be asked), 2 for a bad URL."""
    url: URL | None = None
    try:
        raw, origin = _choose_url(args.url)
        url = make_url(raw)
        with _progress() as progress:
            result = probe(url, instances=args.instances, headroom=args.headroom,
                           on_connect=progress)  # fmt: skip
    except ConfigError as exc:
        _error(exc, url)
        return 2
    except KeyboardInterrupt:
        print("dbpool: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        _error(exc, url)
        return 1
    if args.json:
        print(json.dumps(as_json(result, url), indent=2))
    else:
        print(f"dbpool {__version__}: connection budget for {url} ({origin})")
        print()
        print(report(result, _table))
    return 0 if result.fits else 1


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """A progress line on stderr while the server is asked, erased afterwards; only on a
    terminal, so that logs and pipes get nothing but the result (or one error line)."""
    shown = [0]

    def show(where: str) -> None:
        if sys.stderr.isatty():
            line = f"dbpool: asking {where} for its connection budget..."
            print(line, end="", file=sys.stderr, flush=True)
            shown[0] = len(line)

    try:
        yield show
    finally:
        if shown[0]:
            print("\r" + " " * shown[0] + "\r", end="", file=sys.stderr, flush=True)
