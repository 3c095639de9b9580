"""Every error dbpool raises, all under :class:`DBPoolError`.

Driver exceptions are re-raised as the PEP 249 class of the same name under
:class:`DBAPIError`, keeping the driver's exception in ``.orig``, so callers
catch one hierarchy whatever the database.
"""

from __future__ import annotations

from functools import partial
from typing import Any


class DBPoolError(Exception):
    """Base class of every dbpool error."""


class ConfigError(DBPoolError, ValueError):
    """An invalid URL, setting or keyword argument."""


class ArgumentError(DBPoolError, ValueError):
    """Bad arguments to an API call, such as a missing bind parameter."""


class PoolTimeoutError(DBPoolError):
    """No connection became free within ``pool_timeout`` (Prisma's P2024)."""

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
    """The pool was disposed while this caller was waiting for a connection."""


class ResourceClosedError(DBPoolError):
    """A connection or result was used after it was closed or returned."""


class ConnectError(DBPoolError):
    """The database cannot be reached or refused the login.

    The message names host, port and database, never the password.
    """

    def __init__(self, message: str, *, orig: BaseException | None = None) -> None:
        super().__init__(message)
        self.orig = orig


class TooManyConnectionsError(ConnectError):
    """The server refused a new connection because it is full (Prisma's P2037).

    PostgreSQL's "too many clients" (SQLSTATE 53300) and reserved-slots refusals, MySQL's
    and MariaDB's errors 1040 and 1203. ``server_limit`` is the server's connection limit
    when it is known, else None. Retried with backoff within ``pool_timeout`` like any
    connect failure.
    """

    code = "P2037"

    def __init__(
        self, message: str, *, orig: BaseException | None = None, server_limit: int | None = None
    ) -> None:
        super().__init__(message, orig=orig)
        self.server_limit = server_limit


class DBAPIError(DBPoolError):
    """A driver (PEP 249) error, wrapped; the driver's exception is ``.orig``."""

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
    pass


class Error(DBAPIError):
    pass


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


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
    """Whether ``error`` is a driver's PEP 249 exception (by the names in its class tree)."""
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
    """Return the dbpool PEP 249 exception matching the driver exception ``orig``."""
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
