"""PooledConnection: what a standalone ``QueuePool.connect()`` hands out.

A thin proxy over one checked-out driver connection: ``close()`` gives it back, and if
it is garbage-collected instead, ``__del__`` tells the pool, which reclaims the slot.

Once returned, the driver connection may already be another thread's, so nothing
obtained through the proxy may reach it: the cursors it made are closed at return (a
client-side close), and the proxy itself raises an error that is both
``dbpool.ResourceClosedError`` and the driver's own PEP 249 error.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from contextlib import suppress
from types import BuiltinMethodType, CodeType, MethodType
from typing import TYPE_CHECKING, Any

from dbpool.driver_errors import closed_error
from dbpool.exc import ResourceClosedError

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

INHERITED_AFTER_FORK = (
    "This connection was checked out before os.fork(): it belongs to the parent process, "
    "and using it here would interleave with the parent on the same socket. Check out a "
    "new one in this process."
)
_RETURNED = "This connection has been returned to the pool"
_ALREADY_RETURNED = "This connection has already been returned to the pool"

# Driver connection methods that return a cursor (sqlite3, psycopg and pyodbc have
# ``execute``; sqlite3 also the other two): those cursors are closed at return too.
_CURSOR_MAKERS = frozenset({"execute", "executemany", "executescript"})


class _Handles(list[Any]):
    """The cursors made through one proxy: weak references where the cursor type allows
    them, else the cursors themselves. Dropped entries are pruned as the list doubles, so
    a long checkout that makes many short-lived cursors does not keep them."""

    __slots__ = ("prune_at",)

    def __init__(self) -> None:
        super().__init__()
        self.prune_at = 16

    def add(self, cursor: Any) -> None:
        try:
            self.append(weakref.ref(cursor))
        except TypeError:  # a C type without weak reference support
            self.append(cursor)
        if len(self) >= self.prune_at:
            self[:] = [entry for entry in self if _reachable(entry)]
            self.prune_at = max(16, 2 * len(self))

    def close_all(self) -> None:
        for entry in self:
            cursor = entry() if type(entry) is weakref.ref else entry
            if cursor is not None:
                # A cursor that fails to close leaves the connection in doubt; the pool's
                # reset on return finds out and discards it if so.
                with suppress(Exception):
                    cursor.close()
        self.clear()


_getrefcount: Callable[[object], int] | None = getattr(sys, "getrefcount", None)  # CPython


def _references_in_a_list(entries: list[Any]) -> int:
    for entry in entries:
        return _getrefcount(entry) if _getrefcount else 0
    return 0


# What sys.getrefcount() says, inside a loop like _reachable's caller, of an object only a
# list refers to. Measured rather than assumed: it differs between CPython versions.
_ONLY_LISTED = _references_in_a_list([object()])


def _reachable(entry: Any) -> bool:
    """Whether a handle could still be used by someone: a live weak reference, or a cursor
    that something besides the handle list refers to."""
    if type(entry) is weakref.ref:
        return entry() is not None
    if _getrefcount is None:
        return True
    # One reference more than in _references_in_a_list: this function's argument.
    return _getrefcount(entry) > _ONLY_LISTED + 1


class _Probe:
    __slots__ = ("spare",)
    spare: object


def _never_unshared(_: object) -> int:
    return sys.maxsize


getrefcount: Callable[[object], int] = getattr(sys, "getrefcount", _never_unshared)


def _count_unshared() -> int:
    """What ``getrefcount`` says in ``QueuePool.connect()`` of a spare proxy that nobody
    else holds: the same shape of code, measured rather than assumed (CPython versions
    differ). -1 (never reuse) where it cannot be measured or does not see a holder."""
    record = _Probe()
    record.spare = _Probe()
    proxy = record.spare
    unshared = getrefcount(proxy)
    held = [proxy]
    proxy = record.spare
    shared = getrefcount(proxy)
    del held
    return unshared if getrefcount is not _never_unshared and shared > unshared else -1


# connect() reuses a returned proxy when getrefcount() says at most this: then only the
# record and connect() itself refer to it, and no stale handle can see it revived.
UNSHARED = _count_unshared()


def line_at(code: CodeType, lasti: int) -> int:
    """The source line of the instruction at byte offset ``lasti`` in ``code``.

    A checkout records ``frame.f_lasti``, which costs nothing to read; the line number is
    worked out from it only when a warning needs it.
    """
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


class PooledConnection:
    """A checked-out DB-API connection; ``close()`` returns it to its pool.

    `QueuePool.connect()` makes it. Unknown attributes are looked up on the driver's
    connection, and its methods work only while the connection is checked out. Once
    returned, the driver connection may already be another caller's, so nothing obtained
    through the proxy reaches it any more: the cursors it made (with ``cursor()``, or with
    the driver's ``execute()``, ``executemany()`` and ``executescript()``) are closed at
    return, and using the proxy raises an error that is both `ResourceClosedError` and the
    driver's own PEP 249 ``Error``. One that is garbage-collected while checked out is
    reclaimed with a ``ResourceWarning`` naming where it was checked out. In a child
    process forked after the checkout, using it raises `ResourceClosedError` and
    ``close()`` sends nothing.

    Example:
        ```python
        with pool.connect() as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            conn.commit()
        ```
    """

    # A returned proxy is kept by its connection's record and handed out again by
    # connect() once nobody holds it (pool.py): it references neither the pool nor the
    # record then, so an idle pool has no reference cycle through its proxies.
    __slots__ = ("_code", "_cursors", "_driver_type", "_lasti", "_pool", "_pool_name",
                 "_record")  # fmt: skip

    def __init__(self, pool: QueuePool, record: _Record) -> None:
        self._pool: QueuePool | None = pool
        self._record: _Record | None = record
        self._cursors: _Handles | None = None  # made on the first cursor()
        # Where it was checked out, for the warning if it is garbage-collected unreturned:
        # set by connect().
        self._code: CodeType | None = None
        self._lasti = 0
        # For the errors and repr of a returned proxy, which no longer knows its pool.
        self._driver_type = type(record.dbapi_connection)
        self._pool_name = pool.name or "pool"

    @property
    def driver_connection(self) -> Any:
        """The driver's own connection (only while it is checked out)."""
        record = self._record
        pool = self._pool
        if record is None or pool is None:
            raise self._returned_error(_RETURNED)
        if record.epoch != pool._epoch:
            raise closed_error(type(record.dbapi_connection), INHERITED_AFTER_FORK)
        return record.dbapi_connection

    @property
    def closed(self) -> bool:
        """Whether it has been returned (or invalidated)."""
        return self._record is None

    def close(self) -> None:
        """Return the connection to the pool.

        Raises:
            ResourceClosedError: it was already returned.
        """
        record = self._record
        pool = self._pool
        if record is None or pool is None:
            raise self._returned_error(_ALREADY_RETURNED)
        self._record = self._pool = None
        if self._cursors is not None:
            try:
                self._close_cursors(pool, record)
            except BaseException:  # interrupted mid-close: its state is unknown
                pool.invalidate(record)
                raise
        record.spare = self  # for connect() to reuse once nobody holds it
        pool.checkin(record)

    def invalidate(self, error: BaseException | None = None) -> None:
        """Close the driver connection instead of returning it; its slot is freed.

        Args:
            error: the reason, for the log line and the ``invalidate`` listeners.

        Raises:
            ResourceClosedError: it was already returned.
        """
        record = self._record
        pool = self._pool
        if record is None or pool is None:
            raise self._returned_error(_ALREADY_RETURNED)
        self._record = self._pool = None
        # The driver connection is closed first: a cursor's close must not wait on a link
        # that may be why it is invalidated, and once closed it is nobody else's.
        pool.invalidate(record, error)
        if self._cursors is not None:
            self._close_cursors(pool, record)

    def _close_cursors(self, pool: QueuePool, record: _Record) -> None:
        cursors, self._cursors = self._cursors, None
        if cursors is not None and record.epoch == pool._epoch:
            cursors.close_all()  # (not the parent process's: closing one may read its socket)

    def _returned_error(self, message: str) -> ResourceClosedError:
        return closed_error(self._driver_type, message)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """Make a cursor on the driver connection; it is closed when the proxy is returned.

        Args:
            *args: passed to the driver's ``cursor()``.
            **kwargs: passed to the driver's ``cursor()``.

        Returns:
            The driver's cursor.
        """
        cursor = self.driver_connection.cursor(*args, **kwargs)
        self._remember(cursor)
        return cursor

    def _remember(self, cursor: Any) -> None:
        cursors = self._cursors
        if cursors is None:
            cursors = self._cursors = _Handles()
        cursors.add(cursor)

    def commit(self) -> None:
        """Commit the driver connection's transaction."""
        self.driver_connection.commit()

    def rollback(self) -> None:
        """Roll back the driver connection's transaction."""
        self.driver_connection.rollback()

    def __getattr__(self, name: str) -> Any:
        conn = self.driver_connection
        value = getattr(conn, name)
        if isinstance(value, (MethodType, BuiltinMethodType)) and value.__self__ is conn:
            return self._guard(name, value)
        return value

    def _guard(self, name: str, method: Any) -> Any:
        """The driver's bound method, usable only while this proxy holds the connection
        (a method kept past the return would otherwise still reach it)."""
        makes_cursor = name in _CURSOR_MAKERS

        def guarded(*args: Any, **kwargs: Any) -> Any:
            _ = self.driver_connection  # raises once the connection is returned
            result = method(*args, **kwargs)
            if makes_cursor and result is not None and hasattr(result, "close"):
                self._remember(result)
            return result

        guarded.__name__ = name
        guarded.__qualname__ = f"PooledConnection.{name}"
        guarded.__doc__ = method.__doc__
        return guarded

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._record is not None:
            self.close()

    def __del__(self) -> None:
        record = self._record
        pool = self._pool
        if record is not None and pool is not None:
            self._record = self._pool = None
            code = self._code
            with suppress(Exception):  # at interpreter shutdown modules may be torn down
                pool.orphaned(record, code, line_at(code, self._lasti) if code else 0)

    def __repr__(self) -> str:
        state = "returned" if self._record is None else "checked out"
        return f"<PooledConnection {state} from {self._pool_name}>"
