"""Engine, Connection and Transaction: the SQLAlchemy 2.0-style front of the pool."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
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
from dbpool.histogram import BATCH as _HISTOGRAM_BATCH
from dbpool.histogram import QUERY_BUCKETS, Histogram
from dbpool.lifecycle import ExitHooks
from dbpool.metrics import Metrics
from dbpool.pool import PoolStatus, QueuePool, _Record
from dbpool.proxy import INHERITED_AFTER_FORK, line_at
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
    """A database URL, its dialect, its resolved settings and its pool.

    Made by [`create_engine()`][dbpool.create_engine]; share one engine between all the
    threads of a process. Nothing is opened until the first checkout or
    [`open()`][dbpool.Engine.open]. Used as a context manager
    (`with create_engine(...) as engine:`), the engine is disposed at the end of the
    block. In Jupyter it displays as a table of its settings and counts.

    Attributes:
        url: The [`URL`][dbpool.URL] (its `str()` hides the password).
        direct_url: The [`URL`][dbpool.URL] of the same database without the external
            pooler, for [`direct()`][dbpool.Engine.direct], or None.
        dialect: The database adapter (`dialect.name` is e.g. `"postgresql"`).
        config: The `EngineConfig`: every resolved setting, frozen.
        pool: The engine's [`QueuePool`][dbpool.QueuePool].
        events: The pool's `Events` (listeners for connect, checkout, checkin, ...).
        metrics: The engine's `Metrics` (Prometheus text, JSON, a dict).
        echo: Whether every statement is logged at INFO on the `dbpool` logger.
        query_histogram: How long the statements run through this engine's connections
            took (what `metrics` reports).

    Example:
        ```python
        import dbpool

        with dbpool.create_engine("sqlite://", connection_limit=2) as engine:
            with engine.begin() as conn:
                conn.execute(dbpool.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(dbpool.text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
            with engine.connect() as conn:
                print(conn.execute(dbpool.text("SELECT sum(x) FROM t")).scalar_one())  # 3
            print(engine.status().open, engine.queries_total)  # 1 3
        ```
    """

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
        """How many statements ran successfully through this engine's connections."""
        return self.query_histogram.count

    # -- connections -------------------------------------------------------------------

    def connect(self) -> Connection:
        """Check out a connection, for commit-as-you-go.

        The first statement opens a transaction (unless the engine is `AUTOCOMMIT`);
        [`commit()`][dbpool.Connection.commit] ends it, and closing the connection without
        a commit rolls back. Use it as a context manager so that it always goes back to
        the pool. The pool starts at the first checkout.

        Returns:
            A [`Connection`][dbpool.Connection] checked out of the pool.

        Raises:
            PoolTimeoutError: No connection became free within `pool_timeout` (code `P2024`).
            ConnectError: A new connection was needed and the database cannot be reached
                (`TooManyConnectionsError`, code `P2037`, when the server is full).
            PoolDisposedError: The engine was disposed while this call waited.

        Example:
            ```python
            import dbpool

            engine = dbpool.create_engine("sqlite://")
            with engine.connect() as conn:
                conn.execute(dbpool.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(dbpool.text("INSERT INTO t VALUES (1)"))
                conn.commit()  # without it, closing rolls back
            engine.dispose()
            ```
        """
        frame = _getframe(1)
        return Connection(self, self.pool.checkout(), frame.f_code, frame.f_lasti)

    def begin(self) -> AbstractContextManager[Connection]:
        """A connection inside one transaction, for a `with` block.

        The connection is checked out when the block starts and a transaction begins (a
        real one, even on an `AUTOCOMMIT` engine). At the end of the block it is committed
        if the block succeeded and rolled back if it raised; either way the connection
        goes back to the pool.

        Returns:
            A context manager whose `with ... as conn` gives a
            [`Connection`][dbpool.Connection].

        Raises:
            PoolTimeoutError: At the start of the block, as for
                [`connect()`][dbpool.Engine.connect].
            DBAPIError: The commit failed (the connection is returned all the same).

        Example:
            ```python
            import dbpool

            engine = dbpool.create_engine("sqlite://")
            with engine.begin() as conn:
                conn.execute(dbpool.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(dbpool.text("INSERT INTO t VALUES (:x)"), {"x": 1})
            engine.dispose()
            ```
        """
        frame = _getframe(1)
        conn = _Begin(self, None, frame.f_code, frame.f_lasti)
        conn._closed = True  # open only inside the with block
        return conn

    def direct(self) -> AbstractContextManager[Connection]:
        """A connection of its own past the external pooler, for a `with` block.

        For what PgBouncer's transaction mode breaks (migrations, `LISTEN`/`NOTIFY`,
        session advisory locks, `SET`, prepared statements): opened on `direct_url` when
        the block starts and closed (not pooled) when it ends. It takes no pool slot and
        is not counted in [`status()`][dbpool.Engine.status] or the metrics. Without a
        `direct_url`, it opens an unpooled connection on `url`, except on a
        `pgbouncer=true` engine.

        Returns:
            A context manager whose `with ... as conn` gives a
            [`Connection`][dbpool.Connection].

        Raises:
            ConfigError: The engine has `pgbouncer=true` and no `direct_url`.
            ConnectError: The database cannot be reached.
        """
        from dbpool.direct import direct_connection

        return direct_connection(self)

    def open(self) -> None:
        """Start the pool now with one connection (Prisma's `$connect()`).

        Raises:
            ConnectError: At once, with no retries, if the database cannot be reached.
        """
        self.pool.open()

    def before_exit(self, fn: Hook) -> Hook:
        """Run `fn()` before this engine lets go of its connections.

        The hooks run on [`dispose()`][dbpool.Engine.dispose], at normal interpreter exit
        and on SIGINT/SIGTERM. The engine can still run queries inside `fn`; a hook that
        raises is logged and the others still run. Usable as a decorator.

        Args:
            fn: A function of no arguments.

        Returns:
            `fn` itself.

        Example:
            ```python
            import dbpool

            engine = dbpool.create_engine("sqlite://")

            @engine.before_exit
            def goodbye() -> None:
                print("closing")

            engine.dispose()  # prints: closing
            ```
        """
        self._exit_hooks.add(fn)
        lifecycle.register(self)
        return fn

    def dispose(self, timeout: float | None = None) -> None:
        """Run the before-exit hooks, then close every connection.

        Idle connections are closed at once, checked-out ones when they come back (or,
        with `timeout`, after that many seconds wherever they are). Callers waiting for a
        connection get `PoolDisposedError`. The engine stays usable: the next checkout
        starts a new pool. The hooks run once; a later `dispose()` runs them again only
        if the engine was used in between.

        Args:
            timeout: Seconds to wait for checked-out connections before closing them
                where they are; None waits for them to come back.
        """
        hooks = self._exit_hooks
        if hooks and (hooks.due or self.pool._started):
            hooks.run(self)
        self.pool.dispose(timeout)
        self.dialect.release_resources()
        if self._direct is not None:
            self._direct.release_resources(self.dialect)

    def status(self) -> PoolStatus:
        """The pool's counts now.

        Returns:
            A [`PoolStatus`][dbpool.PoolStatus]: open, busy, idle and waiting, and the
            totals since the pool was made.
        """
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

    Made by [`Engine.connect()`][dbpool.Engine.connect] and
    [`Engine.begin()`][dbpool.Engine.begin]. A statement opens a transaction implicitly
    (unless the engine is `AUTOCOMMIT`); it lasts until [`commit()`][dbpool.Connection.commit]
    or [`rollback()`][dbpool.Connection.rollback]; [`close()`][dbpool.Connection.close]
    rolls back whatever is left and returns the connection to the pool. As a context
    manager it is closed at the end of the block.

    A statement that fails because the connection was lost invalidates the connection
    and raises `OperationalError` with `connection_invalidated` true. After `os.fork()`,
    a connection checked out in the parent belongs to the parent: in the child, using it
    raises `ResourceClosedError`, and `close()` sends nothing. Use one `Connection` from
    one thread at a time.

    Example:
        ```python
        import dbpool
        from dbpool import text

        engine = dbpool.create_engine("sqlite://")
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE users (id INTEGER, name TEXT)"))
            conn.execute(text("INSERT INTO users VALUES (:id, :name)"), {"id": 7, "name": "Ann"})
            conn.commit()
            row = conn.execute(text("SELECT id, name FROM users WHERE id = :id"), {"id": 7}).one()
            print(row.name, row._mapping["id"])  # Ann 7
        engine.dispose()
        ```
    """

    __slots__ = ("_closed", "_code", "_dialect", "_engine", "_in_transaction", "_invalid",
                 "_lasti", "_pool", "_queries", "_record", "_restore_autocommit",
                 "_timings")  # fmt: skip

    def __init__(
        self, engine: Engine, record: _Record | None, code: Any = None, lasti: int = 0
    ) -> None:
        self._engine = engine
        self._pool = engine.pool
        self._dialect = engine.dialect
        self._record: _Record | None = record
        # Where it was checked out, for the leak warning: the caller's code and the offset
        # of its instruction (free to read; the line is worked out only for a warning).
        self._code = code
        self._lasti = lasti
        self._queries = engine.query_histogram  # a direct connection's go uncounted
        self._timings = self._queries.pending
        self._in_transaction = False
        # begin() on an AUTOCOMMIT engine: end_explicit() is owed when it ends. Only
        # then, so that the other engines make no call for nothing on every commit.
        self._restore_autocommit = False
        self._invalid = False
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The [`Engine`][dbpool.Engine] this connection came from."""
        return self._engine

    @property
    def closed(self) -> bool:
        """Whether [`close()`][dbpool.Connection.close] was called."""
        return self._closed

    @property
    def invalidated(self) -> bool:
        """Whether the driver connection was discarded and no fresh one taken yet."""
        return self._invalid

    @property
    def driver_connection(self) -> Any:
        """The driver's own connection object, for what dbpool does not wrap.

        Do not close it yourself; it goes back to the pool with this connection.

        Raises:
            ResourceClosedError: The connection is closed, or was checked out in the
                parent of this forked process.
        """
        return self._live_record().dbapi_connection

    def in_transaction(self) -> bool:
        """Whether a transaction is open (begun by a statement or by `begin()`).

        Returns:
            True between the transaction's start and its commit or rollback.
        """
        return self._in_transaction

    def _live_record(self) -> _Record:
        # The statement path inlines the first test: a record of this process's pool.
        record = self._record
        if record is not None:
            if record.epoch != self._pool._epoch:  # pool.inherited(), without the call
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
        self._record = record = self._pool.checkout()
        self._invalid = False
        return record

    # -- statements --------------------------------------------------------------------

    def execute(self, statement: TextClause, params: Params = None) -> Result:
        """Run a [`text()`][dbpool.text] statement.

        The `:name` binds are translated to the driver's parameter style (compiled once
        per statement text and cached). The rows, if any, are fetched at once.

        Args:
            statement: A statement made with [`text()`][dbpool.text].
            params: A dict of bind values (runs once), a list of dicts (runs once per
                dict, the driver's `executemany`), or None. Keys the statement does not
                use are ignored.

        Returns:
            A [`Result`][dbpool.Result] with the rows and the row count.

        Raises:
            ArgumentError: `statement` is not a `TextClause` (use
                [`exec_driver_sql()`][dbpool.Connection.exec_driver_sql] for a plain
                string), a bind has no value, or `params` has the wrong type.
            DBAPIError: The driver's error, as its PEP 249 class (`IntegrityError`,
                `OperationalError`, ...), with the statement in the message and `.orig`.
            ResourceClosedError: The connection is closed, or was invalidated inside a
                transaction that was not rolled back yet.

        Example:
            ```python
            import dbpool
            from dbpool import text

            engine = dbpool.create_engine("sqlite://")
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE t (x INTEGER)"))
                conn.execute(text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
                print(conn.execute(text("SELECT x FROM t WHERE x > :n"), {"n": 1}).all())
            engine.dispose()
            ```
        """
        # The common case inline: a text() clause with a dict of binds. The statement runs
        # in this body, not in a helper, because a call per statement is a measurable part
        # of the Engine's own work (docs/how-it-works.md, "Running statements").
        if type(params) is dict and type(statement) is TextClause:
            try:
                compiled = statement._cache[self._dialect.paramstyle]  # compile()'s cache
            except KeyError:
                compiled = statement.compile(self._dialect.paramstyle)
            take = compiled._take
            if take is None:  # a dict paramstyle
                values = compiled._bind_shared(params)
            else:
                try:
                    values = take(params)
                except KeyError:
                    compiled.bind(params)  # raises the ArgumentError naming what is missing
                    raise
            sql = compiled.sql
            many = False
        else:
            sql, values, many = self._prepare(statement, params)

        record = self._record
        if record is None or record.epoch != self._pool._epoch:
            record = self._live_record()
        if self._engine.echo:
            logger.info("%s", sql)
        dialect = self._dialect
        start = _monotonic()
        # One cursor per pooled connection, kept across checkouts: results are fetched
        # eagerly, so a cursor is free again once a statement returns, and making one
        # costs microseconds on the hot path. A failed statement throws it away.
        cursor = record.cursor
        try:
            if not self._in_transaction and not dialect.autocommit:
                if not dialect.begins_implicitly:
                    dialect.do_begin(record.dbapi_connection)
                self._in_transaction = True
            if cursor is None:
                cursor = record.cursor = record.dbapi_connection.cursor()
            if many:
                cursor.executemany(sql, values)
            elif values is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, values)
            result = dialect.result(cursor)
        except Exception as exc:
            record.cursor = None
            self._handle_error(exc, record, sql, params, cursor)
            raise  # not reached: _handle_error raises
        # Histogram.observe(), inlined: one append, and a fold once a batch is full.
        timings = self._timings
        timings.append(_monotonic() - start)
        if len(timings) >= _HISTOGRAM_BATCH:
            self._queries.fold()
        return result

    def _prepare(self, statement: Any, params: Any) -> tuple[str, Any, bool]:
        """The driver's SQL, its parameters and whether they are many, for every case but
        the one ``execute()`` handles inline."""
        if type(statement) is _DriverSQL:
            return statement.sql, params, _is_many(params)
        if not isinstance(statement, TextClause):
            raise ArgumentError(
                "execute() takes a statement made with dbpool.text(); "
                "use exec_driver_sql() for a raw SQL string"
            )
        compiled = statement.compile(self._dialect.paramstyle)
        if params is None or isinstance(params, Mapping):
            return compiled.sql, compiled.bind(params), False
        if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
            return compiled.sql, [compiled.bind(p) for p in params], True
        raise ArgumentError("params must be a dict, a list of dicts, or None")

    def exec_driver_sql(self, statement: str, params: Any = None) -> Result:
        """Run SQL as the driver takes it, in the driver's own parameter style.

        Args:
            statement: SQL with the driver's placeholders (`%s` or `%(name)s` for psycopg
                and PyMySQL, `?` or `:name` for sqlite3, `?` for pyodbc).
            params: What the driver's `execute` takes (a tuple or a dict), a list of them
                (runs the driver's `executemany`), or None.

        Returns:
            A [`Result`][dbpool.Result] with the rows and the row count.

        Raises:
            DBAPIError: The driver's error, as its PEP 249 class, with the statement.
            ResourceClosedError: The connection is closed.

        Example:
            ```python
            import dbpool

            engine = dbpool.create_engine("sqlite://")
            with engine.connect() as conn:
                print(conn.exec_driver_sql("SELECT ? + ?", (1, 2)).scalar())  # 3
            engine.dispose()
            ```
        """
        return self.execute(_DriverSQL(statement), params)  # type: ignore[arg-type]

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
        """Open a transaction explicitly: a real one, even on an `AUTOCOMMIT` engine.

        Returns:
            A [`Transaction`][dbpool.Transaction]; as a context manager it commits at the
            end of the block, or rolls back if the block raises.

        Raises:
            ArgumentError: A transaction is already open (a statement opens one
                implicitly): commit or roll it back first.
            DBAPIError: The driver could not begin.
        """
        self._begin()
        return Transaction(self)

    def _begin(self) -> None:
        if self._in_transaction:
            raise ArgumentError(
                "A transaction is already open on this Connection (statements begin one "
                "implicitly); commit() or rollback() it first"
            )
        record = self._record
        if record is None or record.epoch != self._pool._epoch:
            record = self._live_record()
        dialect = self._dialect
        autocommit = dialect.autocommit
        if autocommit or not dialect.begins_implicitly:
            try:
                dialect.begin_explicit(record.dbapi_connection)
            except Exception as exc:
                self._handle_error(exc, record, "BEGIN", None, None)
        self._in_transaction = True
        self._restore_autocommit = autocommit

    def commit(self) -> None:
        """Commit the open transaction; does nothing when none is open.

        Raises:
            DBAPIError: The commit failed (a lost connection is invalidated).
            ResourceClosedError: The connection is closed, or was invalidated inside the
                transaction (call `rollback()`).
        """
        self._end(commit=True)

    def rollback(self) -> None:
        """Roll back the open transaction; does nothing when none is open.

        After the connection was invalidated inside a transaction, this ends that
        transaction, and the next statement checks out a fresh connection.

        Raises:
            DBAPIError: The rollback failed (a lost connection is invalidated).
            ResourceClosedError: The connection is closed.
        """
        if self._record is None and not self._closed:
            self._in_transaction = self._restore_autocommit = False  # invalidated: nothing to undo
            return
        self._end(commit=False)

    def _end(self, commit: bool) -> None:
        record = self._record
        if record is None or record.epoch != self._pool._epoch:
            record = self._live_record()
        if not self._in_transaction:
            return
        conn = record.dbapi_connection
        self._in_transaction = False
        try:
            conn.commit() if commit else conn.rollback()
            if self._restore_autocommit:
                self._dialect.end_explicit(conn)
        except Exception as exc:
            self._restore_autocommit = False
            self._handle_error(exc, record, "COMMIT" if commit else "ROLLBACK", None, None)
        self._restore_autocommit = False

    # -- ending ------------------------------------------------------------------------

    def close(self) -> None:
        """Roll back what is uncommitted and return the connection to the pool.

        Closing twice does nothing. If the rollback fails, the driver connection is
        discarded instead (its slot is freed) and a warning is logged.
        """
        if self._closed:
            return
        self._closed = True
        record, self._record = self._record, None
        if record is None:
            return
        pool = self._pool
        if record.epoch != pool._epoch:  # the parent's socket: send nothing on it
            pool.checkin(record)
            return
        conn = record.dbapi_connection
        try:
            if self._in_transaction:
                self._in_transaction = False
                conn.rollback()
            if self._restore_autocommit:
                self._restore_autocommit = False
                self._dialect.end_explicit(conn)
        except BaseException as exc:  # KeyboardInterrupt too: the slot must come back
            logger.warning("rollback on close failed; discarding the connection",
                           exc_info=True)  # fmt: skip
            pool.invalidate(record)
            if not isinstance(exc, Exception):
                raise
            return
        pool.checkin(record)

    def invalidate(self, error: BaseException | None = None) -> None:
        """Discard the driver connection instead of returning it to the pool.

        The driver connection is closed and its slot freed. This `Connection` stays
        usable: the next statement checks out a fresh connection (after `rollback()` if a
        transaction was open).

        Args:
            error: The reason, passed to the pool's `invalidate` listeners.

        Raises:
            ResourceClosedError: The connection is closed.
        """
        if self._closed:
            raise ResourceClosedError("This Connection is closed")
        self._invalidate(error, disconnect=False)

    def _invalidate(self, error: BaseException | None, *, disconnect: bool) -> None:
        record, self._record = self._record, None
        if record is None:
            return
        self._invalid = True
        self._pool.invalidate(record, error, disconnect=disconnect)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def __del__(self) -> None:
        record = self._record
        if record is not None and not self._closed:
            self._record = None
            with suppress(Exception):  # at interpreter shutdown modules may be torn down
                code = self._code
                self._pool.orphaned(record, code, line_at(code, self._lasti) if code else 0)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Connection {state} to {self._engine.url}>"


