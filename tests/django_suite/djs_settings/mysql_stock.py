# Django's stock MySQL backend imports MySQLdb; PyMySQL stands in for it so the stock
# and dbpool sides run on the same driver and differ only in the pool.
import pymysql

pymysql.install_as_MySQLdb()

from djs_settings.base import *  # noqa: E402, F403
from djs_settings.base import MYSQL_URL, databases  # noqa: E402

DATABASES = databases("django.db.backends.mysql", MYSQL_URL, "my_stock", {})
