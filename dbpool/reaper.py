"""``reap_idle_after``: clean up this application's zombie connections on the server.

A zombie is a server connection whose client is gone without a word: a paused or frozen
function container, a process killed behind NAT. The server keeps it, idle, until its
own timeouts (often none) end it, and it counts against the connection limit. With
``reap_idle_after`` > 0 the engine's creator is wrapped in a ``Reaper``, which ends
those of them that have been idle on the server for longer than that (the dialect's
``reap_idle``: same user, same application name, same database; never an active one,
never one in a transaction):

* when the server refuses a connection because it is full (``TooManyConnectionsError``),
  before the pool's usual backoff retry, at most once per ``interval`` per pool;
* once, on the pool's first connection: an instance that gets in cleans up for the
  others, before the server is full (a full server refuses the clean-up connection too).

The hard part is the connection to run the clean-up on, when the server refuses new
ones. In order: (a) an idle connection this pool already holds, borrowed for the moment
(``QueuePool.borrow_idle``, given back with ``checkin``); (b) a fresh connection, which
gets in when the server keeps a slot for privileged users (PostgreSQL's
``superuser_reserved_connections``, MySQL's extra connection for ``SUPER`` /
``CONNECTION ADMIN``) or a slot freed meanwhile; (c) neither: the pool's backoff retry
goes on and a later refusal tries again.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbpool.exc import TooManyConnectionsError

if TYPE_CHECKING:
    from dbpool.dialects.base import Dialect
    from dbpool.pool import QueuePool

logger = logging.getLogger("dbpool")

# At most one clean-up run per pool this often: a refused spike calls the creator
# hundreds of times a second, and one run ends every zombie there is.
REAP_INTERVAL = 1.0


class Reaper:
    """The creator of a pool with ``reap_idle_after`` > 0: ``creator``, plus clean-up."""

    def __init__(
        self,
        creator: Callable[[], Any],
        dialect: Dialect,
        older_than: float,
        *,
        interval: float = REAP_INTERVAL,
    ) -> None:
        self._creator = creator
        self._dialect = dialect
        self.older_than = older_than
        self._interval = interval
        self._pool: weakref.ref[QueuePool] | None = None  # the pool owns us, not we it
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last_run = -math.inf
        self._running = False
        self._first_done = False
        self.runs = 0  # clean-up runs that found a connection to work on
        self.reaped_total = 0

    @classmethod
    def for_engine(cls, creator: Callable[[], Any], dialect: Dialect) -> Reaper | None:
        """The reaper for an engine whose ``reap_idle_after`` is set, or None (with a
        one-time WARNING) where reaping cannot work."""
        config = dialect.config
        if not dialect.supports_reaping:
            logger.warning("reap_idle_after has no effect on %s: dbpool cannot list and end "
                           "its server connections", dialect.name)  # fmt: skip
            return None
        if config.pgbouncer:
            logger.warning(
                "reap_idle_after has no effect with pgbouncer=true: the server connections "
                "are PgBouncer's, not this application's; set PgBouncer's client_idle_timeout "
                "for clients that vanish instead"
            )
            return None
        return cls(creator, dialect, config.reap_idle_after)

    def attach(self, pool: QueuePool) -> None:
        """The pool whose idle connections path (a) may borrow."""
        self._pool = weakref.ref(pool)

    def __call__(self) -> Any:
        try:
            conn = self._creator()
        except TooManyConnectionsError:
            self.reap_after_refusal()
            raise  # the pool counts it and retries with backoff within pool_timeout
        if not self._first_done and self._claim(first=True):
            try:
                self._reap_on(conn, "on the pool's first connection")
            except Exception as exc:  # logged; the connection is still good unless it broke
                if self._dialect.is_disconnect(exc):
                    self._close_quietly(conn)
                    raise self._dialect.connect_error(exc) from exc
            except BaseException:
                self._close_quietly(conn)
                raise
            finally:
                self._release()
        return conn

    def reap_after_refusal(self) -> None:
        """The server refused a connection: end our zombies through (a) a connection the
        pool holds idle, else (b) a fresh one; (c) neither, leave it to the next refusal."""
        if not self._claim(first=False):
            return
        try:
            record = None
            ref = self._pool
            pool = ref() if ref is not None else None
            if pool is not None:
                record = pool.borrow_idle()
            if pool is not None and record is not None:
                self._reap_borrowed(pool, record)
                return
            try:
                conn = self._creator()
            except Exception as exc:  # (c): full for us too; the backoff retry goes on
                logger.debug("no connection to reap idle connections on %s: %s",
                             self._dialect.describe(), exc)  # fmt: skip
                return
            try:
                self._reap_on(conn, "after the server refused a connection")
            except Exception:
                pass  # logged; the caller's refusal is what the pool must see
            finally:
                self._close_quietly(conn)
        finally:
            self._release()

    # -- internals ---------------------------------------------------------------------

    def _claim(self, *, first: bool) -> bool:
        """Whether this thread may run the clean-up now (one at a time, rate-limited)."""
        now = time.monotonic()
        with self._locked():
            if self._running:
                return False
            if first:
                if self._first_done:
                    return False
                self._first_done = True
            elif now - self._last_run < self._interval:
                return False
            self._running = True
            self._last_run = now
            return True

    def _release(self) -> None:
        with self._locked():
            self._running = False

    def _locked(self) -> threading.Lock:
        if os.getpid() != self._pid:  # a forked child: the parent's lock may be held
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._running = False
        return self._lock

    def _reap_borrowed(self, pool: QueuePool, record: Any) -> None:
        try:
            self._reap_on(record.dbapi_connection, "after the server refused a connection")
        except Exception as exc:
            if self._dialect.is_disconnect(exc):
                pool.invalidate(record, exc, disconnect=True)
                return
            pool.checkin(record)  # reset on return rolls back whatever the error left
            return
        except BaseException:
            pool.invalidate(record)  # interrupted mid-query: its state is unknown
            raise
        pool.checkin(record)

    def _reap_on(self, conn: Any, when: str) -> int:
        dialect = self._dialect
        try:
            reaped = dialect.reap_idle(conn, older_than=self.older_than)
        except Exception as exc:
            logger.warning("reaping idle connections on %s %s failed: %s",
                           dialect.describe(), when, exc)  # fmt: skip
            raise
        with self._locked():
            self.runs += 1
            self.reaped_total += reaped
        if reaped:
            logger.warning(
                "reaped %d idle connection%s of this application on %s (idle on the server "
                "for more than reap_idle_after=%g s) %s",
                reaped, "" if reaped == 1 else "s", dialect.describe(), self.older_than, when,
            )  # fmt: skip
        else:
            logger.debug("no idle connections to reap on %s %s", dialect.describe(), when)
        return reaped

    def _close_quietly(self, conn: Any) -> None:
        try:
            self._dialect.close(conn)
        except Exception:
            logger.debug("closing a connection used for reaping failed", exc_info=True)
