"""What a ``DATABASES`` entry's ``OPTIONS`` holds: dbpool's pool settings and driver options.

Pool settings go by dbpool's own names (``connection_limit``, ``pool_timeout``, ...) and
are taken out before Django hands ``OPTIONS`` to the driver. ``isolation_level`` stays
Django's: its backends read it from ``OPTIONS`` in their own format. Every other key is
a driver option, as with Django's stock backends, except one within two edits of a pool
setting name: that is a typo, and passing it to the driver would only fail later with a
driver message that never mentions the pool.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from dbpool.config import SETTINGS, EngineConfig, did_you_mean, resolve_settings
from dbpool.exc import ConfigError

# Read by Django's PostgreSQL and MySQL backends from OPTIONS, in their own format.
DJANGO_OWNED = frozenset({"isolation_level"})
POOL_SETTINGS = tuple(name for name in SETTINGS if name not in DJANGO_OWNED)


def improperly_configured(error: ConfigError) -> Exception:
    """Django's ImproperlyConfigured carrying dbpool's message."""
    from django.core.exceptions import ImproperlyConfigured

    exc = ImproperlyConfigured(str(error))
    exc.__cause__ = error
    return exc


def split_pool_settings(options: Mapping[str, Any], *, alias: str) -> dict[str, Any]:
    """The pool settings in ``options``; raises ConfigError for a misspelt one.

    (No option of libpq, psycopg, PyMySQL or sqlite3 is within two edits of a pool
    setting, so a near miss is always a typo.)
    """
    settings: dict[str, Any] = {}
    for name, value in options.items():
        if name in POOL_SETTINGS:
            settings[name] = value
        elif name not in DJANGO_OWNED:
            hint = _typo_hint(name)
            if hint:
                raise ConfigError(
                    f"Unknown OPTIONS key {name!r} in DATABASES[{alias!r}]: it is not a "
                    f"dbpool pool setting.{hint}"
                )
    return settings


@functools.lru_cache(maxsize=512)
def _typo_hint(name: str) -> str:
    # Django asks for the connection parameters at every checkout; the edit distances
    # to every setting name cost far more than the rest of a checkout.
    return did_you_mean(name, POOL_SETTINGS)


def resolve(settings: Mapping[str, Any], default_limit: int | None) -> EngineConfig:
    """Every pool setting, parsed, defaults filled in (ConfigError for a bad value)."""
    config, _ = resolve_settings({}, settings, default_limit=default_limit)
    return config
