from djs_settings.base import *  # noqa: F403
from djs_settings.base import MYSQL_URL, POOL_OPTIONS, databases

DATABASES = databases("dbpool.contrib.django.mysql", MYSQL_URL, "my_dbpool", POOL_OPTIONS)
