"""QueuePool: a strictly fair connection pool with one lock and direct hand-off.

How it works, in one screen:

* ``_slots`` counts connections that are open or being opened; it never exceeds
  ``connection_limit``. A caller reserves a slot under the lock *before* connecting, and
  gives it back if connecting fails.
* Idle connections sit in ``_idle`` (a stack: the most recently used is reused first, so
  the least recently used sink to the bottom and age out).
* A caller that finds neither an idle connection nor a free slot appends a ``_Waiter`` to
  ``_waiters`` and sleeps on it outside the lock. Whoever frees a connection hands it
  straight to the head waiter under the lock, so nobody overtakes a waiter and each
  hand-off wakes exactly one thread.
* All I/O (connect, ping, reset, close) happens outside the lock: decide under the lock,
  act after releasing it.
"""

from __future__ import annotations

import _thread
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

from dbpool.config import DEFAULTS, PRE_PING_WINDOW, default_connection_limit
from dbpool.config import parse_int_at_least as _parse_int
from dbpool.config import parse_pre_ping as _parse_pre_ping
from dbpool.config import parse_seconds as _parse_seconds
from dbpool.events import Events
from dbpool.exc import (
    ArgumentError,
    DBPoolError,
    PoolDisposedError,
    PoolTimeoutError,
    ResourceClosedError,
    TooManyConnectionsError,
)
from dbpool.histogram import WAIT_BUCKETS, Histogram
from dbpool.janitor import Janitor
from dbpool.proxy import PooledConnection

logger = logging.getLogger("dbpool")

_monotonic = time.monotonic
_getframe = sys._getframe
_INF = math.inf

# What a waiter can be handed besides a connection: a free slot to open one in, or an error.
_SLOT = object()
_FAILED = object()

# The first reconnect attempt waits this long; each further one twice as long, up to the cap.
_BACKOFF_FIRST = 0.05
_BACKOFF_CAP = 2.0
# While the server keeps refusing because it is full, its WARNING repeats at most this often.
_FULL_WARNING_EVERY = 60.0

# Connections inherited from a parent process: kept referenced so that the child never
# closes (and so never disturbs) sockets the parent is still using.
_inherited_after_fork: list[Any] = []
_live_pools: weakref.WeakSet[QueuePool] = weakref.WeakSet()


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of a pool's counts."""

    connection_limit: int
    open: int
    busy: int
    idle: int
    waiting: int
    opened_total: int
    closed_total: int
    timeouts_total: int

    def _repr_html_(self) -> str:
        from dbpool.display import status_html

        return status_html(self)


class _Record:
    """One physical connection and its clocks."""

    __slots__ = (
        "checked_out_at",
        "closed",
        "created_at",
        "cursor",
        "dbapi_connection",
        "epoch",
        "expires_at",
        "fresh_until",
        "generation",
        "last_used",
        "leak_reported",
        "owner",
        "stack",
    )

    def __init__(self, dbapi_connection: Any, now: float, expires_at: float, generation: int,
                 epoch: int) -> None:  # fmt: skip
        self.dbapi_connection = dbapi_connection
        self.cursor: Any = None  # kept by the engine between statements (see engine.py)
        self.created_at = now
        self.last_used = now
        self.expires_at = expires_at
        # Until this moment a checkout needs no validation at all (the hot path's one test).
        self.fresh_until = now
        self.generation = generation
        self.epoch = epoch
        self.closed = False
        self.checked_out_at = now
        self.leak_reported = False
        self.stack: str | None = None  # where it was checked out, with leak detection on
        # The pool it is checked out from, None while idle: catches returns to the wrong pool
        # and second returns before they corrupt the idle list.
        self.owner: QueuePool | None = None


