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
  the isolation level travels in each ``BEGIN``. It also connects with a cursor class
  (``_pgbouncer``) that refuses, with ``NotSupportedError``, statements whose session
  state a transaction pooler would silently leak or lose (session ``SET``, ``LISTEN``,
  ``PREPARE``, session advisory locks, ``WITH HOLD`` cursors, temporary tables), and that
  says what to do when PgBouncer's statement mode refuses a transaction.
* Reset on return reads the transaction status libpq already has from the server's last
  reply, so an idle connection goes back to the pool without a ``ROLLBACK`` round trip.
* The ping is an empty query, sent in autocommit: one round trip, and it never leaves a
  transaction open (psycopg_pool checks connections the same way).
* A refused connect because the server is full (SQLSTATE 53300, or the server's "too
  many clients" / "too many connections for role|database" / "remaining connection
  slots are reserved" text, as libpq often gives no SQLSTATE) raises
  ``TooManyConnectionsError`` (P2037).
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
import os
from typing import Any

from dbpool.appname import clean, default_application_name
from dbpool.budget import Holder, ServerUsage
from dbpool.dialects._pgbouncer import TRACKED_SETTINGS, guarded_cursor
from dbpool.dialects._psycopg_bounded import attach_deadline, bounded_classes
from dbpool.dialects._reap import reap_postgresql
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError
from dbpool.result import COMMON_ROWCOUNTS, NO_ROWS_RESULTS, Result, no_rows

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
    "connection socket closed",  # psycopg's own, when poll() reports the socket hung up
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "no answer from the server at",  # our own: socket_timeout shut the socket down
)

# The server is full (SQLSTATE 53300, too_many_connections). psycopg's connect errors
# usually carry no SQLSTATE (libpq reports the FATAL as text), so the server's words count.
_TOO_MANY_SQLSTATE = "53300"
_TOO_MANY_MESSAGES = (
    "sorry, too many clients already",
    "too many connections for role",
    "too many connections for database",
    "remaining connection slots are reserved",  # "... for roles with the SUPERUSER ..." etc.
)


# The server's limits and who holds connections (client backends only: autovacuum,
# background workers and WAL senders have slots of their own), in one round trip; the
# settings repeat on each row of holders, and one row with NULL holders means none.
# reserved_connections exists from PostgreSQL 16.
_BUDGET_QUERY = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       session_user::text, r.rolsuper, r.rolconnlimit, d.datconnlimit,
       a.usename::text, a.application_name, a.here, a.n::int
