"""ODBC through pyodbc: ``odbc://`` for any ODBC driver, and the machinery mssql.py shares.

A URL names its driver (``?driver=PostgreSQL Unicode``), a data source
(``?dsn=NAME``), or gives a whole connection string (``?odbc_connect=...``).

* The URL becomes an ODBC connection string. A value with ``;``, ``{``, ``}``, ``=`` or
  spaces at either end is wrapped in braces with ``}`` doubled, as the ODBC grammar
  says. The driver name and the password are always braced: psqlODBC percent-decodes
  a bare password, so ``a+b`` would arrive as ``a b``.
* Query parameters that are neither pool settings nor ``driver``, ``dsn`` or
  ``odbc_connect`` are passed to the driver verbatim (a driver's keys cannot be known
  here); a name within two edits of a pool setting is refused as a likely typo, and the
  parts the URL itself gives (server, port, database, user, password) cannot be repeated.
* ``connect_timeout`` is the ODBC login timeout (pyodbc's ``timeout=``, whole seconds
  rounded up, 0 = none). MariaDB's driver ignores it, so for a MariaDB driver (named, or
  behind a DSN) the string also gets its own ``CONN_TIMEOUT``.
* ``socket_timeout`` is the ODBC query timeout (pyodbc's ``Connection.timeout``, whole
  seconds rounded up); the ping gets ``validation_timeout`` the same way. A statement
  past it fails with SQLSTATE HYT00, and the connection is discarded. The driver enforces
  it (psqlODBC and MariaDB's driver cancel the statement); commit and rollback have no
  ODBC timeout.
* pyodbc cannot tell whether a transaction is open, so reset on return rolls back
  unless the connection is in autocommit, and so does the ping after its ``SELECT 1``
  (with autocommit off, ODBC drivers open a transaction for any statement).
* A disconnect is SQLSTATE class 08, 01002 (disconnect error) or 57P01-57P03 (the
  server ended the session), or a driver message saying the link is gone.
* A refused connect because the server is full is recognised by the server's words
  (PostgreSQL's "too many clients" family, MySQL's "Too many connections" and
  ``max_user_connections``, SQL Server's error 17809) and raises
  ``TooManyConnectionsError`` (P2037).
* ``isolation_level`` is the ODBC attribute ``SQL_ATTR_TXN_ISOLATION``, set on each new
  connection before it runs anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any, ClassVar

from dbpool.config import SETTINGS, EngineConfig, did_you_mean, edit_distance
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError, ConnectError
from dbpool.url import URL, hide_secrets

Attributes = list[tuple[str, str]]

_NEEDS_BRACES = re.compile(r"[;{}=]|^\s|\s$")
_ALWAYS_BRACED = frozenset({"DRIVER", "PWD"})
# Characters the ODBC grammar reserves in key names.
_BAD_KEY = re.compile(r"[\[\]{}(),;?*=!@]|^\s|\s$")

_OWN_PARAMS = ("driver", "dsn", "odbc_connect")
# Connection-string keys (and common driver aliases) that the URL itself fills in.
_URL_PARTS = {
    "server": "the host",
    "servername": "the host",
    "port": "the port",
    "database": "the database path",
    "db": "the database path",
    "uid": "the user name",
    "user": "the user name",
    "username": "the user name",
    "pwd": "the password",
    "password": "the password",
}
# Keys read back from an odbc_connect string, to say where a failed connect was going.
_SERVER_KEYS = ("server", "servername", "host", "data source", "address", "addr")
_DATABASE_KEYS = ("database", "db", "initial catalog")

# Timeout expired (a statement past socket_timeout, a ping past validation_timeout).
_TIMEOUT_SQLSTATES = frozenset({"HYT00", "HYT01"})

# Drivers that ignore the ODBC login timeout, by a word in their name, and the key
# they take instead (whole seconds).
_LOGIN_TIMEOUT_KEYS = (("mariadb", "CONN_TIMEOUT"),)

_TXN_ISOLATION = {
    "READ UNCOMMITTED": "SQL_TXN_READ_UNCOMMITTED",
    "READ COMMITTED": "SQL_TXN_READ_COMMITTED",
    "REPEATABLE READ": "SQL_TXN_REPEATABLE_READ",
    "SERIALIZABLE": "SQL_TXN_SERIALIZABLE",
}

_MISSING_DRIVER = ("can't open lib", "data source name not found", "driver not found")


def quote_value(value: str, *, always: bool = False) -> str:
    """One connection-string value, in braces (``}`` doubled) when the grammar needs it."""
    if always or _NEEDS_BRACES.search(value):
        return "{" + value.replace("}", "}}") + "}"
    return value


def build_connection_string(attributes: Iterable[tuple[str, str]]) -> str:
    """``KEY=value;...`` from (key, value) pairs, values quoted as needed."""
    return ";".join(
        f"{key}={quote_value(value, always=key.upper() in _ALWAYS_BRACED)}"
        for key, value in attributes
    )


def parse_connection_string(text: str) -> Attributes:
    """The (key, value) pairs of an ODBC connection string, braces undone."""
    pairs: Attributes = []
    pos, end = 0, len(text)
    while pos < end:
        equals, semicolon = text.find("=", pos), text.find(";", pos)
        if equals < 0 or 0 <= semicolon < equals:  # a segment without '=': not a pair
            pos = end if semicolon < 0 else semicolon + 1
            continue
        key, pos = text[pos:equals].strip(), equals + 1
        if text.startswith("{", pos):
            chars: list[str] = []
            pos += 1
            while pos < end and not (text[pos] == "}" and not text.startswith("}}", pos)):
                chars.append(text[pos])
                pos += 2 if text.startswith("}}", pos) else 1
            value = "".join(chars)
            semicolon = text.find(";", pos)
        else:
            value = text[pos:] if semicolon < 0 else text[pos:semicolon]
        pos = end if semicolon < 0 else semicolon + 1
        if key:
            pairs.append((key, value))
    return pairs


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE pyodbc put first in an error's args, or '' (pyodbc's own errors)."""
    args = error.args
    if len(args) >= 2 and isinstance(args[0], str) and len(args[0]) == 5:
        return args[0]
    return ""


