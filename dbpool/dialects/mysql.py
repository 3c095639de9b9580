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
* A disconnect is one of the client errors 2006, 2013, 2014, 2045, 2055, the server
  errors 1053, 1927, 4031, or PyMySQL's errors for a closed socket.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dbpool.config import parse_bool, parse_positive_int, parse_seconds
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError

# PyMySQL accepts at most a year.
_MAX_TIMEOUT = 31_536_000.0

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


def _text(name: str, value: str) -> str:
    return value


def _positive_seconds(name: str, value: str) -> float:
    seconds = parse_seconds(name, value)
    if seconds <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    return seconds


# Query parameter -> parser of its value; each becomes the PyMySQL argument of that name.
QUERY_PARAMS: dict[str, Callable[[str, str], Any]] = {
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
            return super().query(sql, unbuffered)

        def commit(self) -> None:
            super().commit()
            self.dbpool_dirty = False

        def rollback(self) -> None:
            super().rollback()
            self.dbpool_dirty = False

    return TrackingConnection


class MySQLDialect(Dialect):
    name = "mysql"
    driver = "pymysql"
    extra = "mysql"
    paramstyle = "pyformat"
    default_port = 3306
    accepted_query_params = frozenset(QUERY_PARAMS)

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
        for key, raw in self.driver_params.items():
            params[key] = QUERY_PARAMS[key](key, raw)
        params["connect_timeout"] = min(config.connect_timeout or _MAX_TIMEOUT, _MAX_TIMEOUT)
        params["autocommit"] = self.autocommit
        params.update(self.connect_args)
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
        if self._session_setup is not None:
            try:
                with conn.cursor() as cursor:
                    cursor.execute(self._session_setup)
            except self.dbapi.Error as exc:
                conn.close()
                raise self.connect_error(exc) from exc
        return conn

    def ping(self, conn: Any) -> None:
        conn.ping(reconnect=False)

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
