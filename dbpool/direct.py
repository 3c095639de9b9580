"""``engine.direct()``: one connection past the external pooler, for what it breaks.

An engine whose URL goes through PgBouncer in transaction mode (``pgbouncer=true``) gets a
different server connection for each transaction, so nothing that lives in a session
works through it: migrations and DDL that ``SET`` things, ``LISTEN``/``NOTIFY``, session
advisory locks, session settings, server-side prepared statements. ``direct_url`` (Prisma's
``directUrl``) is the same database reached without the pooler, and ``engine.direct()``
opens one connection on it when the block starts and really closes it when the block ends.

The rules:

* The direct URL must name the same kind of database as the engine's URL (the same
  dialect); ``pgbouncer=true`` on it is refused, as it is the URL *without* the pooler.
* Its connection has the engine's session settings (``connect_timeout``,
  ``socket_timeout``, ``validation_timeout``, ``isolation_level``, ``schema``) unless the
  direct URL's query gives its own; keyword arguments to ``create_engine`` win over both,
  as they do over the engine's URL. ``pgbouncer`` is off. Driver parameters (``sslmode``,
  ``application_name``, ...) come from the direct URL alone; ``connect_args`` apply to both.
* ``DIRECT_URL`` is read only when ``create_engine()`` reads ``DATABASE_URL`` (no URL
  argument): the two come as a pair from one environment, as Prisma's schema pairs
  ``env("DATABASE_URL")`` with ``env("DIRECT_URL")``. An explicit URL takes its direct URL
  from the ``direct_url`` keyword only, so a stray ``DIRECT_URL`` never attaches itself to
  an engine made for another database (the Flask and Django integrations pass their URL
  explicitly: they take ``direct_url`` from their settings).
* Without a direct URL, ``direct()`` on a ``pgbouncer=true`` engine raises ``ConfigError``
  (a session through PgBouncer is what it exists to avoid); on any other engine it opens
  an unpooled connection on the engine's own URL, which is already direct.
* Nothing here touches the pool: no slot taken, no janitor, no pool events (a
  ``connect`` listener that sets up pooled sessions does not run), not in
  ``engine.status()``, and not in ``engine.metrics`` either, whose figures describe the
  pool and the statements it serves; a direct block's long, deliberate waits (an
  ``ALTER TABLE``, a ``pg_advisory_lock``, a listener) would skew the query-duration
  histogram that pool sizing reads.
* A direct connection that is invalidated (a disconnect) is not replaced: its session
  state (``LISTEN``, locks, settings) is gone, so using it raises; open a new block.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbpool import dialects
from dbpool.config import EngineConfig, resolve_settings
from dbpool.dialects.base import Dialect
from dbpool.engine import Connection
from dbpool.exc import ConfigError, ResourceClosedError
from dbpool.histogram import QUERY_BUCKETS, Histogram
from dbpool.pool import _Record
from dbpool.proxy import INHERITED_AFTER_FORK
from dbpool.url import URL, make_url

if TYPE_CHECKING:
    from dbpool.engine import Engine

logger = logging.getLogger("dbpool")

# Settings of a session, which the direct connection shares with the engine's pool; the
# rest (pool size, timeouts of the queue, lifetimes, pre-ping, ...) mean nothing for it.
SESSION_SETTINGS = (
    "connect_timeout",
    "validation_timeout",
    "socket_timeout",
    "isolation_level",
    "schema",
)

NO_DIRECT_URL = (
    "engine.direct() needs a direct URL on a pgbouncer=true engine: its URL goes through "
    "PgBouncer, whose transaction mode breaks what direct() is for (migrations, "
    "LISTEN/NOTIFY, advisory locks, session settings, prepared statements). Pass "
    "direct_url= to create_engine() (the same database without PgBouncer), or set "
    "DIRECT_URL when create_engine() reads DATABASE_URL."
)
LOST = (
    "This direct connection was invalidated (the connection to the server was lost) and "
    "its session state (LISTEN, locks, settings) with it; open a new engine.direct() block"
)

# Direct connections open in the parent when this process forked: kept from the garbage
# collector, whose close would end the parent's session on the shared socket.
_left_to_parent: list[Any] = []


@dataclass(frozen=True)
class DirectTarget:
    """Where ``engine.direct()`` connects: the direct URL (``None``: the engine's own URL,
    unpooled), a dialect configured for it, and how to open one connection."""

    url: URL | None
    dialect: Dialect
    connect: Callable[[], Any]

    def release_resources(self, engine_dialect: Dialect) -> None:
        if self.dialect is not engine_dialect:
            self.dialect.release_resources()


def resolve(
    direct_url: str | URL | None,
    origin: str,
    *,
    url: URL,
    dialect: Dialect,
    settings: Mapping[str, Any],
    connect_args: Mapping[str, Any] | None,
    creator: Callable[[], Any] | None,
) -> DirectTarget | None:
    """The engine's direct target; ``None`` when ``direct()`` must refuse (a pgbouncer=true
    engine without a direct URL). ``origin`` names where ``direct_url`` came from, for
    messages ("" or " (from DIRECT_URL)"). Raises ``ConfigError`` naming direct_url."""
    if direct_url is None or direct_url == "":
        if dialect.config.pgbouncer:
            return None
        return DirectTarget(None, dialect, creator or dialect.connect)
    name = f"direct_url{origin}"
    try:
        parsed = make_url(direct_url)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    try:
        dialect_cls = dialects.load(parsed.drivername)
    except ConfigError as exc:
        raise ConfigError(f"{name} ({parsed}): {exc}") from None
    if dialect_cls is not type(dialect):
        raise ConfigError(
            f"{name} must be a {dialect.name} URL like the engine's ({url.drivername}://...), "
            f"got {parsed}: the direct URL is the same database reached without the pooler"
        )
    if parsed.query.get("pgbouncer", "").strip().lower() in ("true", "1"):
        raise ConfigError(
            f"{name} has pgbouncer=true, got {parsed}: the direct URL is the database "
            "reached without PgBouncer (keep pgbouncer=true on the engine's URL only)"
        )
    try:
        config, driver_params = _direct_config(parsed, dialect.config, settings)
        direct_dialect = dialect_cls(parsed, config, driver_params, connect_args)
    except ConfigError as exc:
        raise ConfigError(f"{name} ({parsed}): {exc}") from None
    return DirectTarget(parsed, direct_dialect, direct_dialect.connect)


def _direct_config(
    parsed: URL, engine_config: EngineConfig, settings: Mapping[str, Any]
) -> tuple[EngineConfig, dict[str, str]]:
    """The engine's session settings where the direct URL gives none; keywords win."""
    inherited: dict[str, Any] = {
        name: getattr(engine_config, name)
        for name in SESSION_SETTINGS
        if name in settings or name not in parsed.query
    }
    overrides = {**inherited, "pgbouncer": False}
    return resolve_settings(parsed.query, overrides, default_limit=engine_config.connection_limit)


