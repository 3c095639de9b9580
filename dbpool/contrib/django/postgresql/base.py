"""Django's PostgreSQL backend, its connections checked out of a dbpool pool.

Only psycopg 3 is supported (dbpool's PostgreSQL dialect is built on it). An alias with
Django's own pool (``OPTIONS["pool"]``, Django 5.1+) is left to that pool entirely.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

try:
    import psycopg  # Django's backend would fall back to psycopg2, which dbpool lacks
except ImportError as exc:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        'dbpool.contrib.django.postgresql needs psycopg 3: pip install "dbpool[postgresql]"'
    ) from exc

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper
from django.db.backends.postgresql.creation import (
    DatabaseCreation as PostgreSQLDatabaseCreation,
)
from psycopg import IsolationLevel

from dbpool.config import EngineConfig
from dbpool.contrib.django.creation import PooledDatabaseCreation
from dbpool.contrib.django.wrapper import PooledDatabaseWrapper
from dbpool.dialects._psycopg_bounded import attach_deadline, bounded_call, bounded_classes
from dbpool.dialects.postgresql import search_path_option
from dbpool.url import URL

_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE
_UNSET = object()


@functools.cache
def bounded_cursor(cursor_class: type[Any]) -> type[Any]:
    """Django's cursor class with every statement bounded by ``socket_timeout``."""
    execute, executemany = cursor_class.execute, cursor_class.executemany

    class BoundedCursor(cursor_class):  # type: ignore[misc]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return bounded_call(self._conn, "statement", execute, self, query, params, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            return bounded_call(self._conn, "statement", executemany, self, *args, **kwargs)

    BoundedCursor.__qualname__ = f"Bounded{cursor_class.__qualname__}"
    return BoundedCursor


class DatabaseCreation(PooledDatabaseCreation, PostgreSQLDatabaseCreation):
    pass


class DatabaseWrapper(PooledDatabaseWrapper, PostgreSQLDatabaseWrapper):
    dbpool_dialect = "postgresql"
    creation_class = DatabaseCreation

    def dbpool_pooled(self) -> bool:
        # OPTIONS["pool"] asks for Django's own psycopg pool (Django 5.1+): the alias is
        # then Django's stock backend, and dbpool keeps out of its way.
        return super().dbpool_pooled() and not self.settings_dict["OPTIONS"].get("pool")

    @property
    def pool(self) -> Any:
        """Django's own psycopg pool, when ``OPTIONS["pool"]`` asks for it (else None)."""
        if self.dbpool_pooled() or not hasattr(PostgreSQLDatabaseWrapper, "pool"):
            return None
        return PostgreSQLDatabaseWrapper.pool.fget(self)

    def _dbpool_driver_params(self, params: dict[str, Any], config: EngineConfig) -> None:
        timeout = config.connect_timeout
        # libpq takes whole seconds; 0 is its "no limit".
        params["connect_timeout"] = max(1, math.ceil(timeout)) if timeout else 0
        if config.schema is not None:
            option = search_path_option(config.schema)
            params["options"] = f"{params['options']} {option}" if "options" in params else option
        if config.pgbouncer:
            params["prepare_threshold"] = None
        if config.socket_timeout:
            params["cursor_factory"] = bounded_cursor(params["cursor_factory"])

    def _dbpool_open_direct(self, conn_params: dict[str, Any]) -> Any:
        timeouts = self._dbpool_timeouts
        if timeouts is None or not timeouts.socket_timeout:
            return super()._dbpool_open_direct(conn_params)
        # socket_timeout: dbpool's bounded connection class (commit, rollback) and the
        # deadline the watchdog enforces; the isolation level is set at each checkout.
        connection_class, _ = bounded_classes(psycopg)
        connection = connection_class.connect(**conn_params)
        attach_deadline(connection, timeouts)
        return connection

    def _dbpool_url(self, conn_params: Mapping[str, Any]) -> URL:
        host = conn_params.get("host")
        port = conn_params.get("port")
        return URL(
            "postgresql",
            username=conn_params.get("user"),
            password=conn_params.get("password"),
            # A Unix socket directory is no URL host; the URL only names the server.
            host=None if not host or str(host).startswith("/") else str(host),
            port=int(port) if port and str(port).isdigit() else None,
            database=conn_params.get("dbname"),
        )

    def _dbpool_setup_key(self) -> tuple[Any, ...]:
        options = self.settings_dict["OPTIONS"]
        return (
            settings.USE_TZ,
            self.timezone_name,
            options.get("assume_role"),
            options.get("isolation_level", _UNSET),
        )

    def _dbpool_on_checkout(self, connection: Any) -> None:
        # What Django's get_new_connection() does besides connecting: a client-side
        # setting, restored at every checkout in case the last user changed it.
        value = self.settings_dict["OPTIONS"].get("isolation_level", _UNSET)
        if value is _UNSET:
            self.isolation_level = IsolationLevel.READ_COMMITTED
            wanted = None  # the server's default
        else:
            try:
                self.isolation_level = wanted = IsolationLevel(value)
            except ValueError:
                raise ImproperlyConfigured(
                    f"Invalid transaction isolation level {value} specified. Use one of the "
                    "psycopg.IsolationLevel values."
                ) from None
        if connection.isolation_level != wanted:
            connection.isolation_level = wanted
        # A previous user may have changed the session's time zone (SET/RESET TIME ZONE);
        # libpq reports the current one with every change, so checking costs nothing.
        zone = self.timezone_name
        if zone and connection.info.parameter_status("TimeZone") != zone:
            with connection.cursor() as cursor:
                cursor.execute(self.ops.set_time_zone_sql(), [zone])

    def _dbpool_restore(self, connection: Any) -> None:
        if connection.closed or connection.broken:
            raise ConnectionError("the connection is closed")
        if connection.pgconn.transaction_status != _IDLE:
            connection.rollback()
        if not connection.autocommit:
            connection.autocommit = True
