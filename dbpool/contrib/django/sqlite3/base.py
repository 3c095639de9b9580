"""Django's SQLite backend, its connections checked out of a dbpool pool.

Only database files are pooled. An in-memory database lives exactly as long as its
connections, so for one (``:memory:``, the test runner's default) this backend behaves
as Django's own: one connection per thread, kept open.

``OPTIONS["init_command"]`` (Django 5.1+) works on Django 4.2 too: the statements run
once on each new connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper
from django.db.backends.sqlite3.creation import DatabaseCreation as SQLiteDatabaseCreation

from dbpool.config import EngineConfig
from dbpool.contrib.django.creation import PooledDatabaseCreation
from dbpool.contrib.django.wrapper import PooledDatabaseWrapper
from dbpool.url import URL

# sqlite3 takes the busy timeout in seconds and stores milliseconds in a C int.
_NO_BUSY_LIMIT = 2_147_483.0
_DJANGO_RUNS_INIT_COMMAND = django.VERSION >= (5, 1)


class DatabaseCreation(PooledDatabaseCreation, SQLiteDatabaseCreation):
    pass


class DatabaseWrapper(PooledDatabaseWrapper, SQLiteDatabaseWrapper):
    dbpool_dialect = "sqlite"
    creation_class = DatabaseCreation
    init_commands: list[str]

    def dbpool_pooled(self) -> bool:
        return super().dbpool_pooled() and not self.is_in_memory_db()

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        init_command = params.pop("init_command", None)  # left there by Django < 5.1
        if init_command is not None:
            self.init_commands = init_command.split(";")
        return params

    def _dbpool_driver_params(self, params: dict[str, Any], config: EngineConfig) -> None:
        # dbpool's connect_timeout is SQLite's busy timeout (its only wait).
        params.setdefault("timeout", config.connect_timeout or _NO_BUSY_LIMIT)

    def _dbpool_open_direct(self, conn_params: dict[str, Any]) -> Any:
        connection = super()._dbpool_open_direct(conn_params)
        if not _DJANGO_RUNS_INIT_COMMAND:
            for command in getattr(self, "init_commands", ()):
                if command.strip():
                    connection.execute(command.strip())
        return connection

    def _dbpool_url(self, conn_params: Mapping[str, Any]) -> URL:
        return URL("sqlite", database=str(conn_params["database"]))

    def _dbpool_restore(self, connection: Any) -> None:
        if connection.in_transaction:
            connection.rollback()
        connection.isolation_level = None  # Django's autocommit
