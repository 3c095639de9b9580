"""Every error dbpool raises, all under [`DBPoolError`][dbpool.DBPoolError].

Driver exceptions are re-raised as the PEP 249 class of the same name under
[`DBAPIError`][dbpool.DBAPIError], keeping the driver's exception in ``.orig``, so
callers catch one hierarchy whatever the database.
"""

from __future__ import annotations

from functools import partial
from typing import Any


class DBPoolError(Exception):
    """Base class of every dbpool error: ``except dbpool.DBPoolError`` catches them all.

    Every error class is importable from ``dbpool`` itself.
    """


class ConfigError(DBPoolError, ValueError):
    """An invalid URL, setting, query parameter or keyword argument; also a ``ValueError``.

    Raised by [`create_engine`][dbpool.create_engine], [`make_url`][dbpool.make_url] and
    the other calls that take settings, before anything is opened. The message names the
    parameter and what it accepts, with a "did you mean" for a name within two edits of
    a setting (``conection_limit``); it never shows a password. Also raised when the
    database's driver is not installed, naming the extra to install
    (``pip install "dbpool[postgresql]"``).
    """


class ArgumentError(DBPoolError, ValueError):
    """A bad argument to a call; also a ``ValueError``.

    For example a bind parameter missing from ``params``, a plain string passed to
    [`Connection.execute`][dbpool.Connection.execute] (wrap it in
    [`text()`][dbpool.text]), or ``begin()`` while a transaction is open.
    """


