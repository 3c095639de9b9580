"""MySQL and MariaDB through PyMySQL (``mysql://``, ``mysql+pymysql://``, ``mariadb://``).

* ``connect_timeout`` bounds both the TCP connect and the server's greeting (PyMySQL
  alone would wait forever for a server that accepts and stays silent). PyMySQL wants a
  limit above 0, so ``0`` ("no limit") becomes its maximum, one year.
* ``charset`` defaults to ``utf8mb4``: MySQL's ``utf8`` cannot store every character.
* ``isolation_level`` is set once per connection (``SET SESSION TRANSACTION ISOLATION
  LEVEL``); ``AUTOCOMMIT`` is the driver's autocommit mode. ``engine.begin()`` on an
  ``AUTOCOMMIT`` engine sends ``BEGIN``, which opens a transaction without leaving
  autocommit mode, so nothing needs switching back afterwards.
* Reset on return: the server flags explicit transactions in every reply
  (``SERVER_STATUS_IN_TRANS``), but not the implicit read-only snapshot a ``SELECT``
  opens when autocommit is off. So connections also remember whether a statement ran
  since the last commit or rollback; a connection that is clean by both counts goes
  back to the pool without a ``ROLLBACK`` round trip.
* The ping is ``COM_PING``: one round trip, no statement, no transaction.
* A refused connect because the server is full (errors 1040, 1203, 1226: too many
  connections, or a user's ``max_user_connections`` reached) raises
  ``TooManyConnectionsError`` (P2037).
* A disconnect is one of the client errors 2006, 2013, 2014, 2045, 2055, the server
  errors 1053, 1927, 4031, or PyMySQL's errors for a closed socket.
* ``socket_timeout`` becomes PyMySQL's ``read_timeout`` and ``write_timeout`` (unless the
  URL gives those): each read or write of a statement, commit, rollback or reset waits at
  most that long. The ping gets ``validation_timeout`` the same way, for its one round
  trip. PyMySQL closes a connection whose read timed out; the error then says which
  timeout ran out.
* TCP keepalives are on by default (``KEEPALIVES``, set on the socket after connecting;
  a dead peer of an idle connection is found within about two minutes). The query
  parameters ``keepalives`` (0 turns them off), ``keepalives_idle``,
  ``keepalives_interval`` and ``keepalives_count`` override them, with libpq's names.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import Any

from dbpool.appname import default_application_name
from dbpool.budget import Holder, ServerUsage
from dbpool.config import parse_bool, parse_positive_int, parse_seconds
from dbpool.dialects._reap import reap_mysql
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError
from dbpool.timeouts import Timeouts

# PyMySQL accepts at most a year.
_MAX_TIMEOUT = 31_536_000.0
# Closing sends COM_QUIT; a peer that stopped reading must not hold the close up.
_CLOSE_TIMEOUT = 1.0

# TCP keepalives unless the URL says otherwise: probe after 60 s of silence, every 10 s,
# give up after 6 unanswered probes (2 minutes in all), as for PostgreSQL.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 60,
    "keepalives_interval": 10,
    "keepalives_count": 6,
}
_KEEPALIVE_OPTIONS = (
    ("keepalives_idle", "TCP_KEEPIDLE"),
    ("keepalives_interval", "TCP_KEEPINTVL"),
    ("keepalives_count", "TCP_KEEPCNT"),
)

_SERVER_STATUS_IN_TRANS = 0x0001
_SERVER_STATUS_AUTOCOMMIT = 0x0002

_DISCONNECT_CODES = frozenset(
    {
        1053,  # ER_SERVER_SHUTDOWN
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        2014,  # CR_COMMANDS_OUT_OF_SYNC
        2045,  # CR_CONN_UNKNOW_PROTOCOL
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    }
)

# The server is full: ER_CON_COUNT_ERROR (max_connections), ER_TOO_MANY_USER_CONNECTIONS
# (the global max_user_connections), ER_USER_LIMIT_REACHED (a user's own resource limit).
_TOO_MANY_CODES = frozenset({1040, 1203, 1226})


def _text(name: str, value: str) -> str:
    return value


def _positive_seconds(name: str, value: str) -> float:
    seconds = parse_seconds(name, value)
    if seconds <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    return seconds


# Query parameter -> parser of its value; each becomes the PyMySQL argument of that name.
QUERY_PARAMS: dict[str, Callable[[str, str], Any]] = {
    "application_name": _text,  # PostgreSQL's name for program_name; becomes that
    "bind_address": _text,
    "charset": _text,
    "collation": _text,
    "init_command": _text,
    "local_infile": parse_bool,
    "max_allowed_packet": parse_positive_int,
    "program_name": _text,
    "read_timeout": _positive_seconds,
    "sql_mode": _text,
    "ssl_ca": _text,
    "ssl_cert": _text,
    "ssl_disabled": parse_bool,
    "ssl_key": _text,
    "ssl_key_password": _text,
    "ssl_verify_cert": parse_bool,
    "ssl_verify_identity": parse_bool,
    "unix_socket": _text,
    "write_timeout": _positive_seconds,
}
# Query parameters dbpool handles itself (not PyMySQL arguments).
KEEPALIVE_PARAMS: dict[str, Callable[[str, str], Any]] = {
    "keepalives": parse_bool,
    "keepalives_count": parse_positive_int,
    "keepalives_idle": parse_positive_int,
    "keepalives_interval": parse_positive_int,
}


def _timed_out(error: BaseException) -> bool:
    """Whether PyMySQL raised ``error`` because a read or write hit its timeout."""
    return isinstance(error.__context__, TimeoutError)


def set_keepalives(sock: Any, settings: dict[str, Any]) -> None:
    """Turn TCP keepalives on (or off) on a connected socket, as libpq does."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket has no keepalives
    on = bool(settings["keepalives"])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if on else 0)
    if not on:
        return
    for key, option in _KEEPALIVE_OPTIONS:
        number = getattr(socket, option, None)  # Linux names; macOS has only some
        if number is not None:
            sock.setsockopt(socket.IPPROTO_TCP, number, settings[key])


