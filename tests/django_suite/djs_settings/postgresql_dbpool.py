from djs_settings.base import *  # noqa: F403
from djs_settings.base import POOL_OPTIONS, POSTGRES_URL, databases

DATABASES = databases("dbpool.contrib.django.postgresql", POSTGRES_URL, "pg_dbpool", POOL_OPTIONS)
