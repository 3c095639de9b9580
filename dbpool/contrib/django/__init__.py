"""Django database backends whose connections come from a process-wide dbpool pool.

``ENGINE`` is ``"dbpool.contrib.django.postgresql"``, ``"dbpool.contrib.django.mysql"``
or ``"dbpool.contrib.django.sqlite3"``; [`config`][dbpool.contrib.django.config] makes a
whole ``DATABASES`` entry from a URL. Nothing here imports Django until a backend or
``config()`` is used. ``PoolTimeout``, raised when no connection becomes free within
``pool_timeout``, is both [`PoolTimeoutError`][dbpool.PoolTimeoutError] and Django's
``OperationalError``. The [Django guide](integrations/django.md) has the whole story.
"""

from __future__ import annotations

from typing import Any

from dbpool.contrib.django.database_url import config

__all__ = ["PoolTimeout", "config"]


def __getattr__(name: str) -> Any:
    # The error class subclasses Django's OperationalError: imported on first use only.
    if name == "PoolTimeout":
        from dbpool.contrib.django.errors import PoolTimeout

        return PoolTimeout
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
