"""Dialects: one module per database, each a subclass of ``Dialect``.

Modules are imported only when a URL names them, so a driver that is not installed
costs nothing until it is used.
"""

from __future__ import annotations

import importlib

from dbpool.config import did_you_mean
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError

# drivername -> "module:Class"
REGISTRY: dict[str, str] = {
    "sqlite": "dbpool.dialects.sqlite:SQLiteDialect",
    "sqlite+pysqlite": "dbpool.dialects.sqlite:SQLiteDialect",
    "postgresql": "dbpool.dialects.postgresql:PostgreSQLDialect",
    "postgres": "dbpool.dialects.postgresql:PostgreSQLDialect",
    "postgresql+psycopg": "dbpool.dialects.postgresql:PostgreSQLDialect",
    "mysql": "dbpool.dialects.mysql:MySQLDialect",
    "mysql+pymysql": "dbpool.dialects.mysql:MySQLDialect",
    "mariadb": "dbpool.dialects.mysql:MySQLDialect",
    "mariadb+pymysql": "dbpool.dialects.mysql:MySQLDialect",
    "mssql": "dbpool.dialects.mssql:MSSQLDialect",
    "mssql+pyodbc": "dbpool.dialects.mssql:MSSQLDialect",
    "odbc": "dbpool.dialects.odbc:ODBCDialect",
    "odbc+pyodbc": "dbpool.dialects.odbc:ODBCDialect",
}


def load(drivername: str) -> type[Dialect]:
    """The dialect class for a URL's ``dialect[+driver]`` name."""
    target = REGISTRY.get(drivername.lower())
    if target is None:
        raise ConfigError(
            f"Unknown database {drivername!r}; dbpool supports: "
            f"{', '.join(sorted(REGISTRY))}." + did_you_mean(drivername, REGISTRY)
        )
    module_name, _, class_name = target.partition(":")
    cls: type[Dialect] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["REGISTRY", "Dialect", "load"]
