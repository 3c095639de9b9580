"""PostgreSQL through psycopg 3 (``postgresql://``, ``postgres://``, ``postgresql+psycopg://``).

* ``connect_timeout`` goes to libpq as whole seconds (rounded up). psycopg enforces it
  itself and treats anything under 2 s as 2 s; ``0`` leaves the wait to psycopg's own
  default (130 s), as neither has a true "no limit".
* ``schema`` becomes the ``search_path`` in the startup packet (``options=-c ...``), so
  it costs no round trip and survives ``RESET ALL``.
* ``pgbouncer=true`` turns off server-side prepared statements (``prepare_threshold=None``)
  and refuses ``schema``: PgBouncer in transaction mode does not pass startup options on,
  and a ``SET search_path`` would stick to a server connection other clients share. Set
  it with ``ALTER ROLE ... SET search_path`` instead. Nothing else here is session-level:
  the isolation level travels in each ``BEGIN``.
* Reset on return reads the transaction status libpq already has from the server's last
  reply, so an idle connection goes back to the pool without a ``ROLLBACK`` round trip.
* The ping is an empty query, sent in autocommit: one round trip, and it never leaves a
  transaction open (psycopg_pool checks connections the same way).
* A disconnect is SQLSTATE class 08 or 57P01-57P03, or a psycopg error without SQLSTATE
  whose libpq message says the connection is gone.
* psycopg has no client-side timeouts. The ping is bounded by ``validation_timeout`` and,
  with ``socket_timeout`` set, every statement, commit and rollback by that (see
  ``_psycopg_bounded``): the shared watchdog thread shuts the socket down of a call still
  running at its deadline.
* TCP keepalives are on by default (``KEEPALIVES``: a dead peer of an idle connection is
  found within about two minutes instead of the kernel's two hours); the ``keepalives*``
  query parameters override them.
"""

from __future__ import annotations

import math
from typing import Any

from dbpool.dialects._psycopg_bounded import attach_deadline, bounded_classes
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError

# libpq's TCP keepalive settings unless the URL gives its own: probe after 60 s of
# silence, every 10 s, give up after 6 unanswered probes (2 minutes in all).
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 60,
    "keepalives_interval": 10,
    "keepalives_count": 6,
}

# libpq connection parameters that may come from the URL query, passed on unchanged.
LIBPQ_PARAMS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",  # a Unix socket directory, when the URL has no host
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "options",
        "passfile",
        "require_auth",
        "requirepeer",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
    }
)

# libpq's PQtransactionStatus: only IDLE means "nothing to roll back".
_IDLE = 0
_UNKNOWN = 4
# libpq's ExecStatus values of a result that carries rows: TUPLES_OK, SINGLE_TUPLE,
# TUPLES_CHUNK.
_ROW_STATUSES = frozenset({2, 9, 11})

_DISCONNECT_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, starting
# libpq's words for a connection that is gone, for errors that carry no SQLSTATE.
_DISCONNECT_MESSAGES = (
    "the connection is closed",
    "the connection is lost",
    "server closed the connection",
    "terminating connection",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "connection not open",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "no answer from the server at",  # our own: socket_timeout shut the socket down
)