FROM pg_roles r
JOIN pg_database d ON d.datname = current_database()
LEFT JOIN (
    SELECT usename, application_name, datname = current_database() AS here, count(*) AS n
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
    GROUP BY 1, 2, 3
) a ON true
WHERE r.rolname = session_user
"""


def _application_name(params: dict[str, Any]) -> str | None:
    """The application_name libpq will send for these connect arguments: the explicit
    one, else ``$PGAPPNAME``, else the fallback; as the server keeps it. None for an
    empty one (a connection without a name cannot be told apart)."""
    name = params.get("application_name")
    if name is None:
        name = os.environ.get("PGAPPNAME") or params.get("fallback_application_name")
    return clean(str(name)) if name else None


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
    paramstyle = "format"  # %s and a tuple: psycopg binds it with less work than names
    supports_reaping = True
    default_port = 5432
    accepted_query_params = LIBPQ_PARAMS
    supports_budget = True

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
        # libpq's order: application_name, else $PGAPPNAME, else the fallback, ours.
        params.setdefault("fallback_application_name", default_application_name())
        params.update(self.connect_args)
        self.application_name = _application_name(params)
        self._connection_class = self.dbapi.Connection
        self._rowcount_slot = rowcount_is_slot(self.dbapi)
        if config.socket_timeout:
            self._connection_class, params["cursor_factory"] = bounded_classes(self.dbapi)
        if config.pgbouncer:  # refuse what a transaction pooler would silently break
            tracked = TRACKED_SETTINGS
            if self.application_name is not None:  # sent at login: PgBouncer tracks it
                tracked = tracked | {"application_name"}
            base = params.get("cursor_factory", self.dbapi.Cursor)
            params["cursor_factory"] = guarded_cursor(base, self.dbapi, tracked)
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

    def result(self, cursor: Any) -> Result:
        # column_names() and fetch_result() in one call: this runs on every statement.
        rowcount: int
        try:
            rowcount = cursor._rowcount if self._rowcount_slot else cursor.rowcount
        except AttributeError:  # a creator's cursor that is not psycopg's
            rowcount = cursor.rowcount
            if rowcount is None:  # unknown, as PEP 249 once spelt it
                rowcount = -1
        result = cursor.pgresult
        if result is None or result.status not in _ROW_STATUSES:
            if -1 <= rowcount < COMMON_ROWCOUNTS:  # no_rows(), without the call
                return NO_ROWS_RESULTS[rowcount]
            return no_rows(rowcount)
        return Result(cursor.fetchall(), _column_names(cursor, result), rowcount)

    def column_names(self, cursor: Any) -> tuple[str, ...] | None:
        result = cursor.pgresult
        if result is None or result.status not in _ROW_STATUSES:
            return None
        return _column_names(cursor, result)

    def reap_idle(self, conn: Any, *, older_than: float) -> int:
        return reap_postgresql(self, conn, older_than)

    def is_too_many_connections(self, error: BaseException) -> bool:
        if getattr(error, "sqlstate", None) == _TOO_MANY_SQLSTATE:
            return True
        message = str(error).lower()
        return any(phrase in message for phrase in _TOO_MANY_MESSAGES)

    def server_connections(self, conn: Any) -> ServerUsage:
        if conn.pgconn.transaction_status != _IDLE:
            # A creator's setup inside a transaction: the rollback after would undo it.
            raise RuntimeError("the connection is inside a transaction; not probing it")
        cursor = conn.cursor()
        try:
            cursor.execute(_BUDGET_QUERY)
            rows = cursor.fetchall()
        finally:
            cursor.close()
            if conn.pgconn.transaction_status != _IDLE:
                conn.rollback()  # the query opened a transaction: leave none behind
        first = rows[0]
        max_connections, superuser_reserved, reserved, user, superuser = first[:5]
        role_limit, database_limit = first[5:7]
        if superuser:  # a superuser is not held to the role's or the database's limit
            role_limit = database_limit = -1
        counts: dict[tuple[str, str | None], int] = {}
        here = 0
        for *_, holder_user, application_name, same_database, number in rows:
            if number is None:  # the LEFT JOIN's row when nobody else is connected
                continue
            key = (holder_user or "", application_name or None)
            counts[key] = counts.get(key, 0) + number
            here += number if same_database else 0
        reserved_by = " + ".join(
            name
            for name, value in (
                ("superuser_reserved_connections", superuser_reserved),
                ("reserved_connections", reserved),
            )
            if value
        )
        return ServerUsage(
            max_connections=max_connections,
            reserved=superuser_reserved + reserved,
            reserved_by=reserved_by,
            user=user,
            user_limit=None if role_limit < 0 else role_limit,
            user_limit_by="the role's CONNECTION LIMIT",
            database_limit=None if database_limit < 0 else database_limit,
            holders=tuple(Holder(u, a, n) for (u, a), n in counts.items()),
            others_same_database=here,
            dialect_name=self.name,
        )

    def is_disconnect(self, error: BaseException) -> bool:
        sqlstate = getattr(error, "sqlstate", None)
        if sqlstate:
            return sqlstate.startswith("08") or sqlstate in _DISCONNECT_SQLSTATES
        if not isinstance(error, self._disconnect_classes):
            return False
        message = str(error).lower()
        return any(phrase in message for phrase in _DISCONNECT_MESSAGES)


def rowcount_is_slot(psycopg: Any) -> bool:
    """Whether psycopg's ``cursor.rowcount`` only returns the cursor's ``_rowcount``.

    It is a Python property, and calling it costs more than the rest of ``result()``,
    which reads the slot itself when the property's code says that is all it does; a
    psycopg that computes the count some other way gets the property.
    """
    getter = getattr(getattr(psycopg.Cursor, "rowcount", None), "fget", None)
    code = getattr(getter, "__code__", None)
    return code is not None and code.co_names == ("_rowcount",)


def _column_names(cursor: Any, result: Any) -> tuple[str, ...]:
    # psycopg's ``description`` builds a Column object per field; the names alone come
    # straight from libpq's result at a fraction of the cost (this is the hot path).
    fname = result.fname
    names = []
    for i in range(result.nfields):
        name = fname(i)
        if not name.isascii():
            break
        names.append(name.decode())
    else:
        # ASCII reads the same in every client encoding: no need to ask psycopg for the
        # connection's, which costs several times the rest (a ConnectionInfo and a codec
        # lookup per call).
        return tuple(names)
    encoding = cursor.connection.info.encoding
    return tuple(fname(i).decode(encoding) for i in range(result.nfields))
