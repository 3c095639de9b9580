"""``dbpool tune``: measure a workload at several pool sizes and recommend one.

The seeds say: start from the default ``connection_limit`` and tune it by measuring under
load. This module does the measuring. For each pool size it opens a pool of that size,
lets ``threads`` callers share it for a time-based run (a warm-up first, not counted),
and records what each caller saw: how long it waited for a connection (checkout wait),
how long its unit of work took once it had one (query latency), pool timeouts (P2024)
and errors. Every caller works for the same wall time, so a caller that cannot get a
connection shows up as wait, not as a shorter loop.

The recommendation is the smallest size within 5 % of the best throughput among the sizes
without timeouts: a bigger pool that is not faster only costs server memory and makes
the server's own contention worse. It is then checked against the server's connection
budget (`dbpool.budget.probe()`): with ``instances`` instances of the application,
each may open at most its share, and the recommendation is capped there. The seeds'
rule (the default size divided by the number of instances) is shown beside it.

A unit of work is one of:

* ``--sql``: one statement;
* ``--sql-file``: several statements separated by ``;``, with pgbench-style
  ``\\set name expression`` lines giving ``:name`` bind parameters a fresh value for
  every unit of work (``random(lo, hi)``, integers, ``+ - * /``, ``:other`` names,
  ``--define name=value``); pgbench's own scripts run as they are, minus their
  ``BEGIN``/``END`` (``--transaction`` does that);
* ``--callable module:function``: a function taking a dbpool `Connection`.

With ``transaction`` the unit runs in one transaction (``conn.begin()``); without, each
statement is committed on its own (a callable commits as it likes; what it leaves
uncommitted is rolled back when the connection goes back to the pool).

The progress bar (tqdm) and the plot (matplotlib, drawn by `dbpool._tune_plot`) come from
the optional extra ``dbpool[tune]``; both are imported only when used, and without them
the measurement and its table work all the same.
"""

from __future__ import annotations

import ast
import importlib
import math
import os
import random
import re
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dbpool.config import default_connection_limit
from dbpool.engine import Engine, create_engine
from dbpool.exc import ConfigError, ConnectError, DBPoolError, PoolTimeoutError
from dbpool.sql import code_only, text

if TYPE_CHECKING:
    from dbpool.budget import Plan
    from dbpool.dialects.base import Dialect
    from dbpool.engine import Connection
    from dbpool.url import URL

__all__ = [
    "EXTRA_HINT",
    "WITHIN",
    "Progress",
    "Recommendation",
    "Step",
    "TuneResult",
    "Workload",
    "as_json",
    "default_sizes",
    "extra_missing",
    "header",
    "load_workload",
    "parse_defines",
    "parse_sizes",
    "plot",
    "progress_bar",
    "recommend",
    "report",
    "run",
    "split_statements",
]

#: What to install for the progress bar and ``--plot``.
EXTRA_HINT = 'pip install "dbpool[tune]"'
#: The recommendation is the smallest size within this share of the best throughput.
WITHIN = 0.05
# How long stopping may wait for callers still inside a unit of work, past pool_timeout.
_STOP_GRACE = 5.0
# The progress bar is redrawn this often (seconds); the main thread sleeps in between.
_TICK = 0.1


