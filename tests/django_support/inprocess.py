"""Django configured inside the pytest process, with aliases on the real test servers.

Aliases (database ``dbpool_dj`` on each server, a file for SQLite):

* ``postgresql``, ``mysql``, ``sqlite``: the plain backends (connection_limit 4).
* ``postgresql_same``: the same settings as ``postgresql`` (so the same pool).
* ``postgresql_small``: connection_limit 2 (a pool of its own).
* ``postgresql_health``, ``mysql_health``: CONN_HEALTH_CHECKS on.
* ``postgresql_setup``: a session time zone and an isolation level to set up.
* ``mysql_setup``: an isolation level and an init_command that counts its runs.
* ``sqlite_setup``: an init_command that fails if it runs twice on one connection.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dbpool.contrib.django import config
from tests.servers import MYSQL_URL, POSTGRES_URL

NAME = "dbpool_dj"
_configured_here = False


def databases(sqlite_dir: Path) -> dict[str, dict[str, Any]]:
    import psycopg

    limit = {"connection_limit": 4, "pool_timeout": 10}
    postgresql = {**config(POSTGRES_URL, **limit), "NAME": NAME}
    mysql = {**config(MYSQL_URL, **limit), "NAME": NAME}
    sqlite = config(f"sqlite:///{sqlite_dir / 'dj.sqlite3'}", **limit)
    return {
        "default": postgresql,
        "postgresql": postgresql,
        "postgresql_same": {**postgresql, "OPTIONS": dict(postgresql["OPTIONS"])},
        "postgresql_small": {
            **postgresql,
            "OPTIONS": {**postgresql["OPTIONS"], "connection_limit": 2},
        },
        "postgresql_health": {**postgresql, "CONN_HEALTH_CHECKS": True},
        "postgresql_setup": {
            **postgresql,
            "TIME_ZONE": "Asia/Tokyo",
            "OPTIONS": {
                **postgresql["OPTIONS"],
                "isolation_level": psycopg.IsolationLevel.REPEATABLE_READ,
            },
        },
        "mysql": mysql,
        "mysql_health": {**mysql, "CONN_HEALTH_CHECKS": True},
        "mysql_setup": {
            **mysql,
            "OPTIONS": {
                **mysql["OPTIONS"],
                "isolation_level": "repeatable read",
                "init_command": "SET @dbpool_init_runs = COALESCE(@dbpool_init_runs, 0) + 1",
            },
        },
        "sqlite": sqlite,
        "sqlite_setup": {
            **sqlite,
            "OPTIONS": {
                **sqlite["OPTIONS"],
                "init_command": "CREATE TEMP TABLE dbpool_init_runs (n INTEGER)",
            },
        },
    }


def configure() -> None:
    """Configure Django for these tests, once per process."""
    global _configured_here
    import django
    from django.conf import settings

    if _configured_here:
        return
    if settings.configured:
        raise RuntimeError("Django was configured by other code in this process")
    sqlite_dir = Path(tempfile.mkdtemp(prefix="dbpool_dj_"))
    atexit.register(shutil.rmtree, sqlite_dir, True)
    settings.configure(
        DATABASES=databases(sqlite_dir),
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.django_support"],
        USE_TZ=True,
        SECRET_KEY="dbpool-tests",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        ROOT_URLCONF="tests.django_support.urls",
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
    )
    django.setup()
    _configured_here = True
