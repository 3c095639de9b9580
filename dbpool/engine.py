"""Engine, Connection and Transaction: the SQLAlchemy 2.0-style front of the pool."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from dbpool import dialects, lifecycle, shared
from dbpool.budget import add_startup_check
from dbpool.config import SETTINGS, EngineConfig, did_you_mean, resolve_settings
from dbpool.dialects.base import Dialect
from dbpool.events import Events
from dbpool.exc import (
    ArgumentError,
    ConfigError,
    ProgrammingError,
    ResourceClosedError,
    is_dbapi_error,
    wrap_dbapi_error,
)
from dbpool.histogram import QUERY_BUCKETS, Histogram
from dbpool.lifecycle import ExitHooks
from dbpool.metrics import Metrics
from dbpool.pool import PoolStatus, QueuePool, _Record
from dbpool.proxy import INHERITED_AFTER_FORK
from dbpool.reaper import Reaper
from dbpool.result import Result
from dbpool.sql import TextClause
from dbpool.url import URL, make_url

if TYPE_CHECKING:
    from dbpool.direct import DirectTarget

logger = logging.getLogger("dbpool")
_monotonic = time.monotonic
_getframe = sys._getframe

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
_PARAMETER_ERRORS = (KeyError, TypeError)
Hook = TypeVar("Hook", bound=Callable[[], object])


class Engine:
    """A database URL, its dialect, its resolved settings and its pool."""

    def __init__(
        self,
        url: URL,
        dialect: Dialect,
        config: EngineConfig,
        pool: QueuePool,
        *,
        echo: bool = False,
        metrics_labels: Mapping[str, str] | None = None,
        direct: DirectTarget | None = None,
    ) -> None:
        self.url = url
        # engine.direct()'s target (dbpool/direct.py); direct_url is None without one.
        self._direct = direct
        self.direct_url: URL | None = None if direct is None else direct.url
        self.dialect = dialect
        self.config = config
        self.pool = pool
        self.events: Events = pool.events
        self.echo = echo
        if echo:
            _show_echo_output()
        self.query_histogram = Histogram(QUERY_BUCKETS)
        self.metrics = Metrics(
            pool, self.query_histogram, metrics_labels, timeouts=dialect.timeouts
        )
        self._exit_hooks = ExitHooks()
        shared.track(self)

    @property
    def queries_total(self) -> int:
        """Statements run through this engine's connections (successful ones)."""
        return self.query_histogram.count

    # -- connections -------------------------------------------------------------------

    def connect(self) -> Connection:
        """Check out a connection (commit-as-you-go; closing without commit rolls back)."""
        frame = _getframe(1)
        return Connection(self, self.pool.checkout(), frame.f_code, frame.f_lineno)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in one transaction: committed on success, rolled back on error."""
        with self.connect() as conn, conn.begin():
            yield conn

    def direct(self) -> AbstractContextManager[Connection]:
        """A connection of its own past the external pooler, for what PgBouncer's
        transaction mode breaks (migrations, LISTEN/NOTIFY, advisory locks, session
        settings, prepared statements): opened on ``direct_url`` when the block starts,
        closed when it ends, never from the pool (see dbpool/direct.py for the rules)."""
        from dbpool.direct import direct_connection

        return direct_connection(self)

    def open(self) -> None:
        """Start the pool with one connection now; fails fast if the database is unreachable."""
        self.pool.open()

    def before_exit(self, fn: Hook) -> Hook:
        """Run ``fn()`` before this engine lets go of its connections: on ``dispose()``,
        at normal interpreter exit and on SIGINT/SIGTERM. The engine is still usable in
        ``fn``; a hook that raises is logged and the others still run. Usable as a
        decorator."""
        self._exit_hooks.add(fn)
        lifecycle.register(self)
        return fn

    def dispose(self, timeout: float | None = None) -> None:
        """Run the before-exit hooks, then close every connection: idle ones at once,
        checked-out ones when they come back (or after ``timeout`` seconds, wherever
        they are). Callers waiting for a connection get ``PoolDisposedError``. The
        engine stays usable: the next checkout starts afresh.

        The hooks run once; a later ``dispose()`` runs them again only if the engine
        was used in between."""
        hooks = self._exit_hooks
        if hooks and (hooks.due or self.pool._started):
            hooks.run(self)
        self.pool.dispose(timeout)
        self.dialect.release_resources()
        if self._direct is not None:
            self._direct.release_resources(self.dialect)

    def status(self) -> PoolStatus:
        return self.pool.status()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        if self.direct_url is not None:
            return f"Engine({self.url}, direct_url={self.direct_url})"
        return f"Engine({self.url})"

    def _repr_html_(self) -> str:
        from dbpool.display import engine_html

        return engine_html(self)


class Connection:
    """One checked-out connection with SQLAlchemy 2.0 semantics.

    A statement opens a transaction implicitly (unless the engine is AUTOCOMMIT); it
    lasts until ``commit()`` or ``rollback()``; ``close()`` rolls back whatever is left
    and returns the connection to the pool.
    """

    __slots__ = ("_closed", "_code", "_dialect", "_engine", "_explicit", "_in_transaction",
                 "_invalid", "_line", "_queries", "_record")  # fmt: skip

    def __init__(self, engine: Engine, record: _Record, code: Any = None, line: int = 0) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._record: _Record | None = record
        self._code = code  # where it was checked out, for the leak warning
        self._line = line
        self._queries = engine.query_histogram  # a direct connection's go uncounted
        self._in_transaction = False
        self._explicit = False  # a transaction opened by begin()
        self._invalid = False
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def invalidated(self) -> bool:
        return self._invalid

    @property
    def driver_connection(self) -> Any:
        """The driver's own connection object."""
        return self._live_record().dbapi_connection

    def in_transaction(self) -> bool:
        return self._in_transaction

    def _live_record(self) -> _Record:
        record = self._record
        if record is not None:
            if self._engine.pool.inherited(record):
                raise ResourceClosedError(INHERITED_AFTER_FORK)
            return record
        if self._closed:
            raise ResourceClosedError("This Connection is closed")
        if self._in_transaction:
            raise ResourceClosedError(
                "This Connection was invalidated inside a transaction; call rollback() "
                "before using it again"
            )
        # Invalidated outside a transaction: carry on with a fresh connection.
        self._record = record = self._engine.pool.checkout()
        self._invalid = False
        return record

    # -- statements --------------------------------------------------------------------

    def execute(self, statement: TextClause, params: Params = None) -> Result:
        """Run a ``text()`` statement; a list of parameter dicts runs it once per dict."""
        if not isinstance(statement, TextClause):
            raise ArgumentError(
                "execute() takes a statement made with dbpool.text(); "
                "use exec_driver_sql() for a raw SQL string"
            )
        compiled = statement.compile(self._dialect.paramstyle)
        if params is None or isinstance(params, Mapping):
            return self._run(compiled.sql, compiled.bind(params), False)
        if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
            return self._run(compiled.sql, [compiled.bind(p) for p in params], True)
        raise ArgumentError("params must be a dict, a list of dicts, or None")

    def exec_driver_sql(self, statement: str, params: Any = None) -> Result:
        """Run SQL as the driver takes it, in its own paramstyle; a list of parameter
        sets runs executemany."""
        many = (
            isinstance(params, list) and bool(params) and not isinstance(params[0], (str, bytes))
        )
        many = many and isinstance(params[0], (Mapping, tuple, list))
        return self._run(statement, params, many)

    def _run(self, sql: str, params: Any, many: bool) -> Result:
        record = self._live_record()
        dbapi_connection = record.dbapi_connection
        engine = self._engine
        if engine.echo:
            logger.info("%s", sql)
        start = _monotonic()
        dialect = self._dialect
        # One cursor per pooled connection, kept across checkouts: results are fetched
        # eagerly, so a cursor is free again once a statement returns, and making one
        # costs microseconds on the hot path. A failed statement throws it away.
        cursor = record.cursor
        try:
            if not self._in_transaction and not dialect.autocommit:
                dialect.do_begin(dbapi_connection)
                self._in_transaction = True
            if cursor is None:
                cursor = record.cursor = dbapi_connection.cursor()
            if many:
                cursor.executemany(sql, params)
            elif params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            result = Result(cursor, dialect.column_names(cursor))
        except Exception as exc:
            record.cursor = None
            self._handle_error(exc, record, sql, params, cursor)
            raise  # not reached: _handle_error raises
        self._queries.observe(_monotonic() - start)
        return result

    def _handle_error(self, exc: Exception, record: _Record, sql: str, params: Any,
                      cursor: Any) -> None:  # fmt: skip
        if cursor is not None:
            with suppress(Exception):
                cursor.close()
        if not is_dbapi_error(exc):
            if params is None or not isinstance(exc, _PARAMETER_ERRORS):
                raise exc
            # PyMySQL formats parameters in Python and rejects bad ones with KeyError (a
            # missing name) or TypeError (a value it cannot send): PEP 249 calls that a
            # ProgrammingError, as psycopg and sqlite3 do.
            raise ProgrammingError(
                f"The driver rejected the parameters: ({type(exc).__module__}."
                f"{type(exc).__name__}) {exc}\n[SQL: {sql}]",
                orig=exc,
                statement=sql,
                params=params,
            ) from exc
        disconnect = self._dialect.is_disconnect(exc)
        if disconnect:
            self._invalidate(exc, disconnect=True)
        raise wrap_dbapi_error(
            exc, statement=sql, params=params, connection_invalidated=disconnect
        ) from exc

    # -- transactions ------------------------------------------------------------------

    def begin(self) -> Transaction:
        """Open a transaction (a real one, even on an AUTOCOMMIT engine)."""
        if self._in_transaction:
            raise ArgumentError(
                "A transaction is already open on this Connection (statements begin one "
                "implicitly); commit() or rollback() it first"
            )
        record = self._live_record()
        try:
            self._dialect.begin_explicit(record.dbapi_connection)
        except Exception as exc:
            self._handle_error(exc, record, "BEGIN", None, None)
        self._in_transaction = True
        self._explicit = True
        return Transaction(self)

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        if self._record is None and not self._closed:
            self._in_transaction = self._explicit = False  # invalidated: nothing to undo
            return
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        record = self._live_record()
        if not self._in_transaction:
            return
        conn = record.dbapi_connection
        self._in_transaction = False
        try:
            conn.commit() if commit else conn.rollback()
            if self._explicit:
                self._dialect.end_explicit(conn)
        except Exception as exc:
            self._explicit = False
            self._handle_error(exc, record, "COMMIT" if commit else "ROLLBACK", None, None)
        self._explicit = False

    # -- ending ------------------------------------------------------------------------

    def close(self) -> None:
        """Roll back what is uncommitted and return the connection to the pool."""
        if self._closed:
            return
        self._closed = True
        record, self._record = self._record, None
        if record is None:
            return
        if self._engine.pool.inherited(record):  # the parent's socket: send nothing on it
            self._engine.pool.checkin(record)
            return
        conn = record.dbapi_connection
        try:
            if self._in_transaction:
                self._in_transaction = False
                conn.rollback()
            if self._explicit:
                self._explicit = False
                self._dialect.end_explicit(conn)
        except BaseException as exc:  # KeyboardInterrupt too: the slot must come back
            logger.warning("rollback on close failed; discarding the connection",
                           exc_info=True)  # fmt: skip
            self._engine.pool.invalidate(record)
            if not isinstance(exc, Exception):
                raise
            return
        self._engine.pool.checkin(record)

    def invalidate(self, error: BaseException | None = None) -> None:
        """Discard the driver connection (closed, slot freed); the next use checks out a
        fresh one, after a rollback() if a transaction was open."""
        if self._closed:
            raise ResourceClosedError("This Connection is closed")
        self._invalidate(error, disconnect=False)

    def _invalidate(self, error: BaseException | None, *, disconnect: bool) -> None:
        record, self._record = self._record, None
        if record is None:
            return
        self._invalid = True
        self._engine.pool.invalidate(record, error, disconnect=disconnect)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        record = self._record
        if record is not None and not self._closed:
            self._record = None
            with suppress(Exception):  # at interpreter shutdown modules may be torn down
                self._engine.pool.orphaned(record, self._code, self._line)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Connection {state} to {self._engine.url}>"