# -- the unit of work -------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One unit of work, as every caller runs it on a connection it checked out.

    Attributes:
        kind: ``"sql"``, ``"sql-file"`` or ``"callable"``.
        description: what it is, for the table and the plot's title.
        transaction: whether the unit runs in one transaction.
        work: runs the unit on a checked-out connection.
    """

    kind: str
    description: str
    transaction: bool
    work: Callable[[Connection], None]

    def __call__(self, conn: Connection) -> None:
        """Run the unit of work once on ``conn``, in a transaction if it is one.

        Args:
            conn: a connection checked out from the pool being measured.
        """
        if self.transaction:
            with conn.begin():
                self.work(conn)
        else:
            self.work(conn)


def load_workload(
    *,
    sql: str | None = None,
    sql_file: str | None = None,
    call: str | None = None,
    transaction: bool = False,
    defines: Mapping[str, int] | None = None,
) -> Workload:
    """The unit of work from exactly one of ``sql``, ``sql_file`` or ``call``.

    Args:
        sql: one statement, with no bind parameters.
        sql_file: a file of statements separated by ``;`` and ``\\set`` lines.
        call: ``module:function``; the function takes a ``Connection``. The current
            directory is importable, as with ``python -m``.
        transaction: run the unit in one transaction.
        defines: values for ``:name`` references in ``\\set`` expressions
            (``--define scale=10``).

    Returns:
        The workload.

    Raises:
        ConfigError: none or more than one source is given, the file cannot be read,
            a statement uses a bind parameter nothing gives, a ``\\set`` line is not
            understood, or the callable cannot be imported.

    Example:
        ```python
        workload = load_workload(sql_file="tpcb-like.sql", transaction=True,
                                 defines={"scale": 10})
        workload.description  # 'tpcb-like.sql (5 statements)'
        ```
    """
    given = [name for name, value in (("--sql", sql), ("--sql-file", sql_file),
                                      ("--callable", call)) if value is not None]  # fmt: skip
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of --sql, --sql-file or --callable"
            + (f", not {' and '.join(given)}" if given else "")
        )
    if sql is not None:
        return _script_workload([sql], [], "sql", _shorten(sql), transaction, {})
    if sql_file is not None:
        try:
            with open(sql_file, encoding="utf-8") as file:
                script = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--sql-file {sql_file}: cannot read it ({exc})") from None
        where = f"--sql-file {sql_file}"
        settings, statements = _parse_script(script, where)
        described = f"{os.path.basename(sql_file)} ({_count(len(statements), 'statement')})"
        return _script_workload(
            statements, settings, "sql-file", described, transaction, dict(defines or {}), where
        )
    assert call is not None
    return Workload("callable", call, transaction, _import_callable(call))


def _script_workload(
    statements: Sequence[str],
    settings: Sequence[tuple[str, str]],
    kind: str,
    description: str,
    transaction: bool,
    defines: dict[str, int],
    where: str = "--sql",
) -> Workload:
    clauses = [text(statement) for statement in statements]
    draw = _Parameters(settings, defines, where=where)
    for number, clause in enumerate(clauses, 1):
        unknown = [name for name in dict.fromkeys(clause.compile("named").names)
                   if name not in draw.names]  # fmt: skip
        if unknown:
            if kind == "sql-file":
                problem = f"{where} statement {number}", "give it a \\set line or --define"
            else:
                problem = "--sql", "--sql takes none; use --sql-file with \\set lines"
            raise ConfigError(f"{problem[0]} uses :{unknown[0]}, which has no value: {problem[1]}")

    def work(conn: Connection) -> None:
        params = draw()
        for clause in clauses:
            conn.execute(clause, params)
            if not transaction:
                conn.commit()

    return Workload(kind, description, transaction, work)


def _import_callable(spec: str) -> Callable[[Connection], None]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--callable must be module:function, got {spec!r}")
    # As `python -m` and gunicorn do: the user's own modules are found from where they are.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"--callable {spec}: cannot import {module_name} ({exc})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--callable {spec}: {module_name} has no {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"--callable {spec}: {attribute} is not callable")
    function: Callable[[Connection], None] = target
    return function


# -- SQL scripts ----------------------------------------------------------------------


_SET_LINE = re.compile(r"\\set\s+([A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*;?\s*$")
_REFERENCE = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_TRANSACTION_WORDS = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"})
# The only syntax a \set expression may use; anything else is refused before it runs.
_EXPRESSION_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd,
)  # fmt: skip


def split_statements(script: str) -> list[str]:
    """Split SQL text into statements at each ``;`` that is code.

    A ``;`` inside a string (``'...'``, ``E'...'``), a quoted identifier (``"..."``, or
    MySQL's backquoted one), a comment (``--``, ``/* */``) or a PostgreSQL dollar-quoted
    body does not end a statement. Statements are returned stripped; empty ones (and
    those that are only comments) are left out.

    Args:
        script: the SQL text.

    Returns:
        The statements, without their ``;``.

    Example:
        ```python
        split_statements("SELECT ';'; SELECT 2;")  # ["SELECT ';'", "SELECT 2"]
        ```
    """
    statements: list[str] = []
    start = pos = 0
    n = len(script)
    while pos < n:
        char = script[pos]
        if char == ";":
            statements.append(script[start:pos])
            start = pos = pos + 1
            continue
        pos = _skip_quoted(script, pos)
    statements.append(script[start:])
    return [s.strip() for s in statements if code_only(s).strip()]


def _skip_quoted(sql: str, pos: int) -> int:
    """The position after what starts at ``pos``: a whole string, quoted identifier,
    comment or dollar-quoted body, else just the one character."""
    char = sql[pos]
    if char in "'\"`":
        backslash = (
            char == "'" and pos > 0 and sql[pos - 1] in "eE"
            and (pos < 2 or not (sql[pos - 2].isalnum() or sql[pos - 2] == "_"))
        )  # fmt: skip
        i = pos + 1
        while i < len(sql):
            if backslash and sql[i] == "\\":
                i += 2
                continue
            if sql[i] == char:
                if i + 1 < len(sql) and sql[i + 1] == char:  # a doubled quote
                    i += 2
                    continue
                return i + 1
            i += 1
        return len(sql)
    if sql.startswith("--", pos):
        end = sql.find("\n", pos)
        return len(sql) if end < 0 else end + 1
    if sql.startswith("/*", pos):
        depth, i = 1, pos + 2
        while i < len(sql) and depth:
            if sql.startswith("/*", i):
                depth, i = depth + 1, i + 2
            elif sql.startswith("*/", i):
                depth, i = depth - 1, i + 2
            else:
                i += 1
        return i
    if char == "$" and not (pos > 0 and (sql[pos - 1].isalnum() or sql[pos - 1] in "_$")):
        tag = re.match(r"\$(?:[^\W\d]\w*)?\$", sql[pos:])
        if tag:
            end = sql.find(tag.group(), pos + len(tag.group()))
            return len(sql) if end < 0 else end + len(tag.group())
    return pos + 1


def _parse_script(script: str, where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``\\set`` lines (name, expression) and the statements of an SQL file."""
    settings: list[tuple[str, str]] = []
    sql_lines: list[str] = []
    for number, line in enumerate(script.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("\\"):
            match = _SET_LINE.match(stripped)
            if match is None:
                raise ConfigError(
                    f"{where} line {number}: only \\set name expression is understood, "
                    f"got {_shorten(stripped)!r}"
                )
            settings.append((match.group(1), match.group(2)))
            sql_lines.append("")  # keeps line numbers in step for the database's errors
        else:
            sql_lines.append(line)
    statements = split_statements("\n".join(sql_lines))
    if not statements:
        raise ConfigError(f"{where} has no SQL statement")
    for number, statement in enumerate(statements, 1):
        words = code_only(statement).split()
        if words and words[0].upper() in _TRANSACTION_WORDS:
            raise ConfigError(
                f"{where} statement {number} is {words[0]}: leave transaction control "
                "out of the file and add --transaction to run the statements in one"
            )
    return settings, statements


class _Parameters:
    """Draws a fresh set of bind parameters from the ``\\set`` lines, per unit of work."""

    def __init__(
        self, settings: Sequence[tuple[str, str]], defines: Mapping[str, int], where: str
    ) -> None:
        self._defines = {f"v_{name}": value for name, value in defines.items()}
        self._steps: list[tuple[str, Any]] = []
        known = set(defines)
        for name, expression in settings:
            self._steps.append(("v_" + name, _compile_expression(expression, known, where)))
            known.add(name)
        self.names = frozenset(known)

    def __call__(self) -> dict[str, int]:
        if not self._steps:
            return {name[2:]: value for name, value in self._defines.items()}
        env: dict[str, Any] = {"random": random.randint, **self._defines}
        for name, code in self._steps:
            env[name] = eval(code, {"__builtins__": {}}, env)
        return {name[2:]: value for name, value in env.items() if name.startswith("v_")}


def _compile_expression(expression: str, known: Iterable[str], where: str) -> Any:
    """A ``\\set`` expression compiled for eval(), after checking it uses nothing but
    integers, ``+ - * / %``, ``random(lo, hi)`` and names defined before it."""
    source = _REFERENCE.sub(lambda m: "v_" + m.group(1), expression)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        tree = None
    known_names = {"v_" + name for name in known}
    problem = "it is not an expression" if tree is None else None
    nodes = list(ast.walk(tree)) if tree is not None else []
    callees = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:
        if not isinstance(node, _EXPRESSION_NODES):
            problem = f"{type(node).__name__.lower()} is not allowed"
        elif isinstance(node, ast.Constant) and type(node.value) is not int:
            problem = f"{node.value!r} is not an integer"
        elif isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id == "random"
            and len(node.args) == 2 and not node.keywords
        ):  # fmt: skip
            problem = "the only function is random(lo, hi)"
        elif isinstance(node, ast.Name) and node.id == "random" and id(node) not in callees:
            problem = "random is a function: random(lo, hi)"
        elif isinstance(node, ast.Name) and node.id != "random" and node.id not in known_names:
            problem = (
                f":{node.id[2:]} has no value (give it a \\set line before this one or "
                f"--define {node.id[2:]}=N)" if node.id.startswith("v_")
                else f"{node.id} is not a :name"
            )  # fmt: skip
        if problem:
            break
    if problem or tree is None:
        raise ConfigError(f"{where}: \\set expression {expression!r}: {problem}")
    for node in nodes:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            node.op = ast.FloorDiv()  # pgbench's / divides integers
    return compile(tree, "<\\set>", "eval")


def parse_defines(values: Iterable[str]) -> dict[str, int]:
    """``--define name=value`` options (pgbench's ``-D``) as a mapping of integers.

    Args:
        values: the options' values, each ``name=integer``.

    Returns:
        The names and their values.

    Raises:
        ConfigError: a value is not ``name=integer``.

    Example:
        ```python
        parse_defines(["scale=10"])  # {"scale": 10}
        ```
    """
    defines: dict[str, int] = {}
    for value in values:
        name, equals, number = value.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier() or not re.fullmatch(r"\s*-?\d+\s*", number):
            raise ConfigError(f"--define takes name=integer, got {value!r}")
        defines[name] = int(number)
    return defines


# -- sizes ----------------------------------------------------------------------------


def parse_sizes(value: str) -> list[int]:
    """``--sizes 1,2,4,8``: pool sizes as sorted distinct integers >= 1.

    Args:
        value: comma-separated integers.

    Returns:
        The sizes, smallest first.

    Raises:
        ConfigError: an item is not an integer >= 1, or there is none.

    Example:
        ```python
        parse_sizes("8,1,2,2")  # [1, 2, 8]
        ```
    """
    sizes = set()
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise ConfigError(
                f"--sizes takes pool sizes (integers >= 1) separated by commas, got {value!r}"
            )
        sizes.add(int(item))
    return sorted(sizes)


def default_sizes(default: int, current: int | None = None) -> list[int]:
    """The sizes measured when ``--sizes`` is not given: from 1 to a bit above the default.

    Powers of two up to the first one at least 1.5 times the default size, plus the
    default size itself and the URL's own ``connection_limit`` if it gives one.

    Args:
        default: the default pool size for the database.
        current: the URL's ``connection_limit``, if it sets one.

    Returns:
        The sizes, smallest first.

    Example:
        ```python
        default_sizes(5)  # [1, 2, 4, 5, 8]
        default_sizes(9)  # [1, 2, 4, 8, 9, 16]
        ```
    """
    sizes = {default}
    if current is not None:
        sizes.add(current)
    power = 1
    while True:
        sizes.add(power)
        if power >= default * 1.5:
            break
        power *= 2
    return sorted(sizes)


# -- the measurement ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What one pool size gave in its measured window (the warm-up not counted).

    Times are in seconds; `as_json()` shows them in milliseconds.

    Attributes:
        size: the pool's ``connection_limit``.
        seconds: the measured window.
        completed: units of work that started and finished inside the window.
        throughput: ``completed / seconds``.
        wait_p50: median checkout wait (from asking for a connection to having one).
        wait_p99: 99th percentile checkout wait.
        wait_max: longest checkout wait.
        query_p50: median time of a unit of work on its connection.
        query_p99: 99th percentile of the same.
        timeouts: checkouts that ended in ``PoolTimeoutError`` (P2024).
        errors: units of work that failed with any other error.
        first_error: the first such error, one line, for the report.
    """

    size: int
    seconds: float
    completed: int
    throughput: float
    wait_p50: float
    wait_p99: float
    wait_max: float
    query_p50: float
    query_p99: float
    timeouts: int
    errors: int
    first_error: str | None = None


class _Tally:
    """One caller's observations; only its own thread writes them, so no lock."""

    __slots__ = ("errors", "first_error", "timeouts", "waits", "works")

    def __init__(self) -> None:
        self.waits = array("d")
        self.works = array("d")
        self.timeouts = 0
        self.errors = 0
        self.first_error: BaseException | None = None


class _Round:
    """``threads`` callers sharing one pool; every caller records only what started at or
    after ``start`` and finished by ``end``, both fixed before the callers start."""

    def __init__(self, engine: Engine, workload: Workload, threads: int, start: float,
                 end: float) -> None:  # fmt: skip
        self.engine = engine
        self.workload = workload
        self.start = start
        self.end = end
        self.stop = threading.Event()
        self.tallies = [_Tally() for _ in range(threads)]
        self.workers = [
            threading.Thread(
                target=self._work, args=(tally,), name=f"dbpool-tune-{i}", daemon=True
            )
            for i, tally in enumerate(self.tallies)
        ]

    def begin(self) -> None:
        for worker in self.workers:
            worker.start()

    def finish(self, grace: float) -> None:
        """Stop the callers and wait (at most ``grace`` seconds in all) for them to
        finish the unit of work they are in."""
        self.stop.set()
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _work(self, tally: _Tally) -> None:
        clock = time.perf_counter
        connect = self.engine.connect
        workload = self.workload
        start, end, stop = self.start, self.end, self.stop
        while not stop.is_set():
            asked = clock()
            if asked >= end:
                return
            try:
                conn = connect()
            except PoolTimeoutError:
                if asked >= start:
                    tally.timeouts += 1
                continue
            except Exception as exc:
                if asked >= start:
                    tally.errors += 1
                    tally.first_error = tally.first_error or exc
                time.sleep(0.001)  # an unreachable server: do not spin on it
                continue
            got = clock()
            try:
                with conn:
                    workload(conn)
            except Exception as exc:
                if asked >= start:
                    tally.errors += 1
                    tally.first_error = tally.first_error or exc
                continue
            done = clock()
            if asked >= start and done <= end:
                tally.waits.append(got - asked)
                tally.works.append(done - got)

    def step(self, size: int, masked: Callable[[str], str]) -> Step:
        waits = sorted(w for tally in self.tallies for w in tally.waits)
        works = sorted(w for tally in self.tallies for w in tally.works)
        first = next((t.first_error for t in self.tallies if t.first_error is not None), None)
        seconds = self.end - self.start
        return Step(
            size=size,
            seconds=seconds,
            completed=len(works),
            throughput=len(works) / seconds if seconds > 0 else 0.0,
            wait_p50=_percentile(waits, 0.50),
            wait_p99=_percentile(waits, 0.99),
            wait_max=waits[-1] if waits else 0.0,
            query_p50=_percentile(works, 0.50),
            query_p99=_percentile(works, 0.99),
            timeouts=sum(t.timeouts for t in self.tallies),
            errors=sum(t.errors for t in self.tallies),
            first_error=None if first is None else masked(_one_line(first)),
        )


def _percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class Progress(Protocol):
    """Where the measurement reports how far it is (the progress bar)."""

    def step(self, index: int, size: int) -> None:
        """A new pool size starts.

        Args:
            index: its place among the sizes, counting from 0.
            size: the pool size.
        """

    def advance(self, seconds: float) -> None:
        """More of the planned time has passed.

        Args:
            seconds: how much, since the last call.
        """

    def close(self) -> None:
        """The measurement is over (or interrupted)."""


class _NoProgress:
    def step(self, index: int, size: int) -> None:
        pass

    def advance(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """tqdm on stderr, in seconds of planned measurement, with the current size; shown
    only on a terminal (tqdm's ``disable=None``)."""

    def __init__(self, sizes: Sequence[int], per_step: float) -> None:
        from tqdm import tqdm

        self._sizes = sizes
        self._bar = tqdm(
            total=round(len(sizes) * per_step, 1),
            unit="s",
            file=sys.stderr,
            disable=None,
            leave=False,
            dynamic_ncols=True,
            mininterval=0,  # the main thread updates it every _TICK anyway
            bar_format="{desc} {bar} {percentage:3.0f}% [{elapsed}<{remaining}]",
        )

    def step(self, index: int, size: int) -> None:
        self._bar.set_description_str(
            f"dbpool tune: size {size} ({index + 1} of {len(self._sizes)})"
        )

    def advance(self, seconds: float) -> None:
        self._bar.update(seconds)

    def close(self) -> None:
        self._bar.close()


def extra_missing() -> list[str]:
    """The modules of the ``dbpool[tune]`` extra that cannot be imported.

    Returns:
        ``"tqdm"`` and/or ``"matplotlib"``, or an empty list when both are there.
    """
    missing = []
    for name in ("tqdm", "matplotlib"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def progress_bar(sizes: Sequence[int], per_step: float) -> Progress:
    """The tqdm progress bar, or one that shows nothing without the ``tune`` extra.

    Args:
        sizes: the sizes to be measured, in order.
        per_step: planned seconds per size (warm-up and measurement).

    Returns:
        The progress reporter.
    """
    try:
        return _Bar(sizes, per_step)
    except ImportError:
        return _NoProgress()


# -- the whole run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """The pool size the measurement recommends, and how it was checked.

    Attributes:
        measured: the smallest size within `WITHIN` of the best throughput among
            the sizes without timeouts; None when every size had timeouts or errors.
        best: the size with the best throughput among those; None likewise.
        connection_limit: ``measured`` capped at the per-instance share of the server's
            budget; None when nothing could be recommended.
        capped: whether the cap lowered it.
        share: each instance's share of the server's budget (None: no budget known).
        seeds: the seeds' rule: the default size divided by the number of instances.
        notes: the reasoning, one sentence a line, for the report.
    """

    measured: int | None
    best: int | None
    connection_limit: int | None
    capped: bool
    share: int | None
    seeds: int
    notes: tuple[str, ...]


@dataclass
class TuneResult:
    """Everything a ``dbpool tune`` run measured and concluded.

    Attributes:
        database: the dialect's name (``postgresql``, ``mysql``, ``sqlite``, ...).
        where: the server (or file) measured, without the password.
        workload: the unit of work.
        threads: concurrent callers.
        seconds: measured seconds per size.
        warmup: warm-up seconds per size, not counted.
        pool_timeout: the pools' ``pool_timeout``.
        instances: instances of the application the recommendation is for.
        default_size: the default ``connection_limit`` for this database.
        sizes: the sizes asked for, in order.
        steps: what each measured size gave, in order (fewer than ``sizes`` when
            interrupted).
        interrupted: Ctrl-C stopped the run early.
        plan: the server's connection budget (``dbpool budget``), None where there is
            none (SQLite, PgBouncer).
        budget_note: why there is no ``plan``, if there is none.
        recommendation: the conclusion from ``steps``.
    """

    database: str
    where: str
    workload: Workload
    threads: int
    seconds: float
    warmup: float
    pool_timeout: float
    instances: int
    default_size: int
    sizes: list[int]
    steps: list[Step] = field(default_factory=list)
    interrupted: bool = False
    plan: Plan | None = None
    budget_note: str = ""
    recommendation: Recommendation | None = None


def run(
    url: URL,
    workload: Workload,
    *,
    sizes: Sequence[int] | None = None,
    threads: int = 64,
    seconds: float = 5.0,
    warmup: float = 1.0,
    pool_timeout: float | None = None,
    instances: int = 1,
    progress: bool = True,
    on_start: Callable[[TuneResult], None] | None = None,
) -> TuneResult:
    """Measure ``workload`` at each pool size and recommend one.

    Before measuring it asks the server for its connection budget (for databases that
    have one) and runs the unit of work once, so that a bad statement or an unreachable
    server fails at once. Each size gets a fresh engine: ``threads`` callers run the
    unit of work for ``warmup + seconds`` seconds, the engine is disposed, and the next
    size starts. Ctrl-C (KeyboardInterrupt) stops the callers, disposes the engine and
    returns what was measured so far, with ``interrupted`` set.

    Args:
        url: the database, with any pool settings; ``connection_limit`` and
            ``pool_timeout`` are overridden for each size.
        workload: the unit of work (`load_workload()`).
        sizes: the pool sizes; None for `default_sizes()`.
        threads: concurrent callers sharing each pool.
        seconds: measured seconds per size.
        warmup: seconds per size before measuring starts.
        pool_timeout: ``pool_timeout`` for every pool; None keeps the URL's (default 10).
        instances: instances of the application (a pool each) the recommendation is for.
        progress: show a progress bar on stderr (a terminal only; needs tqdm).
        on_start: called with the (empty) result once the budget is known and the
            sizes are fixed, just before measuring: the header of the report.

    Returns:
        The measurements and the recommendation.

    Raises:
        ConfigError: a bad setting in the URL, or sizes past what the server can give.
        ConnectError: the database cannot be reached.
        DBAPIError: the unit of work fails on its first run.

    Example:
        ```python
        from dbpool import make_url
        from dbpool.tune import load_workload, run

        result = run(make_url("postgresql://app@db/shop"), load_workload(sql="SELECT 1"),
                     sizes=[1, 2, 4, 8], threads=32, seconds=3)
        for step in result.steps:
            print(step.size, round(step.throughput), step.query_p99)
        print(result.recommendation.connection_limit)
        ```
    """
    for name, value, least in (("threads", threads, 1), ("instances", instances, 1)):
        if value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if seconds <= 0 or warmup < 0:
        raise ConfigError("seconds must be > 0 and warmup >= 0")
    if sizes is not None and (not sizes or min(sizes) < 1):
        raise ConfigError(f"sizes must be pool sizes >= 1, got {list(sizes)!r}")
    probe_engine = create_engine(url, budget_check=False)
    dialect = probe_engine.dialect
    config = probe_engine.config
    default_size = _default_size(dialect)
    if sizes is None:
        current = config.connection_limit if "connection_limit" in url.query else None
        sizes = default_sizes(default_size, current)
    timeout = config.pool_timeout if pool_timeout is None else pool_timeout
    result = TuneResult(
        database=dialect.name,
        where=dialect.describe(),
        workload=workload,
        threads=threads,
        seconds=seconds,
        warmup=warmup,
        pool_timeout=timeout,
        instances=instances,
        default_size=default_size,
        sizes=list(sizes),
    )
    result.plan, result.budget_note = _budget(url, probe_engine, instances)
    probe_engine.dispose()  # never opened: it only resolved the settings
    if result.plan is not None and max(sizes) > result.plan.budget:
        raise ConfigError(
            f"--sizes goes up to {max(sizes)}, more than the {result.plan.budget} "
            f"connections {dialect.name} at {dialect.describe()} can still give this "
            "application (dbpool budget shows why): measure smaller sizes"
        )
    masked = _masker(url)
    if on_start is not None:
        on_start(result)
    bar = progress_bar(sizes, warmup + seconds) if progress else _NoProgress()
    try:
        for index, size in enumerate(sizes):
            bar.step(index, size)
            engine = create_engine(
                url, connection_limit=size, pool_timeout=timeout, budget_check=False
            )
            try:
                if index == 0:
                    with engine.connect() as conn:  # fail fast: one unit before the run
                        workload(conn)
                step = _measure(engine, workload, size, threads, warmup, seconds, timeout,
                                bar, masked)  # fmt: skip
            finally:
                engine.dispose(timeout=1.0)
            result.steps.append(step)
            if step.completed == 0 and step.errors:  # the database went away
                raise DBPoolError(f"size {size}: every unit of work failed: {step.first_error}")
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    result.recommendation = recommend(
        result.steps, default_size=default_size, instances=instances, plan=result.plan
    )
    return result


def _measure(engine: Engine, workload: Workload, size: int, threads: int, warmup: float,
             seconds: float, timeout: float, bar: Progress,
             masked: Callable[[str], str]) -> Step:  # fmt: skip
    """One size: the callers run, the main thread sleeps (where Ctrl-C lands) and moves
    the progress bar; the callers are stopped even when it is interrupted."""
    engine.open()
    now = time.perf_counter()
    start = now + warmup
    end = start + seconds
    round_ = _Round(engine, workload, threads, start, end)
    round_.begin()
    shown = now
    try:
        while (now := time.perf_counter()) < end:
            time.sleep(min(_TICK, end - now))
            current = min(time.perf_counter(), end)
            bar.advance(current - shown)
            shown = current
    finally:
        round_.finish(grace=(timeout or 0.0) + _STOP_GRACE)
    return round_.step(size, masked)


def _default_size(dialect: Dialect) -> int:
    special: int | None = dialect.default_connection_limit
    return special or default_connection_limit()


def _budget(url: URL, engine: Engine, instances: int) -> tuple[Plan | None, str]:
    """The server's connection budget, or None and why there is none."""
    from dbpool import budget

    dialect = engine.dialect
    if not dialect.supports_budget:
        return None, f"{dialect.name} has no server connection limit"
    if engine.config.pgbouncer:
        return None, (
            "pgbouncer=true: PgBouncer's max_client_conn limits this URL, not the server "
            "(dbpool budget on the direct URL shows the server's)"
        )
    try:
        return budget.probe(url, instances=instances), ""
    except ConnectError:
        raise
    except Exception as exc:  # the budget is advice: a server that will not say is no failure
        return None, f"the server's connection budget is unknown ({_one_line(exc)})"


def _masker(url: URL) -> Callable[[str], str]:
    from urllib.parse import quote

    secrets = {url.password, quote(url.password, safe="")} if url.password else set()

    def masked(message: str) -> str:
        for secret in secrets:
            message = message.replace(secret, "***")
        return message

    return masked


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# -- the conclusion ---------------------------------------------------------------------


def recommend(
    steps: Sequence[Step], *, default_size: int, instances: int = 1, plan: Plan | None = None
) -> Recommendation:
    """The recommended pool size from the measured steps.

    The smallest size whose throughput is within `WITHIN` (5 %) of the best
    among the sizes that had no timeouts and no errors, capped at each instance's share
    of the server's budget when ``plan`` gives one; the seeds' rule (the default size
    divided by ``instances``, at least 1) is reported beside it.

    Args:
        steps: the measured sizes.
        default_size: the default ``connection_limit`` for the database.
        instances: instances of the application, a pool each.
        plan: the server's connection budget (`dbpool.budget.probe()`), if known.

    Returns:
        The recommendation with its reasoning.

    Example:
        ```python
        steps = [Step(1, 1.0, 500, 500.0, 0, 0, 0, 0, 0, 0, 0),
                 Step(2, 1.0, 990, 990.0, 0, 0, 0, 0, 0, 0, 0),
                 Step(4, 1.0, 1000, 1000.0, 0, 0, 0, 0, 0, 0, 0)]
        recommend(steps, default_size=5).measured  # 2: within 5 % of size 4's 1000/s
        ```
    """
    seeds = max(1, default_size // instances)
    share = plan.share if plan is not None else None
    notes: list[str] = []
    clean = [step for step in steps if not step.timeouts and not step.errors]
    if not steps:
        notes.append("Nothing was measured.")
    elif not clean:
        notes.append(
            "Every size had pool timeouts or errors: nothing to recommend. Raise "
            "--pool-timeout, lower --threads, or look at the errors."
        )
    if not clean:
        return Recommendation(None, None, None, False, share, seeds, tuple(notes))
    best = max(clean, key=lambda step: step.throughput)
    floor = best.throughput * (1 - WITHIN)
    chosen = min((step for step in clean if step.throughput >= floor),
                 key=lambda step: step.size)  # fmt: skip
    notes.append(
        f"Best throughput {_rate(best.throughput)} at size {best.size}; the smallest size "
        f"within {WITHIN:.0%} of it without timeouts is {chosen.size} "
        f"({_rate(chosen.throughput)})."
    )
    skipped = [step.size for step in steps if step.timeouts or step.errors]
    if skipped:
        notes.append(f"Left out for timeouts or errors: size {_join(skipped)}.")
    limit = chosen.size
    capped = False
    if plan is not None:
        words = f"{plan.budget} // {_count(instances, 'instance')}"
        if plan.share < 1:
            notes.append(
                f"The server's budget for this application is {plan.budget} connections: "
                f"not even one per instance ({words}). Put a pooler in front of it or free "
                "connections elsewhere (dbpool budget shows who holds them)."
            )
        elif chosen.size > plan.share:
            limit, capped = plan.share, True
            notes.append(
                f"Capped at {plan.share}, each instance's share of the server's connection "
                f"budget ({words}; dbpool budget shows the numbers)."
            )
        else:
            notes.append(
                f"Fits the server's connection budget: {plan.share} per instance ({words})."
            )
    notes.append(
        f"The seeds' rule: default size {default_size} // {_count(instances, 'instance')} "
        f"= {seeds}" + (f"; measured here: {limit}." if limit != seeds else ", the same.")
    )
    return Recommendation(chosen.size, best.size, limit, capped, share, seeds, tuple(notes))


# -- output ---------------------------------------------------------------------------


def header(result: TuneResult) -> str:
    """The lines shown before measuring: what is measured, how, and the budget.

    Args:
        result: the run, as `run()` passes it to ``on_start``.

    Returns:
        The header text.
    """
    workload = result.workload
    how = " in one transaction" if workload.transaction else ""
    per_size = f"{result.warmup:g} s warm-up + {result.seconds:g} s"
    eta = len(result.sizes) * (result.warmup + result.seconds)
    lines = [
        f"database: {result.database} at {result.where}",
        f"workload: {workload.description}{how}",
        f"{result.threads} threads; sizes {_join(result.sizes)}; {per_size} each "
        f"(about {eta:.0f} s); pool_timeout {result.pool_timeout:g} s",
    ]
    if result.plan is not None:
        plan = result.plan
        lines.append(
            f"server budget: {plan.budget} connections for this application, "
            f"{plan.share} per instance for {_count(result.instances, 'instance')}"
        )
    elif result.budget_note:
        lines.append(f"server budget: none ({result.budget_note})")
    return "\n".join(lines)


def report(result: TuneResult, table: Callable[..., str]) -> str:
    """The measurements as a table and the recommendation below it.

    Args:
        result: the run.
        table: lays out rows under a header (``dbpool.cli._table``).

    Returns:
        The report text.
    """
    rec = result.recommendation
    rows = []
    for step in result.steps:
        marks = []
        if step.size == result.default_size:
            marks.append("default")
        if rec is not None and step.size == rec.measured:
            marks.append("recommended")
        if step.timeouts or step.errors:
            marks.append("timeouts/errors")
        rows.append((
            str(step.size), f"{step.throughput:,.0f}", _ms(step.wait_p50), _ms(step.wait_p99),
            _ms(step.wait_max), _ms(step.query_p50), _ms(step.query_p99), str(step.timeouts),
            str(step.errors), ", ".join(marks),
        ))  # fmt: skip
    lines = []
    if rows:
        lines.append(table(rows, header=(
            "size", "per second", "wait p50", "wait p99", "wait max", "query p50",
            "query p99", "P2024", "errors", "",
        )))  # fmt: skip
        lines.append("(per second: units of work completed; times in ms; wait: checkout "
                     "wait; query: the unit of work on its connection)")  # fmt: skip
    if result.interrupted:
        done = len(result.steps)
        lines.append(
            f"Interrupted: {done} of {len(result.sizes)} sizes measured"
            + (f" (stopped during size {result.sizes[done]})." if done < len(result.sizes)
               else ".")
        )  # fmt: skip
    errors = [(step.size, step.first_error) for step in result.steps if step.first_error]
    for size, error in errors[:3]:
        lines.append(f"size {size}, first error: {error}")
    if rec is not None:
        lines.append("")
        lines.extend(rec.notes)
        if rec.connection_limit is not None:
            lines.append(
                f"Recommended: connection_limit={rec.connection_limit}"
                + (f" for each of {result.instances} instances" if result.instances > 1
                   else "")
            )  # fmt: skip
    return "\n".join(lines)


def as_json(result: TuneResult, url: URL) -> dict[str, Any]:
    """The run as one JSON document (``--json``); ``str(url)`` hides the password.

    Args:
        result: the run.
        url: the URL measured.

    Returns:
        A JSON-serialisable dict with one entry per measured size under ``"sizes"``
        and the recommendation under ``"recommendation"``.
    """
    from dbpool import __version__

    rec = result.recommendation
    plan = result.plan
    return {
        "dbpool": __version__,
        "url": str(url),
        "database": result.database,
        "workload": {
            "kind": result.workload.kind,
            "description": result.workload.description,
            "transaction": result.workload.transaction,
        },
        "threads": result.threads,
        "seconds": result.seconds,
        "warmup": result.warmup,
        "pool_timeout": result.pool_timeout,
        "instances": result.instances,
        "default_connection_limit": result.default_size,
        "sizes_planned": result.sizes,
        "interrupted": result.interrupted,
        "sizes": [
            {
                "size": step.size,
                "seconds": round(step.seconds, 3),
                "completed": step.completed,
                "throughput_per_s": round(step.throughput, 1),
                "checkout_wait_ms": {
                    "p50": _msf(step.wait_p50),
                    "p99": _msf(step.wait_p99),
                    "max": _msf(step.wait_max),
                },
                "query_latency_ms": {"p50": _msf(step.query_p50), "p99": _msf(step.query_p99)},
                "timeouts": step.timeouts,
                "errors": step.errors,
                "first_error": step.first_error,
            }
            for step in result.steps
        ],
        "budget": None if plan is None else {
            "budget": plan.budget,
            "share_per_instance": plan.share,
            "binding_limit": plan.binding,
            "server_limit": plan.limit,
            "others": plan.others,
            "headroom": plan.headroom,
        },
        "budget_note": result.budget_note or None,
        "recommendation": None if rec is None else {
            "connection_limit": rec.connection_limit,
            "measured": rec.measured,
            "best_size": rec.best,
            "within": WITHIN,
            "capped_by_budget": rec.capped,
            "share_per_instance": rec.share,
            "seeds_rule": rec.seeds,
            "notes": list(rec.notes),
        },
    }  # fmt: skip


def plot(result: TuneResult, path: str, *, title: str | None = None) -> None:
    """Write the PNG of throughput and p99 latency against pool size (``--plot``).

    Args:
        result: the run.
        path: where to write the PNG.
        title: the figure's title; None for one naming the database and workload.

    Raises:
        ConfigError: matplotlib is not installed (``pip install "dbpool[tune]"``).
    """
    from dbpool import _tune_plot

    _tune_plot.write(result, path, title=title)


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def _msf(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}/s"


def _join(numbers: Sequence[int]) -> str:
    return ",".join(str(n) for n in numbers)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _shorten(sql: str, limit: int = 60) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
