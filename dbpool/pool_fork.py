"""Fork safety: a forked child never touches its parent's connections.

``os.register_at_fork`` resets every live pool in the child: the parent's connections
are set aside unclosed (kept referenced, so the child never closes, and so never
disturbs, sockets the parent is still using), the lock is new (a parent's thread may
have held the old one at the fork) and the pool starts empty with no janitor. Records
carry the pool's epoch; one from before the fork is recognised and never used.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbpool.pool import QueuePool

# Connections inherited from a parent process, kept referenced (never closed) here.
_inherited_after_fork: list[Any] = []
_live_pools: weakref.WeakSet[QueuePool] = weakref.WeakSet()


def track(pool: QueuePool) -> None:
    """Register a new pool, to be reset in a forked child."""
    _live_pools.add(pool)


def set_aside(record: Any) -> None:
    """Keep a connection of the parent process referenced and untouched."""
    _inherited_after_fork.append(record)


def after_fork_in_child(pool: QueuePool) -> None:
    """Forget the parent's connections and start from nothing (runs in the child)."""
    _inherited_after_fork.extend(pool._records)
    pool._lock = threading.Lock()
    pool._idle = deque()
    pool._waiters = deque()
    pool._records = set()
    pool._orphans = deque()
    pool._slots = pool._connecting = 0
    pool._started = False
    pool._janitor = None
    pool._epoch += 1


def _reinit_pools_after_fork() -> None:
    for pool in list(_live_pools):
        after_fork_in_child(pool)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_pools_after_fork)