class PoolTimeoutError(DBPoolError):
    """No connection became free within ``pool_timeout`` (Prisma's error P2024).

    Every connection stayed checked out for the whole wait. The caller's place in the
    queue is given up and the queue moves on. Usual causes: connections held during
    slow work (or leaked), a ``connection_limit`` too small for the concurrency, or a
    database that answers slowly; the [configuration guide](configuration.md#timeouts)
    says what to do.

    Args:
        message: The error message.
        connection_limit: The pool's ``connection_limit``.
        pool_timeout: The ``pool_timeout`` that ran out, in seconds.
        waited: How long the caller waited, in seconds.

    Attributes:
        code: ``"P2024"``, Prisma's code for this error.
        connection_limit: The pool's ``connection_limit``.
        pool_timeout: The ``pool_timeout`` that ran out, in seconds.
        waited: How long the caller waited, in seconds.

    Example:
        ```python
        try:
            with engine.connect() as conn:
                ...
        except dbpool.PoolTimeoutError as exc:
            log.warning("%s: pool of %d busy for %.1f s", exc.code, exc.connection_limit,
                        exc.waited)
        ```
    """

    code = "P2024"

    def __init__(
        self, message: str, *, connection_limit: int, pool_timeout: float, waited: float
    ) -> None:
        super().__init__(message)
        self.connection_limit = connection_limit
        self.pool_timeout = pool_timeout
        self.waited = waited

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (multiprocessing, Django's parallel test runner): Exception's own
        # pickling passes only the message, and the keyword arguments are required.
        return (
            partial(type(self), connection_limit=self.connection_limit,
                    pool_timeout=self.pool_timeout, waited=self.waited),
            (str(self),),
        )  # fmt: skip


class PoolDisposedError(DBPoolError):
    """The pool was disposed while this caller was waiting in its queue.

    ``dispose()`` wakes every waiting caller with this error. The engine stays usable:
    a new checkout starts a new pool.
    """


class ResourceClosedError(DBPoolError):
    """A connection or result was used after it was closed or returned.

    Also raised for reading rows from a statement that returns none, and for using in
    a forked child process a connection that the parent checked out.
    """


class ConnectError(DBPoolError):
    """The database cannot be reached or refused the login.

    Raised by [`Engine.open`][dbpool.Engine.open] at once, and by a checkout when no
    connection could be opened within ``pool_timeout`` (failed connects are retried with
    backoff until then). The message names host, port and database, never the password.

    Args:
        message: The error message.
        orig: The driver's exception, if there was one.

    Attributes:
        orig: The driver's exception, or None.
    """

    def __init__(self, message: str, *, orig: BaseException | None = None) -> None:
        super().__init__(message)
        self.orig = orig


class TooManyConnectionsError(ConnectError):
    """The server refused a new connection because it is full (Prisma's error P2037).

    PostgreSQL's "too many clients" (SQLSTATE 53300) and reserved-slots refusals, MySQL's
    and MariaDB's errors 1040, 1203 and 1226. Retried with backoff within
    ``pool_timeout`` like any connect failure, then raised itself (not
    [`PoolTimeoutError`][dbpool.PoolTimeoutError]); the message names the remedies
    (see [scaling](scaling.md#when-the-server-is-full-toomanyconnectionserror-p2037)).

    Args:
        message: The error message.
        orig: The driver's exception, if there was one.
        server_limit: The server's connection limit, when known.

    Attributes:
        code: ``"P2037"``, Prisma's code for this error.
        server_limit: The server's connection limit when the engine's start-up probe
            found it, else None.
    """

    code = "P2037"

    def __init__(
        self, message: str, *, orig: BaseException | None = None, server_limit: int | None = None
    ) -> None:
        super().__init__(message, orig=orig)
        self.server_limit = server_limit


class DBAPIError(DBPoolError):
    """An error from the database driver, re-raised as the PEP 249 class of the same name.

    A driver's ``IntegrityError`` becomes [`dbpool.IntegrityError`][dbpool.IntegrityError]
    and so on, whatever the database, so one ``except`` clause serves them all. A
    statement that fails because the connection was lost discards the connection and
    raises [`OperationalError`][dbpool.OperationalError] with ``connection_invalidated``
    true.

    Args:
        message: The error message.
        orig: The driver's exception.
        statement: The SQL that failed, if a statement did.
        params: Its parameters.
        connection_invalidated: Whether the connection was lost and discarded.

    Attributes:
        orig: The driver's exception.
        statement: The SQL that failed, or None.
        params: Its parameters, or None.
        connection_invalidated: Whether the connection was lost (and discarded).
    """

    def __init__(
        self,
        message: str,
        *,
        orig: BaseException | None = None,
        statement: str | None = None,
        params: Any = None,
        connection_invalidated: bool = False,
    ) -> None:
        super().__init__(message)
        self.orig = orig
        self.statement = statement
        self.params = params
        self.connection_invalidated = connection_invalidated


class Warning(DBAPIError):  # the PEP 249 name, shadowing the builtin on purpose
    """PEP 249 ``Warning``: an important warning raised by the driver as an exception.

    It shadows the built-in ``Warning`` only inside the ``dbpool`` namespace: write
    ``dbpool.Warning``, and do not ``from dbpool import *``.
    """


class Error(DBAPIError):
    """PEP 249 ``Error``: the base class of the driver errors below.

    It shadows no built-in name, but ``dbpool.Error`` reads best; do not
    ``from dbpool import *``.
    """


class InterfaceError(Error):
    """PEP 249 ``InterfaceError``: a problem of the driver itself rather than the database.

    For example using a cursor or connection that the driver has closed.
    """


class DatabaseError(Error):
    """PEP 249 ``DatabaseError``: the base class of the errors the database reports."""


class DataError(DatabaseError):
    """PEP 249 ``DataError``: a problem with the data, such as a value out of range or a
    division by zero."""


class OperationalError(DatabaseError):
    """PEP 249 ``OperationalError``: the database's operation failed, not the statement.

    A lost connection, a server that shut down, a ``socket_timeout`` that ran out, a
    deadlock or a lock wait timeout. With ``connection_invalidated`` true the connection
    was discarded; the next statement on the same
    [`Connection`][dbpool.Connection] checks out a fresh one.
    """


class IntegrityError(DatabaseError):
    """PEP 249 ``IntegrityError``: a constraint was violated (unique, foreign key,
    not null, check)."""


class InternalError(DatabaseError):
    """PEP 249 ``InternalError``: the database hit an internal error, such as a
    transaction that is out of sync."""


class ProgrammingError(DatabaseError):
    """PEP 249 ``ProgrammingError``: an error in the SQL, such as a syntax error or a
    table that does not exist."""


class NotSupportedError(DatabaseError):
    """PEP 249 ``NotSupportedError``: the database does not support what was asked."""


# Most specific first: a driver class is matched by the first PEP 249 name in its MRO.
_PEP249: dict[str, type[DBAPIError]] = {
    "DataError": DataError,
    "OperationalError": OperationalError,
    "IntegrityError": IntegrityError,
    "InternalError": InternalError,
    "ProgrammingError": ProgrammingError,
    "NotSupportedError": NotSupportedError,
    "InterfaceError": InterfaceError,
    "DatabaseError": DatabaseError,
    "Error": Error,
    "Warning": Warning,
}


def is_dbapi_error(error: BaseException) -> bool:
    """Whether an exception is a driver's PEP 249 error.

    Args:
        error: The exception.

    Returns:
        True when a class in its tree has a PEP 249 name (and it is not dbpool's own).
    """
    return any(
        klass.__name__ in _PEP249 and klass.__module__ != "builtins"
        for klass in type(error).__mro__
    ) and not isinstance(error, DBPoolError)


def wrap_dbapi_error(
    orig: BaseException,
    *,
    statement: str | None = None,
    params: Any = None,
    connection_invalidated: bool = False,
) -> DBAPIError:
    """The dbpool PEP 249 exception for a driver's exception.

    Args:
        orig: The driver's exception.
        statement: The SQL that failed, if a statement did.
        params: Its parameters.
        connection_invalidated: Whether the connection was lost; the result is then an
            ``OperationalError`` saying so.

    Returns:
        The exception to raise (``from orig``), of the class with the first PEP 249 name
        in ``orig``'s class tree.
    """
    cls: type[DBAPIError] = DBAPIError
    for klass in type(orig).__mro__:
        found = _PEP249.get(klass.__name__)
        if found is not None:
            cls = found
            break
    detail = f"({type(orig).__module__}.{type(orig).__name__}) {orig}".rstrip()
    if connection_invalidated:
        detail = f"The connection to the database was lost and has been discarded: {detail}"
        if cls is DBAPIError or not issubclass(cls, OperationalError):
            cls = OperationalError
    if statement is not None:
        detail = f"{detail}\n[SQL: {statement}]"
    return cls(
        detail,
        orig=orig,
        statement=statement,
        params=params,
        connection_invalidated=connection_invalidated,
    )
