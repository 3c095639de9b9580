"""The process-wide pools behind the Django backends.

One ``Engine`` per distinct connection: the same driver connect parameters,
the same per-connection setup (time zone, role, isolation level, init commands) and the
same pool settings. Every thread and every alias with those settings checks out of that
one pool; different settings get a pool of their own. Keys hold the password in memory
only; nothing here ever shows a key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbpool.engine import Engine

# More pools than this on one server's database, and the oldest idle ones are disposed
# of. (dbpool warns when more than ten engines for one database are alive.)
MAX_POOLS_PER_DATABASE = 8

_engines: dict[Hashable, Engine] = {}
# key -> (vendor, database name): which pools to dispose before a database is dropped.
_databases: dict[Hashable, tuple[str, str]] = {}
# key -> (vendor, host, port, database name): the pools that count against one another.
_servers: dict[Hashable, tuple[str, ...]] = {}
_lock = threading.Lock()
# Bumped whenever pools are disposed of: a wrapper's cached engine is valid only within
# the generation it was looked up in.
_generation = 0


def freeze(value: Any) -> Hashable:
    """A hashable stand-in for a settings value, equal for equal settings.

    Objects that are neither hashable nor containers (rare in settings) stand for
    themselves by identity: settings objects live as long as the process.
    """
    if isinstance(value, Mapping):
        return ("{}", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("[]", tuple(freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(freeze(v)) for v in value)))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value  # type: ignore[no-any-return]


def engine_for(
    key: Hashable, database: tuple[str, str], server: tuple[str, ...], make: Callable[[], Engine]
) -> Engine:
    """The engine for ``key``, made by ``make()`` on first use (lazily: it opens nothing).

    ``database`` is (vendor, name), ``server`` adds host and port: two replicas with the
    same database name are one ``database`` (dropping it disposes both) but two servers.
    """
    engine = _engines.get(key)
    if engine is not None:
        return engine
    global _generation
    with _lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        engine = _engines[key] = make()
        _databases[key] = database
        _servers[key] = server
        evicted = _evict_locked(server, keep=key)
        if evicted:
            _generation += 1
    for old in evicted:
        old.dispose()
    return engine


def _evict_locked(server: tuple[str, ...], keep: Hashable) -> list[Engine]:
    """Take the oldest idle pools on ``server`` out, beyond ``MAX_POOLS_PER_DATABASE``.

    Settings changed at run time (tests do it all the time: a time zone, an isolation
    level, health checks) make a new key each, and the old pools would otherwise keep
    their idle connections for ``max_idle_connection_lifetime``. An evicted pool that
    is still wanted is simply made again at its next checkout.
    """
    keys = [k for k, s in _servers.items() if s == server and k != keep]
    excess = len(keys) + 1 - MAX_POOLS_PER_DATABASE
    evicted: list[Engine] = []
    for key in keys:  # oldest first: dicts keep insertion order
        if len(evicted) >= excess:
            break
        status = _engines[key].status()
        if status.busy == 0 and status.waiting == 0:
            evicted.append(_forget_locked(key))
    return evicted


def _forget_locked(key: Hashable) -> Engine:
    del _databases[key], _servers[key]
    return _engines.pop(key)


def generation() -> int:
    return _generation


def engines() -> list[Engine]:
    """Every engine the Django backends have made in this process (and not disposed)."""
    with _lock:
        return list(_engines.values())


def dispose_database(vendor: str, name: str, timeout: float | None = None) -> int:
    """Dispose of every pool on database ``name`` and forget it; returns how many.

    Idle connections close at once, checked-out ones when they come back (or after
    ``timeout`` seconds, wherever they are). The next checkout makes a fresh pool.
    """
    global _generation
    with _lock:
        _generation += 1
        keys = [key for key, database in _databases.items() if database == (vendor, name)]
        doomed = [_forget_locked(key) for key in keys]
    for engine in doomed:
        engine.dispose(timeout)
    return len(doomed)


def dispose_all(timeout: float | None = None) -> None:
    """Dispose of every pool (tests, or a process about to fork workers)."""
    global _generation
    with _lock:
        _generation += 1
        doomed = list(_engines.values())
        _engines.clear()
        _databases.clear()
        _servers.clear()
    for engine in doomed:
        engine.dispose(timeout)