@functools.cache
def _connection_class() -> type[Any]:
    """PyMySQL's Connection, made to bound its greeting and to remember statements.

    Built on first use so that importing this module does not import PyMySQL.
    """
    from pymysql.connections import Connection

    class TrackingConnection(Connection):
        # Whether a statement ran since the last commit or rollback, for reset on return.
        dbpool_dirty = False
        _read_timeout: float | None  # PyMySQL's, not in its type stubs

        def connect(self, sock: Any = None) -> None:
            # PyMySQL reads the greeting with the (unbounded) read timeout; bound it by
            # connect_timeout and restore the user's read timeout for queries.
            read_timeout = self._read_timeout
            self._read_timeout = self.connect_timeout
            try:
                super().connect(sock)
            finally:
                self._read_timeout = read_timeout

        def query(self, sql: Any, unbuffered: bool = False) -> int:
            self.dbpool_dirty = True
            try:
                return super().query(sql, unbuffered)
            except self.OperationalError as exc:
                self._raise_if_timed_out(exc, "statement")
                raise

        def commit(self) -> None:
            try:
                super().commit()
            except self.OperationalError as exc:
                self._raise_if_timed_out(exc, "commit")
                raise
            self.dbpool_dirty = False

        def rollback(self) -> None:
            try:
                super().rollback()
            except self.OperationalError as exc:
                self._raise_if_timed_out(exc, "rollback")
                raise
            self.dbpool_dirty = False

        def _raise_if_timed_out(self, exc: BaseException, what: str) -> None:
            timeouts: Timeouts | None = getattr(self, "dbpool_timeouts", None)
            if timeouts is None or not _timed_out(exc):
                return
            if timeouts.socket_timeout:
                message = timeouts.socket_timed_out(what)
            else:  # the URL's own read_timeout / write_timeout
                message = timeouts.socket_timed_out(
                    what, setting="read_timeout", seconds=self._read_timeout or 0
                )
            raise self.OperationalError(2013, message) from exc

    return TrackingConnection