class _DriverSQL:
    """SQL for the driver as it is, on its way through ``execute()`` from
    ``exec_driver_sql()``."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql


def _is_many(params: Any) -> bool:
    """Whether driver parameters are a list of parameter sets (for ``executemany``)."""
    return (
        isinstance(params, list) and bool(params) and isinstance(params[0], (Mapping, tuple, list))
    )


class Transaction:
    """The transaction opened by [`Connection.begin()`][dbpool.Connection.begin].

    As a context manager it commits at the end of the block, or rolls back if the block
    raises; a transaction already ended inside the block is left alone.

    Example:
        ```python
        import dbpool
        from dbpool import text

        engine = dbpool.create_engine("sqlite://")
        with engine.connect() as conn:
            with conn.begin() as transaction:
                conn.execute(text("CREATE TABLE t (x INTEGER)"))
                assert transaction.is_active
            assert not transaction.is_active
        engine.dispose()
        ```
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def is_active(self) -> bool:
        """Whether the transaction is still open on its connection."""
        return self._connection._in_transaction

    def commit(self) -> None:
        """Commit: the same as [`Connection.commit()`][dbpool.Connection.commit]."""
        self._connection.commit()

    def rollback(self) -> None:
        """Roll back: the same as [`Connection.rollback()`][dbpool.Connection.rollback]."""
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


