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

``dbpool tune [URL] --sql ...`` measures a unit of work at several pool sizes and
recommends one (dbpool/tune.py does the work; this module parses and prints). Its
usage errors are one line too, through ``_Parser``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn
from urllib.parse import quote

from dbpool import __version__, tune
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
    """Run the ``dbpool`` command: the entry point of ``dbpool`` and ``python -m dbpool``.

    See [the command line](cli.md) for the subcommands and their output.

    Args:
        argv: The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 when all is well, 1 when the check fails, 2 for a bad URL,
        setting or option, 130 when interrupted. Errors are one line on stderr.

    Example:
        ```python
        from dbpool.cli import main

        status = main(["check", "sqlite:///check.db", "--threads", "8"])
        ```
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command == "budget":
        return budget_command(args)
    if args.command == "tune":
        return tune_command(args)
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
    tune_ = commands.add_parser(
        "tune",
        one_line_errors=True,
        help="measure throughput and latency at several pool sizes and recommend one",
        description="Run a unit of work with --threads callers sharing a pool of each size "
        "in turn (time-based, after a warm-up) and print throughput, checkout wait, query "
        "latency, pool timeouts (P2024) and errors per size, and the recommended "
        "connection_limit: the smallest size within 5% of the best throughput without "
        "timeouts, checked against the server's connection budget for --instances. "
        f"URL defaults to $DATABASE_URL, else {DEFAULT_URL}. Ctrl-C stops early and "
        f"reports what was measured. {tune.EXTRA_HINT} adds a progress bar and --plot.",
    )
    tune_.add_argument("url", nargs="?", metavar="URL", help="database URL with settings")
    work = tune_.add_mutually_exclusive_group(required=True)
    work.add_argument("--sql", metavar="SQL", help="the statement a unit of work runs")
    work.add_argument("--sql-file", metavar="FILE",
                      help="statements separated by ; forming a unit of work, with "
                      "pgbench-style '\\set NAME random(LO, HI)' lines for :NAME "
                      "parameters")  # fmt: skip
    work.add_argument("--callable", metavar="MODULE:FUNCTION",
                      help="a function taking a dbpool Connection: the unit of work")  # fmt: skip
    tune_.add_argument("--transaction", action="store_true",
                       help="run each unit of work in one transaction (default: each "
                       "statement commits on its own)")  # fmt: skip
    tune_.add_argument("--define", action="append", default=[], metavar="NAME=N",
                       help="a value for :NAME in \\set lines, like pgbench -D "
                       "(repeatable)")  # fmt: skip
    tune_.add_argument("--threads", type=_positive, default=64, metavar="N",
                       help="concurrent callers sharing the pool (default 64)")  # fmt: skip
    tune_.add_argument("--sizes", metavar="A,B,...",
                       help="pool sizes to measure (default: 1, 2, 4, ... to a bit above "
                       "the default size, and the default size)")  # fmt: skip
    tune_.add_argument("--seconds", type=_seconds(above_zero=True), default=5.0, metavar="S",
                       help="measured seconds per size (default 5)")  # fmt: skip
    tune_.add_argument("--warmup", type=_seconds(), default=1.0, metavar="S",
                       help="seconds per size before measuring, not counted "
                       "(default 1)")  # fmt: skip
    tune_.add_argument("--pool-timeout", type=_seconds(), default=None, metavar="S",
                       help="pool_timeout for every size (default: the URL's, "
                       "else 10)")  # fmt: skip
    tune_.add_argument("--instances", type=_positive, default=1, metavar="N",
                       help="instances of the application, a pool each: the "
                       "recommendation is capped at each one's share of the server's "
                       "budget (default 1)")  # fmt: skip
    tune_.add_argument("--json", metavar="FILE",
                       help="write the results as JSON to FILE (- for stdout, instead of "
                       "the table)")  # fmt: skip
    tune_.add_argument("--plot", metavar="FILE.png",
                       help="write a PNG of throughput and p99 latency against pool "
                       "size")  # fmt: skip
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


class _Parser(argparse.ArgumentParser):
    """argparse's parser; with ``one_line_errors`` (``dbpool tune``) a usage error is one
    line, ``dbpool: error: ...``, like every other failure of the command."""

    def __init__(self, *args: Any, one_line_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.one_line_errors = one_line_errors

    def error(self, message: str) -> NoReturn:
        if not self.one_line_errors:
            super().error(message)
        self.exit(2, f"dbpool: error: {message} ({self.prog} --help lists the options)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if self.one_line_errors and extras:  # else the top-level parser reports them
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _seconds(*, above_zero: bool = False) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0 or (above_zero and seconds == 0):
            least = "> 0" if above_zero else ">= 0"
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds {least}, got {value!r}"
            )
        return seconds

    return parse


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
    """``dbpool check`` on a URL: print the settings, open the pool, probe it, print its
    status.

    Args:
        url: The database URL.
        origin: Where the URL came from, for the first line (``"given"``, ...).
        threads: Threads sharing the pool during the probe.
        checkouts: Checkouts per thread.
        sql: The statement each checkout runs.
        direct_url: The direct URL to check too, if any.
        direct_origin: Where the direct URL came from.

    Returns:
        0, the exit status of a check that passed.

    Raises:
        ConfigError: For a bad URL or setting.
        DBPoolError: When the database cannot be used or a probe checkout fails or times
            out (and any error of the driver's).
    """
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
    """``dbpool check`` on an engine made by the caller (``flask dbpool check`` makes it
    from the app's config).

    The direct URL, if the engine has one, is checked too. The engine is disposed at
    the end.

    Args:
        engine: The engine to check.
        described: What is checked, for the first line of the output.
        threads: Threads sharing the pool during the probe.
        checkouts: Checkouts per thread.
        sql: The statement each checkout runs.
        sources: Where settings given outside the URL came from, by setting name.
        echo: Prints one line (``print``, or ``click.echo``).
        direct_origin: Where the direct URL came from.

    Returns:
        0, the exit status of a check that passed.

    Raises:
        DBPoolError: When the database cannot be used or a probe checkout fails or times
            out (and any error of the driver's).
    """
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
    """The settings table of ``dbpool check``.

    Settings that mean nothing for the database (the dialect's ``inapplicable_settings``)
    are left out, unless the URL gives one: then the row says it has no effect.

    Args:
        engine: The engine whose settings to show.

    Returns:
        One ``(name, value in words, where it came from)`` row per setting.
    """
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
    """The probe of ``dbpool check``: threads that start together and each check out
    ``checkouts`` times, running ``sql``.

    Attributes:
        engine: The engine whose pool the threads share.
        sql: The statement each checkout runs.
        threads: How many threads.
        checkouts: Checkouts per thread.
        waits: How long each successful checkout waited, in seconds.
        timeouts: The checkouts that timed out.
        error: The first failure other than a timeout; it stops the probe.
        stopped: Set on Ctrl-C: the threads stop after their current checkout.
        elapsed: How long the probe ran, in seconds.
    """

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
        """Start the threads together and wait for them all (Ctrl-C stops them)."""
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
        """Raise the first error, else the first timeout: a healthy pool has neither.

        Raises:
            Exception: The first failure of a checkout, else the first
                [`PoolTimeoutError`][dbpool.PoolTimeoutError].
        """
        if self.error is not None:
            raise self.error
        if self.timeouts:
            raise self.timeouts[0]

    def report(self) -> str:
        """The probe's figures, as ``dbpool check`` prints them.

        Returns:
            A title line and a table: checkouts done, timeouts, longest and mean wait,
            elapsed time and checkouts per second.
        """
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
    """``dbpool budget``: print the server's connection budget for N instances.

    Args:
        args: The parsed command line (``url``, ``instances``, ``headroom``, ``json``).

    Returns:
        The exit status: 0 when the URL's ``connection_limit`` x instances fits the
        budget, 1 when it does not (or the server cannot be asked), 2 for a bad URL.
    """
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


# -- the tune ----------------------------------------------------------------------------


def tune_command(args: argparse.Namespace) -> int:
    """``dbpool tune``: measure a workload at several pool sizes and recommend one.

    `dbpool.tune` does the work; this prints the table (or the JSON with ``--json -``)
    and writes the files.

    Args:
        args: The parsed command line (``url``, ``sql``, ``sql_file``, ``callable``,
            ``transaction``, ``define``, ``threads``, ``sizes``, ``seconds``, ``warmup``,
            ``pool_timeout``, ``instances``, ``json``, ``plot``).

    Returns:
        The exit status: 0 when every size was measured, 130 when Ctrl-C stopped the run
        (what was measured is still reported and written), 2 for bad arguments, 1 when
        the database fails.
    """
    url: URL | None = None
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout  # with --json -, stdout is the JSON only

    def echo(*lines: str, sep: str = " ") -> None:
        print(*lines, sep=sep, file=out, flush=True)

    try:
        raw, origin = _choose_url(args.url)
        url = make_url(raw)
        sizes = tune.parse_sizes(args.sizes) if args.sizes is not None else None
        workload = tune.load_workload(
            sql=args.sql, sql_file=args.sql_file, call=args.callable,
            transaction=args.transaction, defines=tune.parse_defines(args.define),
        )  # fmt: skip
        missing = tune.extra_missing()
        if args.plot and "matplotlib" in missing:
            raise ConfigError(f"--plot needs matplotlib: {tune.EXTRA_HINT}")
        _check_output("--json", None if to_stdout else args.json)
        _check_output("--plot", args.plot)
        title = f"dbpool {__version__}: tuning {url} ({origin})"
        with _library_logging(verbose=False):
            result = tune.run(
                url, workload, sizes=sizes, threads=args.threads, seconds=args.seconds,
                warmup=args.warmup, pool_timeout=args.pool_timeout, instances=args.instances,
                on_start=lambda started: echo(title, tune.header(started), sep="\n"),
            )  # fmt: skip
    except ConfigError as exc:
        _error(exc, url)
        return 2
    except KeyboardInterrupt:  # before measuring started (tune.run reports it after)
        print("dbpool: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        _error(exc, url)
        return 1
    document = tune.as_json(result, url)
    if to_stdout:
        print(json.dumps(document, indent=2))
    else:
        echo()
        echo(_masked(tune.report(result, _table), url))
    try:
        if args.json and not to_stdout:
            with open(args.json, "w", encoding="utf-8") as file:
                json.dump(document, file, indent=2)
                file.write("\n")
            echo(f"JSON: {args.json}")
        if args.plot and result.steps:
            tune.plot(result, args.plot)
            echo(f"plot: {args.plot}")
        elif args.plot:
            echo("plot: not written, nothing was measured")
    except Exception as exc:
        _error(exc, url)
        return 1
    if missing:
        print(f"dbpool: {tune.EXTRA_HINT} adds a progress bar and --plot", file=sys.stderr)
    return 130 if result.interrupted else 0


def _check_output(option: str, path: str | None) -> None:
    """Fail before measuring, not after, when an output file cannot be written there."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{option}: no directory {os.path.dirname(path) or '.'} for {path}")
    if os.path.isdir(path):
        raise ConfigError(f"{option}: {path} is a directory")