class MySQLDialect(Dialect):
    name = "mysql"
    driver = "pymysql"
    extra = "mysql"
    paramstyle = "format"  # %s and a tuple: PyMySQL formats it with less work than names
    supports_reaping = True
    default_port = 3306
    inapplicable_settings = frozenset({"pgbouncer", "schema"})  # refused in __init__
    accepted_query_params = frozenset(QUERY_PARAMS) | frozenset(KEEPALIVE_PARAMS)
    supports_budget = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url, config = self.url, self.config
        if config.schema is not None:
            raise ConfigError(
                "schema is a PostgreSQL setting; on MySQL and MariaDB the database in the "
                "URL path is the schema"
            )
        if config.pgbouncer:
            raise ConfigError("pgbouncer=true is a PostgreSQL setting; it has no meaning here")
        params: dict[str, Any] = {"charset": "utf8mb4"}
        for key, value in (
            ("host", url.host),
            ("port", url.port),
            ("database", url.database),
            ("user", url.username),
            ("password", url.password),
        ):
            if value is not None:
                params[key] = value
        self._keepalives = dict(KEEPALIVES)
        for key, raw in self.driver_params.items():
            if key in KEEPALIVE_PARAMS:
                self._keepalives[key] = KEEPALIVE_PARAMS[key](key, raw)
            else:
                params[key] = QUERY_PARAMS[key](key, raw)
        if config.socket_timeout:
            bound = min(config.socket_timeout, _MAX_TIMEOUT)
            params.setdefault("read_timeout", bound)
            params.setdefault("write_timeout", bound)
        params["connect_timeout"] = min(config.connect_timeout or _MAX_TIMEOUT, _MAX_TIMEOUT)
        params["autocommit"] = self.autocommit
        params.update(self.connect_args)
        self.application_name = _program_name(params)
        self._params = params
        level = config.isolation_level
        self._session_setup = (
            None
            if level is None or self.autocommit
            else f"SET SESSION TRANSACTION ISOLATION LEVEL {level}"
        )
        self._connection_class = _connection_class()

    def describe(self) -> str:
        socket = self.driver_params.get("unix_socket")
        if socket:
            return f"{socket}/{self.url.database or ''}"
        return super().describe()

    def connect(self) -> Any:
        try:
            conn = self._connection_class(**self._params)
        except (self.dbapi.Error, ValueError) as exc:
            raise self.connect_error(exc) from exc
        try:
            set_keepalives(conn._sock, self._keepalives)
            if self._session_setup is not None:
                with _bounded(conn, self.config.connect_timeout), conn.cursor() as cursor:
                    cursor.execute(self._session_setup)
        except (self.dbapi.Error, OSError) as exc:
            self.close(conn)
            raise self.connect_error(exc) from exc
        conn.dbpool_timeouts = self.timeouts
        return conn

    def socket_fd(self, conn: Any) -> int | None:
        sock = conn._sock
        return None if sock is None else int(sock.fileno())

    def close(self, conn: Any) -> None:
        if getattr(conn, "open", False) and hasattr(conn, "_write_timeout"):
            bound = conn._write_timeout
            conn._write_timeout = _CLOSE_TIMEOUT if bound is None else min(bound, _CLOSE_TIMEOUT)
        conn.close()

    def ping(self, conn: Any) -> None:
        bound = self.timeouts.validation_timeout
        if not bound:
            conn.ping(reconnect=False)
            return
        try:
            with _bounded(conn, bound):
                conn.ping(reconnect=False)
        except self.dbapi.OperationalError as exc:
            if _timed_out(exc):
                raise self.dbapi.OperationalError(2013, self.timeouts.ping_timed_out()) from exc
            raise

    def in_transaction(self, conn: Any) -> bool | None:
        status = conn.server_status or 0
        if status & _SERVER_STATUS_IN_TRANS:
            return True
        if status & _SERVER_STATUS_AUTOCOMMIT:
            return False
        return bool(getattr(conn, "dbpool_dirty", True))

    def reset(self, conn: Any) -> None:
        if not conn.open:
            raise self.dbapi.InterfaceError(0, "the connection is closed")
        if self.in_transaction(conn) is not False:
            conn.rollback()

    def server_connections(self, conn: Any) -> ServerUsage:
        if (conn.server_status or 0) & _SERVER_STATUS_IN_TRANS:
            # A creator's work inside a transaction: the rollback after would undo it.
            raise RuntimeError("the connection is inside a transaction; not probing it")
        try:
            with conn.cursor() as cursor:
                cursor.execute(_BUDGET_QUERY)
                rows = list(cursor.fetchall())
                # Everyone's connections, also those PROCESSLIST hides without PROCESS.
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                status = cursor.fetchone()
                named = None
                if rows[0][3]:  # performance_schema is on: it knows program names
                    try:
                        cursor.execute(_BUDGET_NAMES_QUERY)
                        named = list(cursor.fetchall())
                    except self.dbapi.Error:  # no SELECT on performance_schema
                        named = None
        finally:
            if self.in_transaction(conn) is not False:
                conn.rollback()  # leave no read snapshot open
        max_connections, session_limit, global_limit, _, user = rows[0][:5]
        if named is not None:
            holders = [Holder(u, name or None, int(n)) for u, name, n in named]
        else:
            holders = [Holder(u, None, int(n)) for *_, u, n in rows if u is not None]
        visible = sum(holder.connections for holder in holders)
        connected = int(status[1]) if status else 0
        if any(holder.user != user for holder in holders):
            connected = 0  # it sees other users' threads (PROCESS): nothing is hidden
        if session_limit and session_limit != global_limit:
            user_limit, by = int(session_limit), "the account's MAX_USER_CONNECTIONS"
        elif global_limit and global_limit > 0:
            user_limit, by = int(global_limit), "max_user_connections"
        else:
            user_limit, by = None, ""
        return ServerUsage(
            max_connections=int(max_connections),
            reserved=0,
            reserved_by="",
            user=str(user),
            user_limit=user_limit,
            user_limit_by=by,
            database_limit=None,
            holders=tuple(holders),
            hidden=max(0, connected - 1 - visible),
            names_visible=named is not None,
            dialect_name=self.name,
        )

    def reap_idle(self, conn: Any, *, older_than: float) -> int:
        return reap_mysql(self, conn, older_than)

    def is_too_many_connections(self, error: BaseException) -> bool:
        args: tuple[Any, ...] = getattr(error, "args", ())
        return bool(args) and args[0] in _TOO_MANY_CODES

    def is_disconnect(self, error: BaseException) -> bool:
        args = getattr(error, "args", ())
        code = args[0] if args else None
        if code in _DISCONNECT_CODES:
            return True
        if isinstance(error, self.dbapi.InterfaceError):
            return True  # PyMySQL raises it only for a socket that is gone
        if isinstance(error, self.dbapi.InternalError):
            return "packet sequence number wrong" in str(error).lower()
        return type(error) is self.dbapi.err.Error and code == "Already closed"

    def begin_explicit(self, conn: Any) -> None:
        if self.autocommit:
            conn.begin()  # a transaction inside autocommit mode, ended by COMMIT/ROLLBACK

    def end_explicit(self, conn: Any) -> None:
        pass


