from djs_settings.base import *  # noqa: F403
from djs_settings.base import POSTGRES_URL, databases

DATABASES = databases("django.db.backends.postgresql", POSTGRES_URL, "pg_stock", {})