@contextmanager
def direct_connection(engine: Engine) -> Iterator[Connection]:
    """``engine.direct()``: open one connection now, close it (really) when the block ends."""
    target = engine._direct
    if target is None:
        if engine.config.pgbouncer:
            raise ConfigError(NO_DIRECT_URL)
        raise ConfigError("engine.direct() needs an engine made by create_engine()")
    conn = DirectConnection(engine, target, target.connect())
    try:
        yield conn
    finally:
        conn.close()


class _NotCounted(Histogram):
    """Where a direct connection's statement durations go: nowhere (see the module doc)."""

    __slots__ = ()

    def observe(self, value: float) -> None:
        pass

    def fold(self) -> None:
        self.pending.clear()  # what the engine appended: dropped uncounted


_NOT_COUNTED = _NotCounted(QUERY_BUCKETS)


class DirectConnection(Connection):
    """A ``Connection`` that owns its driver connection instead of borrowing it from
    the pool: closing it rolls back and closes the driver connection."""

    __slots__ = ("_pid", "_target")

    def __init__(self, engine: Engine, target: DirectTarget, dbapi_connection: Any) -> None:
        # The pool's epoch, so the engine's inlined fork test passes in this process and
        # sends a forked child to _live_record() below.
        record = _Record(dbapi_connection, time.monotonic(), math.inf, 0, engine.pool._epoch)
        super().__init__(engine, record)
        self._dialect = target.dialect
        self._queries = _NOT_COUNTED
        self._timings = _NOT_COUNTED.pending
        self._target = target
        self._pid = os.getpid()

    @property
    def url(self) -> URL:
        """Where this connection goes: the direct URL, or the engine's own."""
        return self._target.url or self._engine.url

    def _live_record(self) -> _Record:
        record = self._record
        if record is not None:
            if self._pid != os.getpid():
                raise ResourceClosedError(INHERITED_AFTER_FORK)
            return record
        raise ResourceClosedError("This Connection is closed" if self._closed else LOST)

    def close(self) -> None:
        """Roll back what is uncommitted and close the driver connection."""
        if self._closed:
            return
        self._closed = True
        record, self._record = self._record, None
        if record is None:
            return
        conn = record.dbapi_connection
        if self._pid != os.getpid():  # the parent's session: send nothing on its socket
            _left_to_parent.append(conn)
            return
        try:
            if self._in_transaction:
                self._in_transaction = False
                conn.rollback()
        except Exception:
            logger.warning("rollback on closing a direct connection failed", exc_info=True)
        finally:
            self._restore_autocommit = False
            self._close_driver_connection(conn)

    def _invalidate(self, error: BaseException | None, *, disconnect: bool) -> None:
        record, self._record = self._record, None
        if record is None:
            return
        self._invalid = True
        self._close_driver_connection(record.dbapi_connection)

    def _close_driver_connection(self, conn: Any) -> None:
        try:
            self._dialect.close(conn)
        except Exception:  # gone already: nothing is left open either way
            logger.debug("closing a direct connection failed", exc_info=True)

    def __del__(self) -> None:
        record = self._record
        if record is not None and not self._closed and self._pid == os.getpid():
            self._record = None
            with suppress(Exception):  # at interpreter shutdown modules may be torn down
                self._dialect.close(record.dbapi_connection)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Connection {state} (direct) to {self.url}>"