def _program_name(params: dict[str, Any]) -> str | None:
    """Resolve ``program_name`` in ``params`` (the connection attribute the server shows
    in performance_schema.session_connect_attrs): ``application_name`` is the same
    thing, else the program's default name; None when set to empty."""
    alias = params.pop("application_name", None)
    if alias is not None:
        if params.get("program_name", alias) != alias:
            raise ConfigError(
                "program_name and application_name are the same setting on MySQL/MariaDB "
                f"and name different programs ({params['program_name']!r}, {alias!r}): "
                "give one of them"
            )
        params["program_name"] = alias
    params.setdefault("program_name", default_application_name())
    name = params["program_name"]
    return str(name) if name else None


# The server's limits and who holds connections (users' threads, not the server's own
# daemons), in one round trip; one row with NULL holders when nobody else is connected.
# The session's max_user_connections is the account's own limit when it has one.
_BUDGET_QUERY = """
SELECT @@global.max_connections, @@session.max_user_connections,
       @@global.max_user_connections, @@performance_schema,
       SUBSTRING_INDEX(USER(), '@', 1), p.USER, p.n
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT USER, COUNT(*) AS n FROM information_schema.PROCESSLIST
    WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' AND USER <> 'system user'
    GROUP BY USER
) AS p ON TRUE
"""
# With performance_schema on: the same, by user and program_name.
_BUDGET_NAMES_QUERY = """
SELECT p.USER, a.ATTR_VALUE, COUNT(*) FROM information_schema.PROCESSLIST AS p
LEFT JOIN performance_schema.session_connect_attrs AS a
    ON a.PROCESSLIST_ID = p.ID AND a.ATTR_NAME = 'program_name'
WHERE p.ID <> CONNECTION_ID() AND p.COMMAND <> 'Daemon' AND p.USER <> 'system user'
GROUP BY p.USER, a.ATTR_VALUE
"""


class _bounded:
    """Within the block, each read and write on ``conn`` waits at most ``seconds``
    (``0``: the connection's own timeouts)."""

    __slots__ = ("_conn", "_saved", "_seconds")

    def __init__(self, conn: Any, seconds: float) -> None:
        self._conn = conn
        self._seconds = min(seconds, _MAX_TIMEOUT)
        self._saved: tuple[Any, Any] = (None, None)

    def __enter__(self) -> None:
        conn = self._conn
        self._saved = (conn._read_timeout, conn._write_timeout)
        if self._seconds:
            conn._read_timeout = conn._write_timeout = self._seconds

    def __exit__(self, *exc_info: object) -> None:
        self._conn._read_timeout, self._conn._write_timeout = self._saved