def _describe(server: str | None, port: object, database: str | None, dsn: str | None) -> str:
    if server is None and dsn is not None:
        return f"data source {dsn!r}" + (f" database {database!r}" if database else "")
    host = server or "localhost"
    if port:
        host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{host}/{database or ''}"


def _closest(name: str, keys: Mapping[str, str]) -> str:
    """' Did you mean "Key"?' for a key (lower-cased in ``keys``) within two edits."""
    lowered = name.lower()
    near = min(keys, key=lambda key: edit_distance(lowered, key))
    return f' Did you mean "{keys[near]}"?' if edit_distance(lowered, near) <= 2 else ""


def _unbrace(value: str) -> str:
    if len(value) >= 2 and value.startswith("{") and value.endswith("}"):
        return value[1:-1].replace("}}", "}")
    return value


class ODBCDialect(Dialect):
    name = "odbc"
    driver = "pyodbc"
    extra = "odbc"
    import_failure_hint = (
        "pyodbc needs the unixODBC driver manager, a system library (libodbc.so.2): "
        "apt-get install unixodbc (Debian, Ubuntu), dnf install unixODBC (Fedora, RHEL), "
        "brew install unixodbc (macOS)."
    )
    paramstyle = "qmark"
    accepted_query_params = frozenset(_OWN_PARAMS)
    inapplicable_settings = frozenset({"pgbouncer", "schema"})  # refused in __init__

    default_odbc_driver: ClassVar[str | None] = None
    # Connection-string keys the query may carry, by lower-cased name -> spelling;
    # None: any key (a generic dialect cannot know its driver's keys).
    passthrough_keys: ClassVar[Mapping[str, str] | None] = None
    disconnect_sqlstates: ClassVar[frozenset[str]] = frozenset(
        {"01002", "57P01", "57P02", "57P03"}
    )
    # Lower-cased words of drivers (psqlODBC, MariaDB, SQL Server) and of pyodbc itself.
    disconnect_messages: ClassVar[tuple[str, ...]] = (
        "communication link failure",
        "server closed the connection",
        "connection has been lost",
        "connection lost",
        "server has gone away",
        "lost connection",
        "broken pipe",
        "connection reset",
        "connection not open",
        "connection was killed",
        "terminating connection",
        "attempt to use a closed connection",
        "connection has been closed",
    )
    # Lower-cased words of a refusal because the server is full: PostgreSQL through
    # psqlODBC, MySQL/MariaDB through their drivers, SQL Server (error 17809).
    too_many_messages: ClassVar[tuple[str, ...]] = (
        "sorry, too many clients already",
        "too many connections",  # MySQL 1040; PostgreSQL's "... for role|database"
        "remaining connection slots are reserved",
        "'max_user_connections'",  # MySQL 1203 and 1226
        "user connections has already been reached",  # SQL Server 17809
    )
    missing_driver_hint: ClassVar[str] = (
        "Is the ODBC driver installed and registered with the driver manager? "
        "(`odbcinst -q -d` lists the drivers unixODBC knows.)"
    )

    def __init__(
        self,
        url: URL,
        config: EngineConfig,
        driver_params: Mapping[str, str],
        connect_args: Mapping[str, Any] | None = None,
    ) -> None:
        own, extra = self._split_params(driver_params)
        super().__init__(url, config, own, connect_args)
        for setting, value in (("schema", config.schema), ("pgbouncer", config.pgbouncer)):
            if value:
                raise ConfigError(
                    f"{setting} is a PostgreSQL setting the {self.name} dialect does not "
                    "support; give the driver's own keys in the query instead"
                )
        raw = own.get("odbc_connect")
        if raw is not None:
            self._check_raw_string_alone(own, extra)
            self.connection_string = raw
            parsed = {key.lower(): value for key, value in parse_connection_string(raw)}
            server = next((parsed[k] for k in _SERVER_KEYS if k in parsed), None)
            database = next((parsed[k] for k in _DATABASE_KEYS if k in parsed), None)
            self._where = _describe(server, parsed.get("port"), database, parsed.get("dsn"))
            self._secrets = [v for k, v in parsed.items() if k in ("pwd", "password") and v]
        else:
            self.connection_string = build_connection_string(self._attributes(own, extra))
            self._where = _describe(url.host, url.port, url.database, own.get("dsn"))
            self._secrets = [url.password] if url.password else []
        timeout = config.connect_timeout
        self.login_timeout = math.ceil(timeout) if timeout else 0
        self._query_timeout = math.ceil(config.socket_timeout)
        self._connect_kwargs = {
            "autocommit": self.autocommit,
            "timeout": self.login_timeout,
            **self.connect_args,
        }

    # -- the connection string -----------------------------------------------------------

    def _split_params(self, params: Mapping[str, str]) -> tuple[dict[str, str], Attributes]:
        """Split the query into dbpool's own parameters and driver attributes."""
        own: dict[str, str] = {}
        extra: Attributes = []
        seen: set[str] = set()
        for name, value in params.items():
            lowered = name.lower()
            if lowered in seen:
                raise ConfigError(f"Query parameter {name!r} is given twice (in another case)")
            seen.add(lowered)
            if lowered in _OWN_PARAMS:
                own[lowered] = value
            elif lowered in _URL_PARTS:
                raise ConfigError(
                    f"{name!r} cannot be a query parameter of a {self.name} URL: it is "
                    f"{_URL_PARTS[lowered]} in the URL itself "
                    f"({self.name}://user:password@host:port/database)"
                )
            else:
                key = self._attribute_key(name)
                extra.append((key, self._attribute_value(key, value)))
        return own, extra

    def _attribute_key(self, name: str) -> str:
        """The connection-string spelling of a query parameter; ConfigError if refused."""
        allowed = self.passthrough_keys
        if allowed is not None:
            key = allowed.get(name.lower())
            if key is None:
                hint = did_you_mean(name, SETTINGS) or _closest(name, allowed)
                raise ConfigError(
                    f"Unknown query parameter {name!r} in the {self.name} URL: it is neither "
                    f"a pool setting nor one of the driver keys dbpool passes on "
                    f"({', '.join(sorted(allowed.values(), key=str.lower))}).{hint}"
                )
            return key
        hint = did_you_mean(name, SETTINGS)
        if hint:
            raise ConfigError(
                f"Unknown query parameter {name!r} in the {self.name} URL: it looks like a "
                f"misspelt pool setting, so it is not passed to the ODBC driver.{hint}"
            )
        if _BAD_KEY.search(name):
            raise ConfigError(
                f"Query parameter {name!r} cannot be an ODBC connection-string key: keys "
                "cannot contain []{}(),;?*=!@ or begin or end with a space"
            )
        return name

    def _attribute_value(self, key: str, value: str) -> str:
        return value

    def _check_raw_string_alone(self, own: Mapping[str, str], extra: Attributes) -> None:
        url = self.url
        given = [
            part
            for part, value in (
                ("a user name", url.username),
                ("a password", url.password),
                ("a host", url.host),
                ("a port", url.port),
                ("a database", url.database),
            )
            if value is not None
        ]
        given += [f"{name}=" for name in ("driver", "dsn") if name in own]
        given += [f"{key}=" for key, _ in extra]
        if given:
            raise ConfigError(
                "odbc_connect is the whole ODBC connection string, so the URL cannot also "
                f"give {', '.join(given)}; put everything in odbc_connect "
                f"(e.g. {self.name}:///?odbc_connect=<percent-encoded string>)"
            )

    def _attributes(self, own: Mapping[str, str], extra: Attributes) -> Attributes:
        url = self.url
        dsn, driver = own.get("dsn"), own.get("driver")
        if dsn is not None and driver is not None:
            raise ConfigError(f"A {self.name} URL takes driver= or dsn=, not both")
        attributes: Attributes
        if dsn is not None:
            if not dsn:
                raise ConfigError("dsn must name an ODBC data source, got ''")
            attributes = [("DSN", dsn)]
            driver_name = self.dbapi.dataSources().get(dsn, "")
        else:
            driver_name = _unbrace(
                driver if driver is not None else self.default_odbc_driver or ""
            )
            if not driver_name:
                installed = ", ".join(self.dbapi.drivers()) or "none registered"
                raise ConfigError(
                    f"A {self.name} URL needs driver=<ODBC driver name>, dsn=<data source> or "
                    f"odbc_connect=<connection string>; installed drivers: {installed}"
                )
            attributes = [("DRIVER", driver_name)]
        attributes += self.server_attributes(dsn)
        for key, value in (
            ("DATABASE", url.database),
            ("UID", url.username),
            ("PWD", url.password),
        ):
            if value is not None:
                attributes.append((key, value))
        given = {key.lower() for key, _ in extra}
        attributes += [
            pair
            for pair in self.default_attributes(driver_name, given)
            if pair[0].lower() not in given
        ]
        return attributes + extra

    def server_attributes(self, dsn: str | None) -> Attributes:
        """Where the server is, as connection-string pairs (psqlODBC and MariaDB style)."""
        attributes: Attributes = []
        if self.url.host is not None:
            attributes.append(("SERVER", self.url.host))
        if self.url.port is not None:
            attributes.append(("PORT", str(self.url.port)))
        return attributes

    def default_attributes(self, driver_name: str, given: set[str]) -> Attributes:
        """Pairs added unless the query gives the same key (``given``: its keys, lower-cased)."""
        timeout = self.config.connect_timeout
        if not timeout:
            return []
        lowered = driver_name.lower()
        return [
            (key, str(math.ceil(timeout))) for word, key in _LOGIN_TIMEOUT_KEYS if word in lowered
        ]

    def describe(self) -> str:
        return self._where

    # -- connections -------------------------------------------------------------------

    def connect(self) -> Any:
        try:
            conn = self.dbapi.connect(self.connection_string, **self._connect_kwargs)
        except self.dbapi.Error as exc:
            error = self.connect_error(exc)
            raise error from error.orig
        level = self.config.isolation_level
        if level is not None and not self.autocommit:
            try:
                self.set_isolation(conn, level)
            except self.dbapi.Error as exc:
                conn.close()
                error = self.connect_error(exc)
                raise error from error.orig
        if self.config.socket_timeout:
            self._set_timeout(conn, self._query_timeout)  # ODBC's query timeout
        return conn

    def _set_timeout(self, conn: Any, seconds: int) -> None:
        """Set pyodbc's timeout (SQL_ATTR_CONNECTION_TIMEOUT, then each statement's query
        timeout); a driver without the attribute (psqlODBC) stays unbounded, as documented."""
        with suppress(self.dbapi.Error):
            conn.timeout = seconds

    def set_isolation(self, conn: Any, level: str) -> None:
        """Set the isolation level of a new connection, before it runs anything."""
        dbapi = self.dbapi
        conn.set_attr(dbapi.SQL_ATTR_TXN_ISOLATION, getattr(dbapi, _TXN_ISOLATION[level]))

    def connect_error(self, error: BaseException) -> ConnectError:
        """The base message, from an error whose text has every secret masked (drivers
        may echo the connection string), plus a hint when the driver is missing."""
        clean = self._scrubbed(error)
        result = super().connect_error(clean)
        message = str(error).lower()
        if sqlstate(error) == "IM002" or any(words in message for words in _MISSING_DRIVER):
            installed = ", ".join(self.dbapi.drivers()) or "none"
            result = ConnectError(
                f"{result} {self.missing_driver_hint} Registered ODBC drivers: {installed}.",
                orig=clean,
            )
        return result

    def _scrubbed(self, error: BaseException) -> BaseException:
        """``error``, or a copy of it whose message shows no password."""

        def scrub(text: str) -> str:
            text = hide_secrets(text)
            for secret in self._secrets:
                text = text.replace(secret, "***")
            return text

        args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in error.args)
        if args == error.args:
            return error
        clean = type(error)(*args)
        clean.__traceback__ = error.__traceback__
        return clean

    def ping(self, conn: Any) -> None:
        bound = self.timeouts.validation_timeout
        saved = conn.timeout
        if bound and saved != math.ceil(bound):
            self._set_timeout(conn, math.ceil(bound))  # whole seconds, as ODBC counts them
        try:
            super().ping(conn)
            self.reset(conn)  # the SELECT opened a transaction unless in autocommit
        finally:
            if conn.timeout != saved:
                self._set_timeout(conn, saved)

    def in_transaction(self, conn: Any) -> bool | None:
        return False if conn.autocommit else None

    def is_too_many_connections(self, error: BaseException) -> bool:
        # ODBC maps these refusals to SQLSTATE 08004 or 08001 (or HY000), which also mean
        # other things: only the server's words are specific.
        if sqlstate(error) == "53300":
            return True
        message = str(error.args[-1] if error.args else error).lower()
        return any(words in message for words in self.too_many_messages)

    def is_disconnect(self, error: BaseException) -> bool:
        if not isinstance(error, self.dbapi.Error):
            return False
        state = sqlstate(error)
        if state.startswith("08") or state in self.disconnect_sqlstates:
            return True
        if state in _TIMEOUT_SQLSTATES and self.config.socket_timeout:
            # Our own query timeout: the statement's fate on the server is unknown, so the
            # connection goes. A timeout the application set on a cursor is its business.
            return True
        message = str(error.args[-1] if error.args else error).lower()
        return any(words in message for words in self.disconnect_messages)