class Transaction:
    """The transaction opened by ``Connection.begin()``; a context manager."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def is_active(self) -> bool:
        return self._connection._in_transaction

    def commit(self) -> None:
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.is_active:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


ENGINE_KEYWORDS = ("connect_args", "creator", "direct_url", "echo", "metrics_labels")
_SETTING_NAMES = tuple(SETTINGS)


def create_engine(
    url: str | URL | None = None,
    *,
    creator: Callable[[], Any] | None = None,
    connect_args: Mapping[str, Any] | None = None,
    echo: bool = False,
    metrics_labels: Mapping[str, str] | None = None,
    direct_url: str | URL | None = None,
    **settings: Any,
) -> Engine:
    """Make an engine; nothing is opened until the first checkout or ``engine.open()``.

    Pool settings come from the URL query; keyword arguments override them.
    ``direct_url`` is the database without the external pooler, for ``engine.direct()``;
    ``DIRECT_URL`` is read with ``DATABASE_URL``, when no URL is given.
    """
    direct_origin = ""
    if url is None:
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise ConfigError(
                "No database URL: pass one to create_engine() or set DATABASE_URL, "
                "e.g. sqlite:///app.db or postgresql://user@localhost:5432/app"
            )
        if direct_url is None and os.environ.get("DIRECT_URL"):
            direct_url, direct_origin = os.environ["DIRECT_URL"], " (from DIRECT_URL)"
    parsed = make_url(url)
    dialect_cls = dialects.load(parsed.drivername)
    for name in settings:
        if name not in _SETTING_NAMES:
            raise ConfigError(
                f"create_engine() got an unknown keyword argument {name!r}; it takes the pool "
                f"settings ({', '.join(_SETTING_NAMES)}) and {', '.join(ENGINE_KEYWORDS)}."
                + did_you_mean(name, (*_SETTING_NAMES, *ENGINE_KEYWORDS))
            )
    config, driver_params = resolve_settings(
        parsed.query, settings, default_limit=dialect_cls.default_connection_limit
    )
    dialect = dialect_cls(parsed, config, driver_params, connect_args)
    from dbpool import direct  # it builds on Connection, defined above

    direct_target = direct.resolve(direct_url, direct_origin, url=parsed, dialect=dialect,
                                   settings=settings, connect_args=connect_args,
                                   creator=creator)  # fmt: skip
    reaper = (
        Reaper.for_engine(creator or dialect.connect, dialect) if config.reap_idle_after else None
    )
    pool = QueuePool(
        reaper or creator or dialect.connect,
        connection_limit=config.connection_limit,
        pool_timeout=config.pool_timeout,
        max_idle_connection_lifetime=config.max_idle_connection_lifetime,
        max_connection_lifetime=config.max_connection_lifetime,
        pre_ping=False if config.pre_ping is None else config.pre_ping,
        leak_detection_threshold=config.leak_detection_threshold,
        ping=dialect.ping if dialect.supports_ping else None,
        reset=dialect.reset,
        close=dialect.close,
        abort=dialect.abort,
        name=dialect.name,
        where=dialect.describe(),
    )
    if reaper is not None:
        reaper.attach(pool)
    # Through PgBouncer the server's limit is PgBouncer's business, not this pool's.
    if config.budget_check and dialect.supports_budget and not config.pgbouncer:
        add_startup_check(pool.events, dialect, config.connection_limit)
    return Engine(parsed, dialect, config, pool, echo=echo, metrics_labels=metrics_labels,
                  direct=direct_target)  # fmt: skip


def _show_echo_output() -> None:
    """Make ``echo=True`` visible with no logging set up, as SQLAlchemy's is: INFO on
    the ``dbpool`` logger, and a stderr handler unless some handler would print it."""
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not _has_output(logger):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)


def _has_output(log: logging.Logger | None) -> bool:
    """Whether a record logged on ``log`` reaches a handler that prints (the library's own
    NullHandler does not)."""
    while log is not None:
        if any(not isinstance(h, logging.NullHandler) for h in log.handlers):
            return True
        log = log.parent if log.propagate else None
    return False
