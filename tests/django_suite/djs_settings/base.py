"""What every side shares: Django's own test settings (tests/test_sqlite.py in the sdist)
plus a ``DATABASES`` pair built from the project's test-server URLs."""

from __future__ import annotations

import os
from typing import Any

from dbpool import make_url

POSTGRES_URL = os.environ.get(
    "DBPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("DBPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

# The servers are shared with other test suites: every name here starts with dbpool_djs,
# so the test databases (test_dbpool_djs_*) collide with nobody else's.
NAME_PREFIX = "dbpool_djs"

# Small enough that Django's threaded tests queue for connections instead of each
# getting its own, which is the behaviour worth proving.
POOL_OPTIONS: dict[str, Any] = {"connection_limit": 4}

SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "djs_settings.runner.RecordingRunner"


def databases(engine: str, url: str, side: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ``default`` and ``other`` aliases Django's suite expects, on one server."""
    parsed = make_url(url)
    common = {
        "ENGINE": engine,
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.host or "127.0.0.1",
        "PORT": str(parsed.port or ""),
        "OPTIONS": dict(options),
    }
    return {
        alias: {**common, "NAME": f"{NAME_PREFIX}_{side}_{alias}"}
        for alias in ("default", "other")
    }
