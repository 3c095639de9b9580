"""Deadlines for calls that a driver cannot bound itself: one shared watchdog thread.

psycopg has no client-side timeout for a statement or a ping: a call to a server that
stopped answering (a frozen host, a network partition that keeps both sockets open) waits
for as long as the silence lasts. A ``SocketDeadline`` belongs to one driver
connection; ``arm(seconds)`` before a call and ``disarm()`` after it. If the call is still
running at the deadline, the watchdog shuts the connection's socket down, which makes the
blocked call fail at once, and ``disarm()`` then answers True: the caller knows that the
error (or a reply that came in just as the deadline passed) means "timed out", and that
the connection is spent.

The hot path is ``arm`` and ``disarm``: arming writes the deadline and, only when no
earlier wake-up is already scheduled for this connection, pushes one onto the watchdog's
heap; a connection re-armed for each statement keeps one entry, which the watchdog moves
to the current deadline when it comes due. Disarming takes the connection's own lock,
uncontended but for the rare moment the watchdog fires.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time

logger = logging.getLogger("dbpool")

_monotonic = time.monotonic
_INF = math.inf


def _inode(fd: int) -> int:
    """What the descriptor refers to now (-1 if closed): a socket's inode is its own."""
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return -1


def shutdown_socket(fd: int) -> None:
    """Shut a socket down by descriptor, both ways, without closing the descriptor.

    A thread blocked reading it wakes with end-of-file; one writing gets an error. The
    descriptor stays open for its owner (the driver) to close, so it cannot be reused
    under that owner's feet.
    """
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # already closed: nothing to wake
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (any more): nothing to wake either
    finally:
        sock.close()  # closes the duplicate only


class SocketDeadline:
    """The deadline of the call running on one connection, enforced on its socket."""

    __slots__ = ("_fd", "_inode", "_lock", "_scheduled_at", "deadline", "fired")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # Checked before shutting: if the connection was closed under a call (dispose with
        # a timeout), its descriptor number may already belong to another socket.
        self._inode = _inode(fd)
        self._lock = threading.Lock()
        self.deadline = _INF
        # The earliest wake-up pending on the watchdog's heap for this connection.
        self._scheduled_at = _INF
        self.fired = False  # the socket was shut down: the connection is spent

    def arm(self, seconds: float) -> None:
        deadline = _monotonic() + seconds
        self.deadline = deadline
        # Written before this read; the watchdog clears _scheduled_at before reading the
        # deadline. So either this call schedules, or the watchdog sees the new deadline.
        if deadline < self._scheduled_at:
            _watchdog.schedule(self, deadline)

    def disarm(self) -> bool:
        """End the call's deadline; True if it had already passed and the socket is shut."""
        lock = self._lock
        lock.acquire()
        self.deadline = _INF
        fired = self.fired
        lock.release()
        return fired

    def expire(self, now: float) -> None:
        """Shut the socket if the call is still running past its deadline (watchdog)."""
        with self._lock:
            if self.deadline > now or self.fired:
                return
            self.fired = True
            self.deadline = _INF
            if _inode(self._fd) == self._inode:
                shutdown_socket(self._fd)


class _Watchdog:
    """One daemon thread for the whole process, sleeping until the earliest deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, SocketDeadline]] = []
        self._order = itertools.count()  # ties on the heap never compare deadlines
        self._thread: threading.Thread | None = None

    def schedule(self, guard: SocketDeadline, when: float) -> None:
        with self._lock:
            if when >= guard._scheduled_at:
                return
            guard._scheduled_at = when
            heapq.heappush(self._heap, (when, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dbpool-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._wake.notify()

    def _run(self) -> None:
        heap = self._heap
        with self._lock:
            while True:
                now = _monotonic()
                due: list[SocketDeadline] = []
                while heap and heap[0][0] <= now:
                    guard = heapq.heappop(heap)[2]
                    guard._scheduled_at = _INF
                    deadline = guard.deadline
                    if deadline <= now:
                        due.append(guard)
                    elif deadline < _INF:  # re-armed since: look again at its deadline
                        guard._scheduled_at = deadline
                        heapq.heappush(heap, (deadline, next(self._order), guard))
                if due:
                    self._lock.release()
                    try:
                        for guard in due:
                            try:
                                guard.expire(now)
                            except Exception:  # never let the one watchdog die
                                logger.exception("the watchdog could not shut a socket down")
                    finally:
                        self._lock.acquire()
                    continue
                self._wake.wait(heap[0][0] - now if heap else None)

    def _after_fork_in_child(self) -> None:
        # The thread does not exist in the child and the lock may be held by a thread
        # that does not either: start from nothing (the parent's sockets are not ours).
        self.__init__()  # type: ignore[misc]


_watchdog = _Watchdog()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog._after_fork_in_child)