class _Begin(Connection):
    """What ``engine.begin()`` returns: a connection that is open only for the length of
    a ``with`` block, in one transaction, committed if the block succeeds, rolled back if
    it raises, returned to the pool either way.

    The context manager is the connection itself, not a wrapper that makes one: this
    runs on every transaction, and a second object with its own calls costs more than
    the work it wraps. It checks out at ``__enter__``; until then, and after the block,
    it is closed.
    """

    __slots__ = ()

    def __enter__(self) -> Connection:
        if not self._closed:
            raise ArgumentError("This engine.begin() block is already open")
        self._record = self._pool.checkout()
        self._closed = self._invalid = False
        dialect = self._dialect
        if dialect.autocommit or not dialect.begins_implicitly:
            try:
                self._begin()
            except BaseException:
                self.close()
                raise
        else:
            # What _begin() comes to here, without the call: the driver begins by itself,
            # and a connection just checked out has no transaction and is this process's.
            self._in_transaction = True
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._closed:  # closed inside the block
            return
        try:
            if self._in_transaction:  # not ended inside the block
                if exc_type is None:
                    self._end(True)  # commit(), one call less
                else:
                    self.rollback()
        finally:
            self.close()

    def _live_record(self) -> _Record:
        if self._closed:
            raise ResourceClosedError(
                "This Connection is closed: engine.begin() gives a connection only inside "
                "its with block"
            )
        return super()._live_record()


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
    """Make an engine; nothing is opened until the first checkout or `engine.open()`.

    Pool settings come from the URL query (`?connection_limit=5&pool_timeout=2`);
    keyword arguments override them. Query parameters that are not pool settings go to
    the dialect, which passes on those its driver accepts.

    Args:
        url: `dialect[+driver]://user:password@host:port/database?query`, a `str` or a
            [`URL`][dbpool.URL]. None reads the `DATABASE_URL` environment variable.
        creator: A function returning a new DB-API connection, used instead of the
            dialect's own connect (the dialect still pings, resets and recognises
            disconnects).
        connect_args: Extra keyword arguments for the driver's `connect()`.
        echo: Log every statement at INFO on the `dbpool` logger (adding a stderr
            handler if logging is not set up).
        metrics_labels: Labels added to every metric of the engine.
        direct_url: The same database reached without the external pooler (Prisma's
            `directUrl`), for [`Engine.direct()`][dbpool.Engine.direct]. With no `url`,
            `DIRECT_URL` is read along with `DATABASE_URL`.
        **settings: The pool settings (`connection_limit`, `pool_timeout`,
            `connect_timeout`, `pre_ping`, `socket_timeout`, `isolation_level`, ...; see
            the configuration guide), overriding the same names in the URL query.

    Returns:
        An [`Engine`][dbpool.Engine], its pool not started yet.

    Raises:
        ConfigError: A bad URL, setting, driver parameter or keyword (with a "did you
            mean" for a near miss), no URL at all, or the database's driver is not
            installed (naming the extra to install).

    Example:
        ```python
        import dbpool

        engine = dbpool.create_engine("sqlite:///app.db?connection_limit=2", pool_timeout=5)
        print(engine.config.connection_limit, engine.config.pool_timeout)  # 2 5.0
        engine.dispose()
        ```
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