class _Waiter:
    """A condition variable for exactly one waiting thread and one notification.

    The waiter sleeps on its own lock, outside the pool lock; the thread that frees a
    connection sets ``grant`` while holding the pool lock and releases the waiter's lock.
    Because ``notify`` only happens to a waiter still in the queue (removal and notify are
    both done under the pool lock), a hand-off racing a timeout is never lost: the waiter
    re-checks ``grant`` under the pool lock before giving up.
    """

    __slots__ = ("_signal", "error", "grant")

    def __init__(self) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self.grant: object = None
        self.error: BaseException | None = None

    def wait(self, timeout: float | None) -> bool:
        return self._signal.acquire(True, -1 if timeout is None else timeout)

    def notify(self, grant: object) -> None:
        self.grant = grant
        self._signal.release()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.notify(_FAILED)


def _generic_reset(conn: Any) -> None:
    """Roll back unless the driver can tell that no transaction is open.

    Recognised: sqlite3 (``in_transaction``), psycopg 3 (``info.transaction_status``) and
    PyMySQL in autocommit mode (the server's IN_TRANS status flag). Any other driver gets
    a rollback, which is always safe.
    """
    open_transaction = getattr(conn, "in_transaction", None)
    if open_transaction is None:
        status = getattr(getattr(conn, "info", None), "transaction_status", None)
        if status is not None:
            open_transaction = status != 0  # psycopg.pq.TransactionStatus.IDLE
        else:
            server_status = getattr(conn, "server_status", None)
            if isinstance(server_status, int) and server_status & 2:  # autocommit on
                open_transaction = bool(server_status & 1)  # SERVER_STATUS_IN_TRANS
    if open_transaction is not False:
        conn.rollback()


def _close_connection(conn: Any) -> None:
    conn.close()