def search_path_option(schema: str) -> str:
    """``-c search_path=...`` for libpq's ``options``, the schema quoted as an identifier.

    Quoting keeps the name's case and any commas (as Prisma does); libpq's options
    syntax then needs backslashes and spaces escaped.
    """
    identifier = '"' + schema.replace('"', '""') + '"'
    escaped = identifier.replace("\\", "\\\\").replace(" ", "\\ ")
    return f"-c search_path={escaped}"


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    driver = "psycopg"
    extra = "postgresql"
    paramstyle = "pyformat"
    default_port = 5432
    accepted_query_params = LIBPQ_PARAMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url, config = self.url, self.config
        if config.pgbouncer and config.schema is not None:
            raise ConfigError(
                "schema cannot be used with pgbouncer=true: PgBouncer in transaction mode "
                "does not pass startup options to the server, and a session-level "
                "SET search_path would leak to other clients. Set it on the role instead "
                "(ALTER ROLE <user> SET search_path = <schema>), or use a direct URL."
            )
        if url.host is not None and "host" in self.driver_params:
            raise ConfigError(
                "host is given twice: in the URL and as the 'host' query parameter "
                "(use the query parameter only for a Unix socket directory, with no URL host)"
            )
        params: dict[str, Any] = {}
        for key, value in (
            ("host", url.host),
            ("port", url.port),
            ("dbname", url.database),
            ("user", url.username),
            ("password", url.password),
        ):
            if value is not None:
                params[key] = value
        if url.host is not None or "hostaddr" in self.driver_params:  # TCP, not a Unix socket
            params.update(KEEPALIVES)
        params.update(self.driver_params)
        timeout = config.connect_timeout
        params["connect_timeout"] = max(1, math.ceil(timeout)) if timeout else 0
        if config.schema is not None:
            option = search_path_option(config.schema)
            params["options"] = f"{params['options']} {option}" if "options" in params else option
        params["autocommit"] = self.autocommit
        if config.pgbouncer:
            params["prepare_threshold"] = None
        params.update(self.connect_args)
        self._connection_class = self.dbapi.Connection
        if config.socket_timeout:
            self._connection_class, params["cursor_factory"] = bounded_classes(self.dbapi)
        self._params = params
        level = config.isolation_level
        self._isolation = (
            None
            if level is None or self.autocommit
            else self.dbapi.IsolationLevel[level.replace(" ", "_")]
        )
        self._disconnect_classes = (self.dbapi.OperationalError, self.dbapi.InterfaceError)

    def describe(self) -> str:
        if self.url.host is None:
            socket = self.driver_params.get("host", "the default Unix socket")
            return f"{socket}/{self.url.database or ''}"
        return super().describe()

    def connect(self) -> Any:
        try:
            conn = self._connection_class.connect(**self._params)
        except self.dbapi.Error as exc:
            raise self.connect_error(exc) from exc
        attach_deadline(conn, self.timeouts)
        if self._isolation is not None:
            conn.isolation_level = self._isolation  # client-side: sent with each BEGIN
        return conn

    def socket_fd(self, conn: Any) -> int | None:
        fd: int = conn.pgconn.socket
        return fd

    def ping(self, conn: Any) -> None:
        bound = self.timeouts.validation_timeout
        if not bound:
            self._ping(conn)
            return
        deadline = getattr(conn, "dbpool_deadline", None)
        if deadline is None:  # opened by a creator (Django's backend), not by connect()
            if not isinstance(conn, self.dbapi.Connection):
                self._ping(conn)  # not psycopg's: nothing to bound it by
                return
            deadline = attach_deadline(conn, self.timeouts)
        deadline.arm(bound)
        try:
            self._ping(conn)
        except self.dbapi.Error as exc:
            if deadline.disarm():
                raise self.dbapi.OperationalError(self.timeouts.ping_timed_out()) from exc
            raise
        except BaseException:
            deadline.disarm()
            raise
        if deadline.disarm():
            raise self.dbapi.OperationalError(self.timeouts.ping_timed_out())

    def _ping(self, conn: Any) -> None:
        if conn.autocommit:
            conn.execute("")
            return
        conn.autocommit = True  # only allowed when idle; a checked-in connection is
        try:
            conn.execute("")
        finally:
            conn.autocommit = False

    def in_transaction(self, conn: Any) -> bool | None:
        status: int = conn.pgconn.transaction_status
        if status == _UNKNOWN:
            return None
        return status != _IDLE

    def reset(self, conn: Any) -> None:
        if conn.pgconn.transaction_status != _IDLE:
            conn.rollback()  # on a broken connection this raises, and the pool discards it

    def column_names(self, cursor: Any) -> tuple[str, ...] | None:
        # psycopg's ``description`` builds a Column object per field; the names alone come
        # straight from libpq's result at a fraction of the cost (this is the hot path).
        result = cursor.pgresult
        if result is None or result.status not in _ROW_STATUSES:
            return None
        encoding = cursor.connection.info.encoding
        return tuple(result.fname(i).decode(encoding) for i in range(result.nfields))

    def is_disconnect(self, error: BaseException) -> bool:
        sqlstate = getattr(error, "sqlstate", None)
        if sqlstate:
            return sqlstate.startswith("08") or sqlstate in _DISCONNECT_SQLSTATES
        if not isinstance(error, self._disconnect_classes):
            return False
        message = str(error).lower()
        return any(phrase in message for phrase in _DISCONNECT_MESSAGES)
