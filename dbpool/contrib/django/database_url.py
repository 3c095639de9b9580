"""``config()``: a whole ``DATABASES`` entry from a database URL.

The URL is checked exactly as ``dbpool.create_engine()`` checks it (the same
messages, the same "did you mean"), and each part lands where Django's backend reads
it: pool settings and driver parameters in ``OPTIONS``, ``isolation_level`` in the
format of Django's backend for that database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dbpool import dialects
from dbpool.config import SETTINGS, EngineConfig, did_you_mean, resolve_settings
from dbpool.contrib.django.options import POOL_SETTINGS, improperly_configured
from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError
from dbpool.url import URL, make_url

ENGINES = {
    "postgresql": "dbpool.contrib.django.postgresql",
    "mysql": "dbpool.contrib.django.mysql",
    "sqlite": "dbpool.contrib.django.sqlite3",
}
_SQLITE_URI_PARAMS = ("mode", "cache", "immutable", "nolock", "vfs")


def config(url: str | URL | None = None, **settings: Any) -> dict[str, Any]:
    """A whole ``DATABASES`` entry for a database URL, on dbpool's Django backends.

    The URL is checked exactly as [`create_engine`][dbpool.create_engine] checks it, and
    each part lands where Django's backend reads it: ``ENGINE`` is dbpool's backend for
    the database, ``CONN_MAX_AGE`` is 0 (the pool keeps the connections), pool settings
    and driver parameters go in ``OPTIONS``, ``isolation_level`` in the form Django's
    backend for that database takes.

    Args:
        url: The database URL (``postgresql://``, ``mysql://``, ``mariadb://`` or
            ``sqlite://``); None reads ``DATABASE_URL``.
        **settings: Pool settings; they override the same names in the URL query.

    Returns:
        The ``DATABASES`` entry: ``ENGINE``, ``NAME``, ``USER``, ``PASSWORD``, ``HOST``,
        ``PORT``, ``CONN_MAX_AGE`` and ``OPTIONS``.

    Raises:
        django.core.exceptions.ImproperlyConfigured: For no URL, a database with no
            dbpool backend, or an unknown or invalid setting (with dbpool's message).

    Example:
        ```python
        # settings.py
        from dbpool.contrib.django import config

        DATABASES = {"default": config(connection_limit=8)}  # the URL from DATABASE_URL
        ```
    """
    if url is None:
        url = os.environ.get("DATABASE_URL")
        if not url:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                "No database URL: pass one to config() or set DATABASE_URL, e.g. "
                "postgresql://user@localhost:5432/app?connection_limit=8"
            )
    try:
        return _entry(make_url(url), settings)
    except ConfigError as exc:
        raise improperly_configured(exc) from exc


def _entry(url: URL, settings: Mapping[str, Any]) -> dict[str, Any]:
    dialect_class = dialects.load(url.drivername)
    engine = ENGINES.get(dialect_class.name)
    if engine is None:
        raise ConfigError(
            f"dbpool has no Django backend for {dialect_class.name}; it has them for "
            f"{', '.join(ENGINES)}"
        )
    for name in settings:
        if name not in SETTINGS:
            raise ConfigError(
                f"config() got an unknown keyword argument {name!r}; it takes the pool "
                f"settings ({', '.join(SETTINGS)})." + did_you_mean(name, SETTINGS)
            )
    resolved, driver_params = resolve_settings(
        url.query, settings, default_limit=dialect_class.default_connection_limit
    )
    # Checks the driver parameters and the settings' combinations, as create_engine() does.
    dialect = dialect_class(url, resolved, driver_params)
    options: dict[str, Any] = {}
    for name in POOL_SETTINGS:
        if name in url.query or name in settings:
            value = getattr(resolved, name)
            options[name] = False if name == "pre_ping" and value is None else value
    entry: dict[str, Any] = {
        "ENGINE": engine,
        "NAME": url.database or "",
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.host or "",
        "PORT": str(url.port) if url.port else "",
        "CONN_MAX_AGE": 0,
        "OPTIONS": options,
    }
    if dialect_class.name == "postgresql":
        _postgresql(entry, dialect, resolved)
    elif dialect_class.name == "mysql":
        _mysql(entry, dialect, resolved)
    else:
        _sqlite(entry, dialect, resolved)
    return entry


def _postgresql(entry: dict[str, Any], dialect: Dialect, resolved: EngineConfig) -> None:
    options = entry["OPTIONS"]
    for name, value in dialect.driver_params.items():
        if name == "host":  # a Unix socket directory: Django's HOST takes it
            entry["HOST"] = value
        else:
            options[name] = value
    level = resolved.isolation_level
    if level is not None and level != "AUTOCOMMIT":  # Django's default is autocommit
        options["isolation_level"] = dialect.dbapi.IsolationLevel[level.replace(" ", "_")]


def _mysql(entry: dict[str, Any], dialect: Dialect, resolved: EngineConfig) -> None:
    from dbpool.dialects.mysql import QUERY_PARAMS

    options = entry["OPTIONS"]
    for name, raw in dialect.driver_params.items():
        options[name] = QUERY_PARAMS[name](name, raw)
    level = resolved.isolation_level
    if level is not None and level != "AUTOCOMMIT":
        options["isolation_level"] = level.lower()


def _sqlite(entry: dict[str, Any], dialect: Dialect, resolved: EngineConfig) -> None:
    params = dialect.driver_params
    name = entry["NAME"]
    if name in ("", ":memory:"):
        entry["NAME"] = ":memory:"
    uri = [(key, params[key]) for key in _SQLITE_URI_PARAMS if key in params]
    if uri:
        target = entry["NAME"] if entry["NAME"].startswith("file:") else "file:" + entry["NAME"]
        separator = "&" if "?" in target else "?"
        entry["NAME"] = target + separator + "&".join(f"{k}={v}" for k, v in uri)
    commands = []
    if "journal_mode" in params:
        commands.append(f"PRAGMA journal_mode = {params['journal_mode'].upper()}")
    if resolved.isolation_level == "READ UNCOMMITTED":
        commands.append("PRAGMA read_uncommitted = 1")
    if commands:
        entry["OPTIONS"]["init_command"] = "; ".join(commands)
