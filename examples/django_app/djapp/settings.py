"""Settings: the database, pool settings included, comes from ``DATABASE_URL``."""

import os
from pathlib import Path

from dbpool.contrib.django import config

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "not-a-secret: example project only")
DEBUG = False  # DEBUG keeps every query in memory: never under load
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["catalog"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "djapp.urls"
WSGI_APPLICATION = "djapp.wsgi.application"

# e.g. DATABASE_URL=postgresql://app@db:5432/shop?connection_limit=4&pool_timeout=5
DATABASES = {
    "default": config(os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR}/db.sqlite3")
}

USE_TZ = True
TIME_ZONE = "UTC"

# Without DEBUG, Django mails errors to ADMINS; print them instead, so that the server's
# log shows why a request failed.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}
