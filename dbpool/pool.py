"""QueuePool: a strictly fair connection pool with one lock and direct hand-off.

This module is the hot path: checkout, checkin and the waiter hand-off, with the state
they share. The slow paths are rooms of their own, functions that take the pool:
opening connections (`pool_open`), validation and reset (`pool_validation`), closing
and disposal (`pool_close`), garbage-collected checkouts (`pool_orphans`), the
janitor's sweep and leak tracking (`pool_sweep`), fork handling (`pool_fork`). The
public entry points to them (open, dispose, invalidate, status ...), the settings and the
counters are in `pool_admin`: a mixin QueuePool inherits, so it is still one object.

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
* The fast checkout is one lock round and one clock comparison; the fast return is a
  reset, one clock reading and one lock round. ``connect()`` reuses the proxy a
  connection was last returned through when nobody holds that proxy any more.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dbpool import pool_close, pool_fork, pool_open, pool_orphans, pool_sweep
from dbpool.config import DEFAULTS
from dbpool.events import Events
from dbpool.histogram import WAIT_BUCKETS, Histogram
from dbpool.janitor import Janitor
from dbpool.pool_admin import PoolAdmin
from dbpool.pool_validation import close_connection, generic_reset, validate
from dbpool.proxy import UNSHARED, PooledConnection, getrefcount
from dbpool.status import PoolStatus

__all__ = ["DEFAULTS", "PoolStatus", "QueuePool"]

_monotonic = time.monotonic
_getframe = sys._getframe

# What a waiter can be handed besides a connection: a free slot to open one in, or an error.
_SLOT = object()
_FAILED = object()


class _Record:
    """One physical connection and its clocks."""

    __slots__ = ("checked_out_at", "closed", "created_at", "cursor", "dbapi_connection",
                 "epoch", "expires_at", "fresh_until", "generation", "last_used",
                 "leak_reported", "owner", "spare", "stack")  # fmt: skip

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
        # The proxy it was last returned through, for connect() to reuse (idle only).
        self.spare: PooledConnection | None = None


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


class QueuePool(PoolAdmin):
    """A thread-safe pool of DB-API connections made by ``creator``, strictly FIFO.

    Usable on its own around any DB-API ``creator``; an engine builds one with its
    dialect's ``ping``, ``reset`` and ``is_disconnect``. Nothing is opened until the first
    checkout (or `open()`); callers that find every connection busy queue in arrival
    order and are served in that order.

    Args:
        creator: makes one new DB-API connection (called outside the pool lock).
        connection_limit: the most connections open at once; by default
            ``num_physical_cpus * 2 + 1``.
        pool_timeout: longest wait in the queue, in seconds (``0``: wait forever); then
            `PoolTimeoutError`.
        max_idle_connection_lifetime: an idle connection older than this (seconds) is
            closed by the janitor; ``0``: never.
        max_connection_lifetime: a connection older than this (seconds) is retired when
            idle or on return, never mid-use; ``0``: never.
        pre_ping: validate with ``ping`` a connection idle longer than this window:
            ``True`` (0.5 s), ``False``, or the window in seconds (``0``: every checkout).
            By default on when ``ping`` is given.
        leak_detection_threshold: log, with the stack where it was checked out, a
            connection held longer than this (seconds); ``0``: off.
        ping: checks that a connection is alive (raises if not).
        reset: cleans a returned connection (by default a rollback unless the driver says
            no transaction is open); ``None``: no reset.
        close: closes a connection (by default its ``close()``).
        abort: shuts a connection's socket, to wake a thread blocked on it when
            ``dispose(timeout)`` closes it under that thread.
        name: a name for log lines (the engine passes its dialect name).
        where: the server for log lines (host and port, never a password).
        events: the listeners to fire (`Events`); a new set by default.

    Attributes:
        name: the name given, for log lines.
        events: the listeners (`Events`), called outside the pool lock.
        wait_histogram: how long checkouts that had to queue waited (a `Histogram` of
            seconds).
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
        reset: Callable[[Any], None] | None = generic_reset,
        close: Callable[[Any], None] = close_connection,
        abort: Callable[[Any], None] | None = None,
        name: str = "",
        where: str = "",
        events: Events | None = None,
    ) -> None:
        # The settings, checked, and the slow paths' counters (pool_admin.py).
        self._configure(creator, connection_limit, pool_timeout, max_idle_connection_lifetime,
                        max_connection_lifetime, pre_ping, leak_detection_threshold, ping,
                        reset, close, abort, name, where, events)  # fmt: skip
        # The state the hot path shares, guarded by the lock.
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
        self.wait_histogram = Histogram(WAIT_BUCKETS)
        pool_fork.track(self)

    # -- checking out ------------------------------------------------------------------

    def connect(self) -> PooledConnection:
        """Check out a connection, waiting in the queue if none is free.

        Returns:
            A `PooledConnection`; its ``close()`` (or the end of a ``with`` block)
            returns the connection.

        Raises:
            PoolTimeoutError: no connection came free within ``pool_timeout``.
            ConnectError: a new connection could not be opened.
            PoolDisposedError: the pool was disposed while this caller waited.
        """
        frame = _getframe(1)  # where: for the warning if it is garbage-collected unreturned
        # checkout(), inlined (keep the two in step): a call costs a twentieth of connect().
        lock = self._lock
        lock.acquire()
        try:
            record = self._idle.pop() if self._idle else None
        finally:
            lock.release()
        if (record is None or self._leak_threshold or self.events.checkout
                or not (_monotonic() < record.fresh_until
                        and record.generation >= self._suspect_below)):  # fmt: skip
            record = self._checkout_more(record)
        else:
            record.owner = self
        proxy = record.spare
        # The proxy it was last returned through, if nobody holds it any more: a held one
        # is a stale handle and must keep failing, so it gets a new one.
        if proxy is not None and getrefcount(proxy) <= UNSHARED:
            record.spare = None  # never held while checked out: dropping it must reclaim
            proxy._pool = self
            proxy._record = record
        else:
            proxy = PooledConnection(self, record)
        proxy._code = frame.f_code
        proxy._lasti = frame.f_lasti  # the line is worked out only if it is ever needed
        return proxy

    def checkout(self) -> _Record:
        """Take a connection record, waiting in the queue if none is free.

        The engine wraps the record in its own proxy; give it back with `checkin`.

        Returns:
            The record of a connection checked out to the caller.

        Raises:
            PoolTimeoutError: no connection came free within ``pool_timeout``.
            ConnectError: a new connection could not be opened.
        """
        # The hot path: explicit acquire/release is about twice as fast as ``with``.
        lock = self._lock
        lock.acquire()
        try:
            record = self._idle.pop() if self._idle else None
        finally:
            lock.release()
        if (record is None or self._leak_threshold or self.events.checkout
                or not (_monotonic() < record.fresh_until
                        and record.generation >= self._suspect_below)):  # fmt: skip
            return self._checkout_more(record)
        record.owner = self
        return record

    def _checkout_more(self, record: _Record | None) -> _Record:
        if record is None:
            record = self._checkout_slow()
        elif not (_monotonic() < record.fresh_until and record.generation >= self._suspect_below):
            record = validate(self, record, None)
        record.owner = self
        if self.events.checkout:
            self.events.fire("checkout", record.dbapi_connection)
        if self._leak_threshold:
            pool_sweep.track_checkout(self, record)
        return record

    def _checkout_slow(self) -> _Record:
        start = _monotonic()
        deadline = start + self._timeout if self._timeout else None
        while True:
            record: _Record | _Waiter | None
            started = False
            with self._lock:
                if not self._orphans:
                    if not self._started:
                        started = pool_open.start_locked(self)
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
            pool_orphans.reclaim(self)
        if started:
            pool_open.log_start(self)
        if record is None:
            return self._open(deadline)
        if isinstance(record, _Waiter):
            return self._wait(record, start, deadline)
        return validate(self, record, deadline)

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
                raise pool_open.timed_out(self, waited)
        self.wait_histogram.observe(waited)
        grant = waiter.grant
        if grant is _FAILED:
            assert waiter.error is not None
            raise waiter.error
        if grant is _SLOT:
            return self._open(deadline)
        assert isinstance(grant, _Record)
        return validate(self, grant, deadline)

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

    def _open(self, deadline: float | None, *, retry: bool = True) -> _Record:
        """Open a connection in a slot this caller holds; the slot is given back if that
        fails (pool_open.py: retries with backoff until ``deadline``)."""
        # Taken before connecting: a connection whose connect spans a dispose() belongs to
        # the disposed generation and is closed when returned, like any checked-out one.
        generation = self._generation
        conn = pool_open.connect(self, deadline, retry)
        now = _monotonic()
        record = _Record(conn, now, pool_open.expires_at(self, now), generation, self._epoch)
        pool_open.opened(self, record, now)
        return record

    # -- giving back ---------------------------------------------------------------------

    def checkin(self, record: _Record) -> None:
        """Return a record: reset it, then hand it to the head waiter or park it idle.

        A connection past its lifetime, or checked out before a `dispose()`, is closed
        instead; one checked out in the parent of this forked process is set aside.

        Args:
            record: a record from `checkout` of this pool.

        Raises:
            ResourceClosedError: it was already returned.
            ArgumentError: it was checked out from another pool.
        """
        if record.epoch != self._epoch:  # checked out before a fork: not ours to touch
            pool_fork.set_aside(record)
            return
        if record.closed:
            return
        if record.owner is not self:
            raise self._misplaced(record)
        conn = record.dbapi_connection
        reset = self._reset
        if reset is not None:
            try:
                reset(conn)
            except BaseException as exc:  # its state is unknown: never reuse it
                pool_close.reset_failed(self, record, exc)
                return
        if self.events.checkin:
            self.events.fire("checkin", conn)
        now = _monotonic()
        expires_at = record.expires_at
        if now >= expires_at:
            pool_close.discard(self, record)
            return
        record.last_used = now
        fresh_until = now + self._fresh_for
        record.fresh_until = fresh_until if fresh_until < expires_at else expires_at
        # The janitor must look at it by its idle deadline or its end of life, if sooner.
        due = now + self._idle_for
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
                if janitor is not None and (due if due < expires_at else expires_at) < janitor.due:
                    janitor.wake_locked()
        finally:
            lock.release()
        if retired:
            pool_close.discard(self, record)

    def _release_slot_locked(self) -> None:
        # A freed slot goes to the head waiter, who opens a connection in it.
        if self._waiters:
            self._connecting += 1
            self._waiters.popleft().notify(_SLOT)
        else:
            self._slots -= 1
