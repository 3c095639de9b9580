"""Validation: whether a connection may be handed out, and the default reset on return.

A checkout whose connection is past its fresh window (pool.py's one comparison) comes
here: a connection past its idle or total lifetime is replaced in the same slot; one
idle longer than the ``pre_ping`` window, or suspect since a disconnect, is pinged
first and replaced if the ping fails. The ping runs outside the pool lock.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from dbpool import pool_close

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

logger = logging.getLogger("dbpool")

_monotonic = time.monotonic


def generic_reset(conn: Any) -> None:
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


def close_connection(conn: Any) -> None:
    """The default ``close``: the DB-API connection's own ``close()``."""
    conn.close()


def validate(pool: QueuePool, record: _Record, deadline: float | None) -> _Record:
    """Hand out ``record`` if it is still good, else replace it in the same slot."""
    now = _monotonic()
    suspect = record.generation < pool._suspect_below
    if now >= record.expires_at or (pool._max_idle and now - record.last_used >= pool._max_idle):
        pass  # too old: replace
    elif pool._ping is None:
        if not suspect:
            return record
    elif suspect or now - record.last_used >= pool._ping_window:
        try:
            pool._ping(record.dbapi_connection)
        except Exception as exc:
            with pool._lock:
                pool._validation_failures_total += 1
            logger.warning("a connection to %s failed its pre-ping and is replaced: %s",
                           pool._where, str(exc).strip() or type(exc).__name__)  # fmt: skip
        except BaseException:  # interrupted mid-ping: its state is unknown
            pool_close.discard(pool, record)
            raise
        else:
            if record.generation >= pool._retire_below:  # clears suspicion, not a dispose
                record.generation = pool._generation
            return record
    else:
        return record
    if deadline is None and pool._timeout:
        deadline = now + pool._timeout
    if not pool_close.close_record(pool, record):
        # dispose(timeout) force-closed it meanwhile and freed its slot: queue afresh.
        return pool._checkout_slow()
    with pool._lock:
        pool._connecting += 1
    return pool._open(deadline)
