"""psycopg connections whose calls to the server have a deadline (``socket_timeout``).

psycopg waits for a reply as long as it takes: it has no client-side timeout. With
``socket_timeout`` set, the PostgreSQL dialect connects with the classes made here, whose
``execute``, ``executemany``, ``commit`` and ``rollback`` arm the connection's
``dbpool.watchdog.SocketDeadline`` for the length of the call. A call still
running at the deadline has its socket shut down by the watchdog, so it fails at once;
it then raises ``OperationalError`` saying which timeout ran out, and the connection is
spent (the engine and the pool discard it as a lost connection).

Without ``socket_timeout`` the dialect uses psycopg's own classes: nothing here runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dbpool.timeouts import Timeouts
from dbpool.watchdog import SocketDeadline

_INF = float("inf")


def attach_deadline(conn: Any, timeouts: Timeouts) -> SocketDeadline:
    """Give a new connection its deadline and the engine's timeouts (for the messages)."""
    deadline = SocketDeadline(conn.pgconn.socket)
    conn.dbpool_deadline = deadline
    conn.dbpool_timeouts = timeouts
    return deadline


def bounded_call(conn: Any, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` within ``socket_timeout``; an error if it ran out."""
    deadline: SocketDeadline | None = getattr(conn, "dbpool_deadline", None)
    if deadline is None or deadline.deadline != _INF:  # not ours, or inside a pre-ping
        return call(*args, **kwargs)
    timeouts: Timeouts = conn.dbpool_timeouts
    deadline.arm(timeouts.socket_timeout)
    try:
        result = call(*args, **kwargs)
    except conn.dbpool_dbapi.Error as exc:
        if deadline.disarm():
            raise conn.dbpool_dbapi.OperationalError(timeouts.socket_timed_out(what)) from exc
        raise
    except BaseException:
        deadline.disarm()
        raise
    if deadline.disarm():  # the reply came just as the socket was shut: it is spent anyway
        raise conn.dbpool_dbapi.OperationalError(timeouts.socket_timed_out(what))
    return result


@functools.cache
def bounded_classes(dbapi: Any) -> tuple[type[Any], type[Any]]:
    """(connection class, cursor class) of psycopg, with every round trip bounded.

    Built on first use so that importing the dialect does not import psycopg.
    """

    execute = dbapi.Cursor.execute
    executemany = dbapi.Cursor.executemany

    class BoundedCursor(dbapi.Cursor):  # type: ignore[misc]
        # Inlined rather than through bounded_call(): this is the hot path.
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            conn = self._conn
            deadline: SocketDeadline = conn.dbpool_deadline
            if deadline.deadline != _INF:  # inside a pre-ping: its bound holds
                return execute(self, query, params, **kwargs)
            deadline.arm(conn.dbpool_timeouts.socket_timeout)
            try:
                result = execute(self, query, params, **kwargs)
            except BaseException as exc:
                if deadline.disarm() and isinstance(exc, dbapi.Error):
                    message = conn.dbpool_timeouts.socket_timed_out("statement")
                    raise dbapi.OperationalError(message) from exc
                raise
            if deadline.disarm():  # answered just as the socket was shut: spent anyway
                raise dbapi.OperationalError(conn.dbpool_timeouts.socket_timed_out("statement"))
            return result

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            return bounded_call(self._conn, "statement", executemany, self, *args, **kwargs)

    class BoundedConnection(dbapi.Connection):  # type: ignore[misc]
        dbpool_dbapi = dbapi

        def commit(self) -> None:
            bounded_call(self, "commit", super().commit)

        def rollback(self) -> None:
            bounded_call(self, "rollback", super().rollback)

    return BoundedConnection, BoundedCursor