class QueuePool:
    """A thread-safe pool of DB-API connections made by ``creator``, strictly FIFO.

    Usable on its own around any DB-API ``creator``; an engine builds one with its
    dialect's ``ping``, ``reset`` and ``is_disconnect``.
    """

    def __init__(
        self,
        creator: Callable[[], Any],
        *,
        connection_limit: int | None = None,
        pool_timeout: float = DEFAULTS["pool_timeout"],
        max_idle_connection_lifetime: float = DEFAULTS["max_idle_connection_lifetime"],
        max_connection_lifetime: float = DEFAULTS["max_connection_lifetime"],
        pre_ping: bool | float | None = None,
        leak_detection_threshold: float = 0.0,
        ping: Callable[[Any], None] | None = None,
        reset: Callable[[Any], None] | None = _generic_reset,
        close: Callable[[Any], None] = _close_connection,
        abort: Callable[[Any], None] | None = None,
        name: str = "",
        where: str = "",
        events: Events | None = None,
    ) -> None:
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
        # A checked-in connection needs no check until the earliest of these has passed.
        self._fresh_for = min(self._ping_window, self._max_idle or _INF)

        self._lock = threading.Lock()
        self._idle: deque[_Record] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._records: set[_Record] = set()  # every open connection: for dispose and leaks
        self._orphans: deque[_Record] = deque()
        self._slots = 0
        self._connecting = 0
        self._started = False
        self._janitor: Janitor | None = None
        self._generation = 0
        self._retire_below = 0  # connections of older generations are closed on return
        self._suspect_below = 0  # ... and validated before reuse
        self._epoch = 0  # bumped in a forked child
        self._last_connect_error: str | None = None
        # The class of the driver's connections: a returned proxy's errors derive from the
        # driver's own Error class (proxy.py), found by it off the hot path.
        self._connection_type: type | None = None
        self._opened_total = 0
        self._closed_total = 0
        self._timeouts_total = 0
        self._validation_failures_total = 0
        self._too_many_connections_total = 0
        self._refused_since: float | None = None  # start of the current run of refusals
        self._refused_warned_at = 0.0
        self._refused_unreported = 0
        self.wait_histogram = Histogram(WAIT_BUCKETS)
        _live_pools.add(self)

    # -- public API --------------------------------------------------------------------

    @property
    def connection_limit(self) -> int:
        return self._limit

    @property
    def pool_timeout(self) -> float:
        return self._timeout

    @property
    def validation_failures_total(self) -> int:
        """Pre-pings that failed or went unanswered; each connection was replaced."""
        return self._validation_failures_total

    @property
    def too_many_connections_total(self) -> int:
        """Connects the server refused because it was full (``TooManyConnectionsError``)."""
        return self._too_many_connections_total

    def connect(self) -> PooledConnection:
        """Check out a connection; ``close()`` on the result returns it."""
        frame = _getframe(1)
        return PooledConnection(self, self.checkout(), frame.f_code, frame.f_lineno)

    def checkout(self) -> _Record:
        """Take a connection record (the engine wraps it in its own proxy)."""
        # The hot path: explicit acquire/release is about twice as fast as ``with``.
        lock = self._lock
        lock.acquire()
        try:
            record = self._idle.pop() if self._idle else None
        finally:
            lock.release()
        if record is None:
            record = self._checkout_slow()
        elif not (_monotonic() < record.fresh_until and record.generation >= self._suspect_below):
            record = self._validate(record, None)
        record.owner = self
        if self.events.checkout:
            self.events.fire("checkout", record.dbapi_connection)
        if self._leak_threshold:
            self._track_checkout(record)
        return record

    def borrow_idle(self) -> _Record | None:
        """An idle connection for a moment of the pool's own work (the idle-connection
        reaper), or None: never waits and never opens one. Give it back with ``checkin``;
        meanwhile it counts as busy, like any checked-out connection."""
        with self._lock:
            if self._orphans or not self._idle:
                return None
            record = self._idle.pop()
        record.owner = self
        if self.events.checkout:
            self.events.fire("checkout", record.dbapi_connection)
        return record

    def status(self) -> PoolStatus:
        with self._lock:
            open_ = self._slots - self._connecting
            idle = len(self._idle)
            return PoolStatus(
                connection_limit=self._limit,
                open=open_,
                busy=open_ - idle,
                idle=idle,
                waiting=len(self._waiters),
                opened_total=self._opened_total,
                closed_total=self._closed_total,
                timeouts_total=self._timeouts_total,
            )

    def open(self) -> None:
        """Start the pool and open one connection now, failing fast (Prisma's ``$connect``)."""
        with self._lock:
            started = self._start_locked()
            running = bool(self._idle) or self._slots - self._connecting > 0
            full = self._slots >= self._limit
            if not (running or full):
                self._slots += 1
                self._connecting += 1
        if started:
            self._log_start()
        if running:
            return
        if full:  # every slot is being opened by other callers: queue for one like anyone
            self.checkin(self.checkout())
        else:
            self.checkin(self._open(None, retry=False))

    def dispose(self, timeout: float | None = None) -> None:
        """Close idle connections now and checked-out ones when they come back.

        Waiters get ``PoolDisposedError``. With ``timeout``, wait that long for checked-out
        connections to come back, then close the rest where they are. The pool stays
        usable: the next checkout starts it afresh.
        """
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
            waiters = list(self._waiters)
            self._waiters.clear()
            self._generation += 1
            self._retire_below = self._generation
            janitor, self._janitor = self._janitor, None
            self._started = False
            for waiter in waiters:
                waiter.fail(
                    PoolDisposedError("The pool was disposed while waiting for a connection")
                )
        if janitor is not None:
            janitor.stop()
        for record in idle:
            self._discard(record)
        if timeout is not None:
            self._close_checked_out(timeout)

    def _close_checked_out(self, timeout: float) -> None:
        deadline = _monotonic() + timeout
        while True:
            with self._lock:
                left = [r for r in self._records if r.generation < self._retire_below]
            if not left or _monotonic() >= deadline:
                break
            time.sleep(0.01)
        for record in left:
            logger.warning("closing a connection still checked out after dispose")
            if self._abort is not None:
                try:
                    self._abort(record.dbapi_connection)
                except Exception:
                    logger.debug("shutting a connection's socket failed", exc_info=True)
            self._discard(record)

    # -- the slow paths ------------------------------------------------------------------

    def _checkout_slow(self) -> _Record:
        start = _monotonic()
        deadline = start + self._timeout if self._timeout else None
        while True:
            record: _Record | _Waiter | None
            started = False
            with self._lock:
                if not self._orphans:
                    if not self._started:
                        started = self._start_locked()
                    if self._idle:
                        record = self._idle.pop()
                        break
                    if self._slots < self._limit:
                        self._slots += 1
                        self._connecting += 1
                        record = None
                        break
                    waiter = _Waiter()
                    self._waiters.append(waiter)
                    record = waiter
                    break
            self._reclaim_orphans()
        if started:
            self._log_start()
        if record is None:
            return self._open(deadline)
        if isinstance(record, _Waiter):
            return self._wait(record, start, deadline)
        return self._validate(record, deadline)

    def _wait(self, waiter: _Waiter, start: float, deadline: float | None) -> _Record:
        try:
            signalled = waiter.wait(None if deadline is None else deadline - start)
        except BaseException:  # KeyboardInterrupt while waiting: leave no phantom waiter
            self._abandon(waiter)
            raise
        waited = _monotonic() - start
        if not signalled:
            with self._lock:
                timed_out = waiter.grant is None
                if timed_out:
                    self._waiters.remove(waiter)
                    self._timeouts_total += 1
            if timed_out:
                self.wait_histogram.observe(waited)
                if self.events.timeout:
                    self.events.fire("timeout", waited)
                error = self._timeout_error(waited)
                logger.warning("%s", error)
                raise error
        self.wait_histogram.observe(waited)
        grant = waiter.grant
        if grant is _FAILED:
            assert waiter.error is not None
            raise waiter.error
        if grant is _SLOT:
            return self._open(deadline)
        assert isinstance(grant, _Record)
        return self._validate(grant, deadline)

    def _abandon(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter.grant is None:
                self._waiters.remove(waiter)
                return
            if waiter.grant is _SLOT:
                self._connecting -= 1
                self._release_slot_locked()
                return
        if isinstance(waiter.grant, _Record):
            self.checkin(waiter.grant)

    def _timeout_error(self, waited: float) -> PoolTimeoutError:
        status = self.status()
        message = (
            "Timed out fetching a new connection from the connection pool. "
            f"(current connection limit: {self._limit}, pool timeout: {self._timeout:g} s, "
            f"waited {waited:.2f} s; {status.open} open, {status.busy} busy, "
            f"{status.waiting} waiting)"
        )
        if self._last_connect_error and status.open < self._limit:
            message += f" The last attempt to connect failed: {self._last_connect_error}"
        return PoolTimeoutError(
            message, connection_limit=self._limit, pool_timeout=self._timeout, waited=waited
        )

    def _validate(self, record: _Record, deadline: float | None) -> _Record:
        """Hand out ``record`` if it is still good, else replace it in the same slot."""
        now = _monotonic()
        suspect = record.generation < self._suspect_below
        if now >= record.expires_at or (
            self._max_idle and now - record.last_used >= self._max_idle
        ):
            pass  # too old: replace
        elif self._ping is None:
            if not suspect:
                return record
        elif suspect or now - record.last_used >= self._ping_window:
            try:
                self._ping(record.dbapi_connection)
            except Exception as exc:
                with self._lock:
                    self._validation_failures_total += 1
                logger.warning("a connection to %s failed its pre-ping and is replaced: %s",
                               self._where, str(exc).strip() or type(exc).__name__)  # fmt: skip
            except BaseException:  # interrupted mid-ping: its state is unknown
                self._discard(record)
                raise
            else:
                if record.generation >= self._retire_below:  # clears suspicion, not a dispose
                    record.generation = self._generation
                return record
        else:
            return record
        if deadline is None and self._timeout:
            deadline = now + self._timeout
        if not self._close_record(record):
            # dispose(timeout) force-closed it meanwhile and freed its slot: queue afresh.
            return self._checkout_slow()
        with self._lock:
            self._connecting += 1
        return self._open(deadline)

    def _open(self, deadline: float | None, *, retry: bool = True) -> _Record:
        """Open a connection in a slot this caller holds; give the slot back on failure.

        Retries back off exponentially with jitter until ``deadline``; without a deadline
        (``pool_timeout=0``) or with ``retry=False`` the first failure is raised.
        """
        delay = _BACKOFF_FIRST
        # Taken before connecting: a connection whose connect spans a dispose() belongs to
        # the disposed generation and is closed when returned, like any checked-out one.
        generation = self._generation
        while True:
            try:
                conn = self._creator()
                break
            except BaseException as exc:
                self._last_connect_error = str(exc) or type(exc).__name__
                if isinstance(exc, TooManyConnectionsError):
                    self._server_refused(exc)
                remaining = math.inf if deadline is None else deadline - _monotonic()
                pause = delay * random.uniform(0.5, 1.0)
                if not (retry and isinstance(exc, Exception) and deadline is not None
                        and remaining > pause):  # fmt: skip
                    with self._lock:
                        self._connecting -= 1
                        self._release_slot_locked()
                    raise
                logger.debug("connecting failed, retrying in %.2f s", pause)
                time.sleep(pause)
                delay = min(delay * 2, _BACKOFF_CAP)
        now = _monotonic()
        lifetime = self._max_lifetime
        # A little negative jitter so connections opened together do not expire together.
        expires_at = now + lifetime * (1 - 0.1 * random.random()) if lifetime else _INF
        with self._lock:
            record = _Record(conn, now, expires_at, generation, self._epoch)
            self._connection_type = type(conn)
            record.owner = self
            self._records.add(record)
            self._connecting -= 1
            self._opened_total += 1
            self._last_connect_error = None
            refused_since, self._refused_since = self._refused_since, None
        if refused_since is not None:
            logger.info("the server at %s accepts connections again after refusing them "
                        "for %.1f s", self._where, now - refused_since)  # fmt: skip
        logger.debug("opened a connection (%s)", self.name or "pool")
        if self.events.connect:
            self.events.fire("connect", conn)
        return record

    def _server_refused(self, error: TooManyConnectionsError) -> None:
        """Count a refusal by a full server; warn once per run of them (a spike refuses
        hundreds of attempts a second across threads: the log gets one line, then one a
        minute with the count while the server stays full)."""
        now = _monotonic()
        with self._lock:
            self._too_many_connections_total += 1
            self._refused_unreported += 1
            if self._refused_since is None:
                self._refused_since = now
            elif now - self._refused_warned_at < _FULL_WARNING_EVERY:
                return
            self._refused_warned_at = now
            count, self._refused_unreported = self._refused_unreported, 0
        if count == 1:
            logger.warning("%s", error)
        else:
            logger.warning("%s (refused %d times since the last warning)", error, count)

    # -- giving connections back ---------------------------------------------------------

    def checkin(self, record: _Record) -> None:
        """Return a record: reset it, then hand it to the head waiter or park it idle."""
        if record.epoch != self._epoch:  # checked out before a fork: not ours to touch
            _inherited_after_fork.append(record)
            return
        if record.closed:
            return
        if record.owner is not self:
            raise self._misplaced(record)
        conn = record.dbapi_connection
        if self._reset is not None:
            try:
                self._reset(conn)
            except BaseException as exc:  # its state is unknown: never reuse it
                logger.warning("resetting a returned connection failed; it is discarded",
                               exc_info=True)  # fmt: skip
                self._discard(record)
                if not isinstance(exc, Exception):
                    raise
                return
        if self.events.checkin:
            self.events.fire("checkin", conn)
        now = _monotonic()
        if now >= record.expires_at:
            self._discard(record)
            return
        record.last_used = now
        fresh_until = now + self._fresh_for
        record.fresh_until = fresh_until if fresh_until < record.expires_at else record.expires_at
        # The janitor must look at it by its idle deadline or its end of life, if sooner.
        due = now + self._max_idle if self._max_idle else _INF
        if record.expires_at < due:
            due = record.expires_at
        lock = self._lock
        lock.acquire()
        try:
            # Checked out before a dispose() (or one that raced this return): close it.
            retired = record.generation < self._retire_below
            if retired:
                pass  # closed below, outside the lock
            elif self._waiters:
                self._waiters.popleft().notify(record)
            else:
                record.owner = None
                self._idle.append(record)
                janitor = self._janitor
                if janitor is not None and due < janitor.due:
                    janitor.wake_locked()
        finally:
            lock.release()
        if retired:
            self._discard(record)

    def invalidate(self, record: _Record, error: BaseException | None = None,
                   *, disconnect: bool = False) -> None:  # fmt: skip
        """Close a connection that must not be reused and free its slot.

        After a disconnect, every connection opened before now is suspect and is
        validated (or replaced) before its next use.
        """
        if record.epoch != self._epoch:
            _inherited_after_fork.append(record)
            return
        if record.owner is not self:
            raise self._misplaced(record)
        logger.warning("invalidating a connection%s", f" ({error})" if error else "")
        if self.events.invalidate:
            self.events.fire("invalidate", record.dbapi_connection, error)
        if disconnect:
            with self._lock:
                self._generation += 1
                self._suspect_below = self._generation
        self._discard(record)

    def _misplaced(self, record: _Record) -> DBPoolError:
        if record.owner is None:
            return ResourceClosedError("This connection has already been returned to the pool")
        return ArgumentError(
            "This connection was checked out from another pool; return it to that pool"
        )

    def _discard(self, record: _Record) -> None:
        """Close ``record`` and then free its slot (closing first keeps the limit exact)."""
        if self._close_record(record):
            with self._lock:
                self._release_slot_locked()

    def _close_record(self, record: _Record) -> bool:
        """Close the connection; False if someone else already did."""
        with self._lock:
            if record.closed:
                return False
            record.closed = True
            self._records.discard(record)
        try:
            self._close(record.dbapi_connection)
        except Exception:  # a close that raises (driver or custom hook) must not cost a slot
            logger.debug("closing a connection failed; it is discarded anyway", exc_info=True)
        with self._lock:
            self._closed_total += 1
        logger.debug("closed a connection (%s)", self.name or "pool")
        if self.events.close:
            self.events.fire("close", record.dbapi_connection)
        return True

    def _release_slot_locked(self) -> None:
        # A freed slot goes to the head waiter, who opens a connection in it.
        if self._waiters:
            self._connecting += 1
            self._waiters.popleft().notify(_SLOT)
        else:
            self._slots -= 1

    # -- janitor, leaks, orphans ---------------------------------------------------------

    def _start_locked(self) -> bool:
        """Start the janitor if the pool is not running; True if it was started now (the
        caller logs that after releasing the lock: log handlers do I/O)."""
        if self._started:
            return False
        self._started = True
        if self._max_idle or self._max_lifetime or self._leak_threshold:
            self._janitor = Janitor(self, self._lock)
            self._janitor.start()
        return True

    def _log_start(self) -> None:
        name = f"{self.name} " if self.name else ""
        logger.info("Starting a %spool with %d connections", name, self._limit)

    def sweep_locked(self, now: float) -> tuple[list[_Record], float]:
        """Take idle connections past their lifetime out of the pool; also say when to look
        again. Called by the janitor with the lock held; it closes what this returns."""
        expired: list[_Record] = []
        keep: deque[_Record] = deque()
        due = _INF
        for record in self._idle:
            deadline = record.expires_at
            if self._max_idle:
                deadline = min(deadline, record.last_used + self._max_idle)
            if deadline <= now:
                expired.append(record)
            else:
                keep.append(record)
                due = min(due, deadline)
        if expired:
            self._idle = keep
        if self._leak_threshold:
            due = min(due, self._report_leaks_locked(now))
        return expired, due

    def _track_checkout(self, record: _Record) -> None:
        record.checked_out_at = _monotonic()
        record.leak_reported = False
        record.stack = "".join(traceback.format_stack(limit=16)[:-2])
        with self._lock:
            janitor = self._janitor
            if janitor is not None and record.checked_out_at + self._leak_threshold < janitor.due:
                janitor.wake_locked()

    def _report_leaks_locked(self, now: float) -> float:
        due = _INF
        idle = set(self._idle)
        for record in self._records:
            if record in idle or record.leak_reported or record.stack is None:
                continue
            held_until = record.checked_out_at + self._leak_threshold
            if held_until <= now:
                record.leak_reported = True
                logger.warning(
                    "a connection has been checked out for more than %g s "
                    "(leak_detection_threshold); it was checked out at:\n%s",
                    self._leak_threshold,
                    record.stack,
                )
            else:
                due = min(due, held_until)
        return due

    def orphaned(self, record: _Record, code: CodeType | None, line: int) -> None:
        """A checked-out connection was garbage-collected: reclaim its slot.

        This runs inside ``__del__``, possibly while this very thread holds the pool lock
        (the garbage collector can run anywhere), so it never blocks on the lock.
        """
        where = f" (checked out at {code.co_filename}:{line})" if code else ""
        warnings.warn(
            f"A dbpool connection was garbage-collected without being closed{where}; "
            "its slot has been reclaimed. Use 'with engine.connect() as conn:'.",
            ResourceWarning,
            stacklevel=2,
        )
        if record.epoch != self._epoch:
            _inherited_after_fork.append(record)
            return
        if sys.is_finalizing():
            # The process is ending and its sockets close with it. The lock may be held
            # forever by a daemon thread (the janitor) that the shutdown froze: never wait.
            return
        self._orphans.append(record)
        # A free lock means this thread is not inside the pool's critical section: reclaim
        # now, so a waiter gets the slot at once. Otherwise the janitor or the next
        # slow-path checkout does it.
        if self._lock.acquire(False):
            janitor = self._janitor
            if janitor is not None:
                janitor.wake_locked()
            self._lock.release()
            self._reclaim_orphans()
        else:
            # Collected inside a critical section: a helper reclaims once the lock is free,
            # so a waiter never waits for a slot that nobody would free. A bare thread:
            # threading.Thread.start() waits for the thread and takes threading's own lock,
            # either of which could deadlock here.
            _thread.start_new_thread(self._reclaim_orphans, ())

    def _reclaim_orphans(self) -> None:
        while self._orphans:
            try:
                record = self._orphans.popleft()
            except IndexError:
                return
            self._discard(record)

    def inherited(self, record: _Record) -> bool:
        """Whether ``record`` was checked out in the parent before this process forked."""
        return record.epoch != self._epoch

    def _after_fork_in_child(self) -> None:
        # The parent's lock may be held by a thread that does not exist in the child, and
        # the parent's sockets must not be touched: start from nothing.
        _inherited_after_fork.extend(self._records)
        self._lock = threading.Lock()
        self._idle = deque()
        self._waiters = deque()
        self._records = set()
        self._orphans = deque()
        self._slots = self._connecting = 0
        self._started = False
        self._janitor = None
        self._epoch += 1


def _reinit_pools_after_fork() -> None:
    for pool in list(_live_pools):
        pool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_pools_after_fork)
