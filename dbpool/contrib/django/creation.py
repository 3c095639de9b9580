"""Test databases: no pooled connection may hold one that is being cloned or dropped.

PostgreSQL refuses ``DROP DATABASE`` and ``CREATE DATABASE ... TEMPLATE`` while any
session is connected to the database, and a pool keeps idle sessions open by design. So
before each of those the pools on that database are disposed of: idle connections close
at once, checked-out ones as they come back (or after ``DROP_DATABASE_WAIT`` seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbpool.contrib.django import pools

if TYPE_CHECKING:
    from django.db.backends.base.creation import BaseDatabaseCreation as _Base
else:
    _Base = object

DROP_DATABASE_WAIT = 5.0


class PooledDatabaseCreation(_Base):
    """Mixed into a subclass of Django's own ``DatabaseCreation`` (it must come first)."""

    def _dbpool_dispose(self, database_name: str) -> None:
        pools.dispose_database(self.connection.vendor, database_name, DROP_DATABASE_WAIT)

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> Any:
        # An old test database of that name may be dropped and made again.
        self._dbpool_dispose(self._get_test_db_name())  # type: ignore[attr-defined]
        return super()._create_test_db(verbosity, autoclobber, keepdb)  # type: ignore[misc]

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        self.connection.close()
        self._dbpool_dispose(self.connection.settings_dict["NAME"])
        self._dbpool_dispose(self.get_test_db_clone_settings(suffix)["NAME"])
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        self._dbpool_dispose(test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]
