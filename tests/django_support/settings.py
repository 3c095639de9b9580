"""Settings for ``python -m django test`` runs against one dbpool backend.

``DBPOOL_DJ_BACKEND`` is ``postgresql``, ``mysql`` or ``sqlite``; ``DBPOOL_DJ_NAME`` the
database name (the test runner works on ``test_<name>``); ``DBPOOL_DJ_SQLITE_DIR`` where
a SQLite database file goes.
"""

import os

from dbpool.contrib.django import config
from tests.servers import MYSQL_URL, POSTGRES_URL

_backend = os.environ.get("DBPOOL_DJ_BACKEND", "postgresql")
_name = os.environ.get("DBPOOL_DJ_NAME", "dbpool_dj_runner")
_limit = {"connection_limit": 3, "pool_timeout": 10}

if _backend == "postgresql":
    _default = config(POSTGRES_URL, **_limit)
elif _backend == "mysql":
    _default = config(MYSQL_URL, **_limit)
else:
    _default = config("sqlite:///" + os.path.join(os.environ["DBPOOL_DJ_SQLITE_DIR"], _name))
_default["NAME"] = _name if _backend != "sqlite" else _default["NAME"]
if _backend == "sqlite":
    # A file, not the runner's default in-memory database: only files are pooled.
    _default["TEST"] = {"NAME": _default["NAME"] + "-test"}

DATABASES = {"default": _default}
INSTALLED_APPS = ["django.contrib.contenttypes", "tests.django_support"]
USE_TZ = True
SECRET_KEY = "dbpool-tests"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.django_support.urls"
