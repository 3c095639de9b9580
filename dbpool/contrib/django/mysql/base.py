"""Django's MySQL/MariaDB backend over PyMySQL, its connections checked out of a dbpool pool.

Django's MySQL backend imports ``MySQLdb`` (mysqlclient, a C extension); PyMySQL stands
in for it (``pymysql.install_as_MySQLdb()``), so no compiler or client library is
needed. Where PyMySQL's defaults differ from mysqlclient's in ways Django relies on, this
backend restores mysqlclient's: multiple statements per query are allowed, and a health
check never reconnects behind the pool's back.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Mapping
from typing import Any

import pymysql
import pymysql.constants


def _install_pymysql_as_mysqldb() -> None:
    """``pymysql.install_as_MySQLdb()``, and every PyMySQL module under its MySQLdb name.

    PyMySQL's own call aliases the package alone, so Django's ``from MySQLdb.constants
    import ...`` loads second copies of ``constants``, ``converters`` and ``err`` and
    rebinds ``pymysql.err`` to the copy: errors raised by the driver then fail
    ``isinstance`` checks against ``pymysql.err`` classes (dbpool's disconnect detection
    among them). Aliasing the modules already loaded makes both names one module.
    """
    for info in pkgutil.iter_modules(pymysql.constants.__path__):
        importlib.import_module(f"pymysql.constants.{info.name}")
    importlib.import_module("pymysql.converters")
    pymysql.install_as_MySQLdb()
    for name, module in list(sys.modules.items()):
        if name.startswith("pymysql."):
            sys.modules.setdefault("MySQLdb." + name[len("pymysql.") :], module)


_install_pymysql_as_mysqldb()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db.backends.mysql import base as mysql_base  # noqa: E402
from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper  # noqa: E402
from django.db.backends.mysql.creation import (  # noqa: E402
    DatabaseCreation as MySQLDatabaseCreation,
)

from dbpool.config import EngineConfig  # noqa: E402
from dbpool.contrib.django.creation import PooledDatabaseCreation  # noqa: E402
from dbpool.contrib.django.wrapper import PooledDatabaseWrapper  # noqa: E402
from dbpool.url import URL  # noqa: E402

if getattr(mysql_base, "Database", None) is not pymysql:
    raise ImproperlyConfigured(
        "dbpool.contrib.django.mysql runs on PyMySQL, but Django's MySQL backend was already "
        "imported with another MySQLdb module (mysqlclient). Import this backend first, or "
        "use django.db.backends.mysql for that database."
    )

_MAX_TIMEOUT = 31_536_000.0  # PyMySQL accepts at most a year
_SERVER_STATUS_IN_TRANS = 0x0001


class DatabaseCreation(PooledDatabaseCreation, MySQLDatabaseCreation):
    pass


class DatabaseWrapper(PooledDatabaseWrapper, MySQLDatabaseWrapper):
    dbpool_dialect = "mysql"
    creation_class = DatabaseCreation

    def _dbpool_driver_params(self, params: dict[str, Any], config: EngineConfig) -> None:
        params["connect_timeout"] = min(config.connect_timeout or _MAX_TIMEOUT, _MAX_TIMEOUT)
        if config.socket_timeout:
            # As dbpool's MySQL dialect does: PyMySQL's own read and write timeouts, unless
            # OPTIONS sets them. A call past them loses its connection, which is discarded.
            bound = min(config.socket_timeout, _MAX_TIMEOUT)
            params.setdefault("read_timeout", bound)
            params.setdefault("write_timeout", bound)
        if "client_flag" not in self.settings_dict["OPTIONS"]:
            # mysqlclient allows several statements per query, and Django's backend sends
            # them (its session setup joins SET statements with "; ").
            from pymysql.constants import CLIENT

            params["client_flag"] |= CLIENT.MULTI_STATEMENTS

    def _dbpool_url(self, conn_params: Mapping[str, Any]) -> URL:
        port = conn_params.get("port")
        return URL(
            "mysql",
            username=conn_params.get("user"),
            password=conn_params.get("password"),
            host=conn_params.get("host") or None,
            port=int(port) if port else None,
            database=conn_params.get("database"),
        )

    def _dbpool_setup_key(self) -> tuple[Any, ...]:
        return (self.isolation_level,)

    def _dbpool_restore(self, connection: Any) -> None:
        if not connection.open:
            raise ConnectionError("the connection is closed")
        autocommit = connection.get_autocommit()
        if not autocommit or (connection.server_status or 0) & _SERVER_STATUS_IN_TRANS:
            connection.rollback()
        if not autocommit:
            connection.autocommit(True)

    def is_usable(self) -> bool:
        # PyMySQL's ping() reconnects by default: a new session without Django's setup,
        # unknown to the pool. mysqlclient's does not.
        if self.connection is None:
            return False
        try:
            self.connection.ping(reconnect=False)
        except pymysql.Error:
            return False
        return True
