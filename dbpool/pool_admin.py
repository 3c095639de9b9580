"""QueuePool's public API beyond checkout and checkin: its settings, counts and controls.

`PoolAdmin` is a mixin that `QueuePool` (pool.py) inherits, so there is still one class,
one object and one lock; this module only keeps the documented entry points that are
not on the hot path out of the hot path's file. Each is a thin front for the room that
does the work: starting and opening (`pool_open`), closing, invalidating and disposing
(`pool_close`), the janitor's sweep (`pool_sweep`) and garbage-collected checkouts
(`pool_orphans`). `status()` and `borrow_idle()` are a few steps under the lock and
live here whole, as do the checks of the constructor's settings and the slow paths'
counters (``_configure``, called by ``QueuePool.__init__``).

Nothing here is called per checkout. The ``cast`` that tells mypy that ``self`` is the
pool costs a function call, which only slow paths pay; `inherited()`, which the engine
asks on every statement, reads ``self`` without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import CodeType
from typing import TYPE_CHECKING, Any, cast

from dbpool import pool_close, pool_open, pool_orphans, pool_sweep
from dbpool.config import PRE_PING_WINDOW, default_connection_limit
from dbpool.config import parse_int_at_least as _parse_int
from dbpool.config import parse_pre_ping as _parse_pre_ping
from dbpool.config import parse_seconds as _parse_seconds
from dbpool.events import Events
from dbpool.exc import ArgumentError, DBPoolError, ResourceClosedError
from dbpool.status import PoolStatus

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

_INF = math.inf


class PoolAdmin:
    """The settings, counts and controls of `QueuePool` (which inherits them)."""

    _epoch: int  # set by QueuePool.__init__, bumped in a forked child (pool_fork.py)

    def _configure(self, creator: Callable[[], Any], connection_limit: int | None,
                   pool_timeout: float, max_idle_connection_lifetime: float,
                   max_connection_lifetime: float, pre_ping: bool | float | None,
                   leak_detection_threshold: float, ping: Callable[[Any], None] | None,
                   reset: Callable[[Any], None] | None, close: Callable[[Any], None],
                   abort: Callable[[Any], None] | None, name: str, where: str,
                   events: Events | None) -> None:  # fmt: skip
        # QueuePool.__init__'s settings (documented there), checked; then the counters.
        self._creator = creator
        self._limit = (
            default_connection_limit()
            if connection_limit is None
            else _parse_int("connection_limit", connection_limit, 1)
        )
        self._timeout = _parse_seconds("pool_timeout", pool_timeout)
        self._max_idle = _parse_seconds(
            "max_idle_connection_lifetime", max_idle_connection_lifetime
        )
        self._max_lifetime = _parse_seconds("max_connection_lifetime", max_connection_lifetime)
        self._leak_threshold = _parse_seconds("leak_detection_threshold", leak_detection_threshold)
        if pre_ping is None:
            pre_ping = PRE_PING_WINDOW if ping is not None else False
        window = _parse_pre_ping("pre_ping", pre_ping)
        self._ping_window = _INF if window is None or ping is None else window
        self._ping = ping
        self._reset = reset
        self._close = close
        # Wakes a thread blocked on a connection that dispose(timeout) is taking from it.
        self._abort = abort
        self.name = name
        self._where = where or name or "the database"  # for log lines: host, never password
        self.events = events if events is not None else Events()
        # A checked-in connection needs no check until the earliest of these has passed
        # (checkin sets the record's fresh_until from it).
        self._fresh_for = min(self._ping_window, self._max_idle or _INF)
        self._idle_for = self._max_idle or _INF  # the janitor's deadline for an idle one

        self._last_connect_error: str | None = None
        self._opened_total = 0
        self._closed_total = 0
        self._timeouts_total = 0
        self._validation_failures_total = 0
        self._too_many_connections_total = 0
        self._refused_since: float | None = None  # start of the current run of refusals
        self._refused_warned_at = 0.0
        self._refused_unreported = 0

    @property
    def connection_limit(self) -> int:
        """The most connections open at once."""
        return self._limit

    @property
    def pool_timeout(self) -> float:
        """Longest wait in the queue, in seconds (``0``: forever)."""
        return self._timeout

    @property
    def validation_failures_total(self) -> int:
        """Pre-pings that failed or went unanswered; each connection was replaced."""
        return self._validation_failures_total

    @property
    def too_many_connections_total(self) -> int:
        """Connects the server refused because it was full (`TooManyConnectionsError`)."""
        return self._too_many_connections_total

    def status(self) -> PoolStatus:
        """Read the pool's counts, consistent with each other (taken under the lock).

        Returns:
            A `PoolStatus` snapshot.
        """
        pool = cast("QueuePool", self)
        with pool._lock:
            open_, idle = pool._slots - pool._connecting, len(pool._idle)
            return PoolStatus(pool._limit, open_, open_ - idle, idle, len(pool._waiters),
                              pool._opened_total, pool._closed_total,
                              pool._timeouts_total)  # fmt: skip

    def open(self) -> None:
        """Start the pool and open one connection now, failing fast (Prisma's ``$connect``).

        Raises:
            ConnectError: the database cannot be reached (no retries).
        """
        pool_open.open_pool(cast("QueuePool", self))

    def dispose(self, timeout: float | None = None) -> None:
        """Close idle connections now and checked-out ones when they come back.

        Waiters get `PoolDisposedError`. The pool stays usable: the next checkout starts
        it afresh.

        Args:
            timeout: if given, wait this long (seconds) for checked-out connections to
                come back, then close the rest where they are.
        """
        pool_close.dispose(cast("QueuePool", self), timeout)

    def invalidate(self, record: _Record, error: BaseException | None = None,
                   *, disconnect: bool = False) -> None:  # fmt: skip
        """Close a checked-out connection that must not be reused, and free its slot.

        Args:
            record: a record checked out from this pool.
            error: what condemned it, for the log line and the listeners.
            disconnect: the server went away: every connection opened before now is then
                suspect, and validated (or replaced) before its next use.

        Raises:
            ResourceClosedError: it was already returned.
            ArgumentError: it was checked out from another pool.
        """
        pool_close.invalidate(cast("QueuePool", self), record, error, disconnect)

    def borrow_idle(self) -> _Record | None:
        """Take an idle connection for a moment of the pool's own work (the reaper), or
        None: it never waits nor opens one. Give it back with `checkin`.

        Returns:
            An idle connection's record (counted as busy meanwhile), or None.
        """
        pool = cast("QueuePool", self)
        with pool._lock:
            if pool._orphans or not pool._idle:
                return None
            record = pool._idle.pop()
        record.owner = pool
        if pool.events.checkout:
            pool.events.fire("checkout", record.dbapi_connection)
        return record

    def sweep_locked(self, now: float) -> tuple[list[_Record], float]:
        """Take idle connections past their lifetime out of the pool (the janitor's sweep,
        with the lock held; it closes them after releasing it).

        Args:
            now: the time, by ``time.monotonic()``.

        Returns:
            The expired records, and when to look again (``math.inf``: when woken).
        """
        return pool_sweep.sweep_locked(cast("QueuePool", self), now)

    def orphaned(self, record: _Record, code: CodeType | None, line: int) -> None:
        """Warn about a checkout that was garbage-collected, and reclaim its slot (called
        from a proxy's ``__del__``; never blocks on the lock).

        Args:
            record: the record that was checked out.
            code: the code object where it was checked out, if known.
            line: the line in ``code`` where it was checked out.
        """
        pool_orphans.orphaned(cast("QueuePool", self), record, code, line)

    def inherited(self, record: _Record) -> bool:
        """Tell whether ``record`` was checked out in the parent before this process forked.

        Args:
            record: a record checked out from this pool.

        Returns:
            True if it belongs to the parent process: nothing may be sent on it here.
        """
        # The engine asks this on every statement: it reads ``self`` as is, with no cast.
        return record.epoch != self._epoch

    def _misplaced(self, record: _Record) -> DBPoolError:
        # The error for a return (or invalidate) of a record this pool does not hold.
        if record.owner is None:
            return ResourceClosedError("This connection has already been returned to the pool")
        return ArgumentError(
            "This connection was checked out from another pool; return it to that pool"
        )
