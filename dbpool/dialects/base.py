"""The interface every dialect implements; the pool and engine know nothing else.

A dialect owns all that is database-specific: importing its driver lazily, turning a
URL into connect arguments (honouring ``connect_timeout``), ping, reset on return,
disconnect detection, paramstyle and transaction control.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from dbpool.config import ISOLATION_LEVELS, EngineConfig, reject_unknown_params
from dbpool.exc import ConfigError, ConnectError, TooManyConnectionsError
from dbpool.result import Result, fetch_result
from dbpool.timeouts import Timeouts
from dbpool.url import URL
from dbpool.watchdog import shutdown_socket

if TYPE_CHECKING:
    from dbpool.budget import ServerUsage


# Words of a refusal by a per-user or per-database limit rather than the server's own.
_PER_USER_LIMIT_WORDS = ("for role", "for database", "max_user_connections")


class Dialect:
    """What an engine knows about its database: ``engine.dialect``.

    One subclass per database (``sqlite``, ``postgresql``, ``mysql``, ``mssql``,
    ``odbc``) owns everything database-specific: importing the driver lazily, turning
    the URL into connect arguments, ping, reset on return, disconnect detection and the
    driver's paramstyle; the pool knows nothing about any database. The engine makes its
    dialect from the URL. What an application may read:

    Attributes:
        name: The database: ``"sqlite"``, ``"postgresql"``, ``"mysql"``, ``"mssql"`` or
            ``"odbc"``.
        driver: The DB-API module it imports: ``"sqlite3"``, ``"psycopg"``,
            ``"pymysql"`` or ``"pyodbc"``.
        extra: The pip extra that installs the driver (``pip install "dbpool[extra]"``).
        paramstyle: The PEP 249 paramstyle [`text()`][dbpool.text] statements are
            translated to: one the driver takes, preferably a positional one (``format``
            for psycopg and PyMySQL), which drivers bind with less work than names.
        url: The engine's [`URL`][dbpool.URL].
        config: The engine's [`EngineConfig`][dbpool.EngineConfig].
        dbapi: The imported driver module.
        application_name: The name this engine's connections carry on the server
            (PostgreSQL's ``application_name``, MySQL's ``program_name``), or None where
            there is no such name; by default ``dbpool:`` and the program.
        server_limit: The server's connection limit once the check at pool start found
            it, else None.
    """

    name: ClassVar[str] = "base"  # used in log lines: "Starting a <name> pool ..."
    driver: ClassVar[str] = ""  # the DB-API module to import
    extra: ClassVar[str] = ""  # the pip extra that installs the driver
    # What to do when the driver is installed but does not import (a system library).
    import_failure_hint: ClassVar[str] = ""
    # Pool settings that mean nothing for this database: `dbpool check` does not list them.
    inapplicable_settings: ClassVar[frozenset[str]] = frozenset()
    paramstyle: ClassVar[str] = "qmark"
    default_connection_limit: ClassVar[int | None] = None  # None: Prisma's cores * 2 + 1
    accepted_query_params: ClassVar[frozenset[str]] = frozenset()
    isolation_levels: ClassVar[tuple[str, ...]] = ISOLATION_LEVELS
    supports_ping: ClassVar[bool] = True
    # Whether the driver opens a transaction by itself at the first statement on a
    # non-autocommit connection (PEP 249's model). Then do_begin() has nothing to do, and
    # on a non-autocommit engine neither has begin_explicit(): the engine skips the call.
    begins_implicitly: ClassVar[bool] = True
    # Whether reap_idle() is implemented (reap_idle_after does something).
    supports_reaping: ClassVar[bool] = False
    default_port: ClassVar[int | None] = None  # shown in messages when the URL has none
    # Whether server_connections() can ask the server for its connection budget.
    supports_budget: ClassVar[bool] = False
    # The name this engine's connections carry on the server (PostgreSQL application_name,
    # MySQL program_name); set by the dialect's __init__, None where there is no such name.
    application_name: str | None = None
    # The server's connection limit once known (the startup budget check sets it).
    server_limit: int | None = None

    def __init__(
        self,
        url: URL,
        config: EngineConfig,
        driver_params: Mapping[str, str],
        connect_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.config = config
        self.driver_params = dict(driver_params)
        self.connect_args = dict(connect_args or {})
        reject_unknown_params(self.driver_params, self.accepted_query_params, dialect=self.name)
        level = config.isolation_level
        if level is not None and level not in self.isolation_levels:
            raise ConfigError(
                f"isolation_level {level!r} is not available on {self.name}; "
                f"choose one of {', '.join(self.isolation_levels)}"
            )
        self.autocommit = level == "AUTOCOMMIT"
        self.dbapi = self.import_dbapi()
        validation = config.validation_timeout
        if validation and config.pool_timeout:  # a checkout never waits past pool_timeout
            validation = min(validation, config.pool_timeout)
        self.timeouts = Timeouts(
            self.describe, socket_timeout=config.socket_timeout, validation_timeout=validation
        )

    @classmethod
    def import_dbapi(cls) -> ModuleType:
        try:
            return importlib.import_module(cls.driver)
        except ImportError as exc:
            raise cls.driver_import_error(exc) from exc

    @classmethod
    def driver_import_error(cls, error: ImportError) -> ConfigError:
        """Why the driver cannot be imported: not installed, or installed but broken (a
        system library it loads is missing), which needs another fix entirely."""
        top = cls.driver.partition(".")[0]
        if isinstance(error, ModuleNotFoundError) and error.name in (cls.driver, top):
            return ConfigError(
                f"The {cls.name} dialect needs the {cls.driver} driver, which is not "
                f'installed: pip install "dbpool[{cls.extra}]"'
            )
        hint = f" {cls.import_failure_hint}" if cls.import_failure_hint else ""
        return ConfigError(
            f"The {cls.name} dialect needs the {cls.driver} driver, which is installed but "
            f"cannot be imported: {error}.{hint}"
        )

    def describe(self) -> str:
        """Where the database is, for messages and logs.

        Returns:
            ``host:port/database`` (a file name for SQLite), never a password.
        """
        url = self.url
        host = f"[{url.host}]" if url.host and ":" in url.host else (url.host or "localhost")
        port_number = url.port or self.default_port
        port = f":{port_number}" if port_number else ""
        return f"{host}{port}/{url.database or ''}"

    def connect_error(self, error: BaseException) -> ConnectError:
        """``ConnectError`` for a failed connect: where, as whom, and the driver's reason,
        with the password masked should a driver ever echo it."""
        reason = str(error).strip() or type(error).__name__
        password = self.url.password
        if password:
            reason = reason.replace(password, "***")
        user = f" as user {self.url.username!r}" if self.url.username else ""
        if self.is_too_many_connections(error):
            return self.too_many_connections_error(error, reason, user)
        return ConnectError(
            f"Cannot connect to {self.name} at {self.describe()}{user}: {reason}", orig=error
        )

    def is_too_many_connections(self, error: BaseException) -> bool:
        """Whether a failed connect means the server is full (its connection limit, or a
        per-user or per-database one, is reached): ``TooManyConnectionsError``."""
        return False

    def too_many_connections_error(
        self, error: BaseException, reason: str, user: str = ""
    ) -> TooManyConnectionsError:
        """The P2037 error: where, the limit when known, and what to do about it.

        ``reason`` is the driver's message, password already masked. The server-wide limit
        (``server_limit``, known once the budget probe ran) is named only when the refusal
        is not a per-user or per-database limit, which it would say nothing about.
        """
        limit: int | None = getattr(self, "server_limit", None)
        lowered = reason.lower()
        per_user = any(words in lowered for words in _PER_USER_LIMIT_WORDS)
        if per_user:
            why = "its connection limit for this user or database is reached"
        elif limit is not None:
            why = f"it is full (its connection limit is {limit})"
        else:
            why = "it is full"
        return TooManyConnectionsError(
            f"Too many connections: {self.name} at {self.describe()}{user} refused a new "
            f"connection because {why}: {reason}. Lower connection_limit, run "
            "fewer instances, or put a pooler such as PgBouncer in front of the database; "
            "see docs/scaling.md.",
            orig=error,
            server_limit=limit,
        )

    # -- connections -------------------------------------------------------------------

    def connect(self) -> Any:
        """Open one DB-API connection, configured; raise ``ConnectError`` on failure."""
        raise NotImplementedError

    def server_connections(self, conn: Any) -> ServerUsage:
        """The server's connection limits and who holds connections now, not counting
        ``conn`` itself (``dbpool budget`` and the startup check). One cheap query (two on
        MySQL); ``conn`` is left as it was, with no transaction open."""
        raise NotImplementedError(f"{self.name} has no server connection budget")

    def ping(self, conn: Any) -> None:
        """Raise if the connection is unusable; the cheapest round trip there is."""
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        finally:
            cursor.close()

    def socket_fd(self, conn: Any) -> int | None:
        """The descriptor of the connection's socket, None if the driver does not show it."""
        return None

    def abort(self, conn: Any) -> None:
        """Shut the connection's socket down without a word to the server, so that a
        thread blocked on it wakes up at once (before closing a connection in use)."""
        try:
            fd = self.socket_fd(conn)
        except Exception:  # already closed
            return
        if fd is not None and fd >= 0:
            shutdown_socket(fd)

    def close(self, conn: Any) -> None:
        """Close a connection; never waits long for a server that does not answer."""
        conn.close()

    def in_transaction(self, conn: Any) -> bool | None:
        """Whether a transaction is open; None when the driver cannot tell."""
        return None

    def reset(self, conn: Any) -> None:
        """Make a returned connection clean for the next user, with no needless round trip."""
        if self.in_transaction(conn) is not False:
            conn.rollback()

    def is_disconnect(self, error: BaseException) -> bool:
        """Whether ``error`` means the connection is gone (so it must be discarded)."""
        return False

    def reap_idle(self, conn: Any, *, older_than: float) -> int:
        """Over ``conn``, end this application's own server connections (same user, same
        application name, same database) that have sat idle on the server for more than
        ``older_than`` seconds, never ``conn`` itself nor one in a statement or a
        transaction; return how many. Leaves ``conn`` as clean as it found it."""
        raise NotImplementedError(f"{self.name} cannot reap idle connections")

    def column_names(self, cursor: Any) -> tuple[str, ...] | None:
        """The column names of the statement just run, or None if it returns no rows."""
        description = cursor.description
        if description is None:
            return None
        return tuple(str(column[0]) for column in description)

    def result(self, cursor: Any) -> Result:
        """The result of the statement just run on ``cursor``, its rows fetched."""
        return fetch_result(cursor, self.column_names(cursor))

    def release_resources(self) -> None:
        """Free what the dialect holds beyond pooled connections (on engine disposal)."""

    # -- transactions ------------------------------------------------------------------

    def do_begin(self, conn: Any) -> None:
        """Start a transaction on a non-autocommit connection; called only when the driver
        does not (``begins_implicitly`` false)."""

    def begin_explicit(self, conn: Any) -> None:
        """Open a real transaction, even on an AUTOCOMMIT engine's connection."""
        if self.autocommit:
            self.set_autocommit(conn, False)
        self.do_begin(conn)

    def end_explicit(self, conn: Any) -> None:
        """After the explicit transaction ended, put the connection back in the engine's
        mode. Called only on an AUTOCOMMIT engine (the only mode begin() changes)."""
        if self.autocommit:
            self.set_autocommit(conn, True)

    def set_autocommit(self, conn: Any, value: bool) -> None:
        conn.autocommit = value
