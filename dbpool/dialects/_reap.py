"""The server-side half of ``reap_idle_after``: find and end this application's own idle
connections, for PostgreSQL and MySQL/MariaDB (``Dialect.reap_idle`` calls these).

What counts as "ours": the same login user, the same database and the same application
name (PostgreSQL ``application_name``; MySQL/MariaDB's ``program_name`` connection
attribute, which only ``performance_schema`` shows: where it is off, as on MariaDB by
default, the user alone, with a one-time WARNING). What counts as idle: PostgreSQL
``state = 'idle'`` (never ``idle in transaction``, never active) since longer than the
limit; MySQL ``COMMAND = 'Sleep'`` for longer than the limit, excluding connections with
an open InnoDB transaction when the user may see them (``PROCESS`` privilege).

The choice and the kill are one statement on PostgreSQL; on MySQL a ``KILL`` follows the
``SELECT``, so a connection that woke up in between (a live pool's connection, idle past
the limit, checked out at that very moment) could be ended: keep ``reap_idle_after``
above ``max_idle_connection_lifetime``, and live pools never hold such connections.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbpool.dialects.base import Dialect

logger = logging.getLogger("dbpool")

# How long pg_terminate_backend waits for each backend to be gone (PostgreSQL 14+), so
# that the slot is free when the pool retries.
_TERMINATE_WAIT_MS = 1000

_PG_REAP = """
SELECT pid, {terminate}
FROM pg_stat_activity
WHERE usename = session_user
  AND datname = current_database()
  AND application_name = %(name)s
  AND backend_type = 'client backend'
  AND state = 'idle'
  AND state_change < clock_timestamp() - make_interval(secs => %(older_than)s)
  AND pid <> pg_backend_pid()
"""

_MYSQL_REAP = """
SELECT p.ID FROM information_schema.PROCESSLIST p
WHERE p.USER = SUBSTRING_INDEX(USER(), '@', 1)
  AND p.DB <=> DATABASE()
  AND p.COMMAND = 'Sleep'
  AND {idle_seconds} > %s
  AND p.ID <> CONNECTION_ID()
"""
_MYSQL_BY_NAME = """
  AND p.ID IN (SELECT PROCESSLIST_ID FROM performance_schema.session_account_connect_attrs
               WHERE ATTR_NAME = 'program_name' AND ATTR_VALUE = %s)
"""
_MYSQL_NOT_IN_TRANSACTION = """
  AND p.ID NOT IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX)
"""
_MYSQL_ACCESS_DENIED = frozenset({1142, 1227})  # table access denied, needs PROCESS
_MYSQL_UNKNOWN_THREAD = 1094  # it ended meanwhile

# Dialects already warned about, and what MySQL lets each one see (found on first use).
_warned: weakref.WeakSet[Dialect] = weakref.WeakSet()
_mysql_sees_transactions: weakref.WeakKeyDictionary[Dialect, bool] = weakref.WeakKeyDictionary()


def _warn_once(dialect: Dialect, message: str, *args: Any) -> None:
    if dialect not in _warned:
        _warned.add(dialect)
        logger.warning(message, *args)


def reap_postgresql(dialect: Dialect, conn: Any, older_than: float) -> int:
    name: str | None = getattr(dialect, "application_name", None)
    if not name:  # the name this very connection carries, as the server knows it
        info = getattr(conn, "info", None)
        name = info.parameter_status("application_name") if info is not None else None
    if not name:
        _warn_once(
            dialect,
            "reap_idle_after on %s: this engine's connections carry no application_name, "
            "so its own connections cannot be told from other programs' of the same user: "
            "nothing is reaped. Give it a name (?application_name=... in the URL).",
            dialect.describe(),
        )
        return 0
    version = getattr(getattr(conn, "info", None), "server_version", 0) or 0
    terminate = (
        f"pg_terminate_backend(pid, {_TERMINATE_WAIT_MS})"
        if version >= 140000
        else "pg_terminate_backend(pid)"
    )
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(
                _PG_REAP.format(terminate=terminate), {"name": name, "older_than": older_than}
            )
            rows = cursor.fetchall()
        finally:
            cursor.close()
    finally:
        dialect.reset(conn)
    # False: the backend did not end within the wait (it still will) or was gone already.
    return sum(1 for _, ended in rows if ended)


def reap_mysql(dialect: Dialect, conn: Any, older_than: float) -> int:
    error_class = dialect.dbapi.Error
    try:
        with conn.cursor() as cursor:
            # MariaDB counts idle time in milliseconds too; MySQL in whole seconds only
            # (so there a connection goes after floor(older_than) + 1 s at the earliest).
            mariadb = "mariadb" in str(getattr(conn, "server_version", "")).lower()
            sql = _MYSQL_REAP.format(idle_seconds="p.TIME_MS / 1000" if mariadb else "p.TIME")
            params: list[Any] = [older_than]
            name = _mysql_program_name(dialect, cursor)
            if name is None:
                _warn_once(
                    dialect,
                    "reap_idle_after on %s: the server does not show connection attributes "
                    "(performance_schema is off), so idle connections are matched by database "
                    "user only and another program using the same user could lose idle "
                    "connections too. Give each application its own database user.",
                    dialect.describe(),
                )
            else:
                sql += _MYSQL_BY_NAME
                params.append(name)
            sees = _mysql_sees_transactions.get(dialect, True)
            try:
                cursor.execute(sql + _MYSQL_NOT_IN_TRANSACTION if sees else sql, params)
            except error_class as exc:
                if not (sees and exc.args and exc.args[0] in _MYSQL_ACCESS_DENIED):
                    raise
                # Without PROCESS a user cannot see transactions: a Sleep connection with
                # one open is indistinguishable from an idle one (documented).
                _mysql_sees_transactions[dialect] = False
                cursor.execute(sql, params)
            else:
                _mysql_sees_transactions[dialect] = sees
            ids = [int(row[0]) for row in cursor.fetchall()]
            ended = 0
            for thread_id in ids:
                try:
                    cursor.execute(f"KILL CONNECTION {thread_id}")
                except error_class as exc:
                    if exc.args and exc.args[0] == _MYSQL_UNKNOWN_THREAD:
                        continue
                    raise
                ended += 1
    finally:
        dialect.reset(conn)
    return ended


def _mysql_program_name(dialect: Dialect, cursor: Any) -> str | None:
    """The program name to match on, or None when the server cannot show it."""
    cursor.execute("SELECT @@performance_schema")
    row = cursor.fetchone()
    if not (row and int(row[0])):
        return None
    name: str | None = getattr(dialect, "application_name", None)
    if name:
        return name
    cursor.execute(
        "SELECT ATTR_VALUE FROM performance_schema.session_account_connect_attrs "
        "WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'program_name'"
    )
    row = cursor.fetchone()
    return str(row[0]) if row and row[0] else None
