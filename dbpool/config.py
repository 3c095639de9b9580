"""Pool settings: one table of names, parsers and defaults, resolved into a frozen config.

A setting may come from the URL query (always a string) or from a keyword argument to
``create_engine`` (a Python value); both go through the same parser, so a bad value
gets the same ``ConfigError`` wherever it came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from dbpool.exc import ConfigError

PRE_PING_WINDOW = 0.5
ISOLATION_LEVELS = (
    "AUTOCOMMIT",
    "READ UNCOMMITTED",
    "READ COMMITTED",
    "REPEATABLE READ",
    "SERIALIZABLE",
)


def default_connection_limit() -> int:
    """The default ``connection_limit``, Prisma's: physical cores * 2 + 1.

    Returns:
        The size, from psutil's count of physical cores (the logical count when psutil
        cannot tell).
    """
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return cores * 2 + 1


def _shown(value: object) -> str:
    """The bad value for an error message: its repr, shortened (and never itself failing,
    as repr() of an int with more than 4300 digits does)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def parse_int_at_least(name: str, value: object, minimum: int) -> int:
    """An integer setting, from an ``int`` or its digits.

    Args:
        name: The setting, for the message.
        value: The value given (a URL query value is a ``str``).
        minimum: The smallest value allowed.

    Returns:
        The integer.

    Raises:
        ConfigError: For anything else, or a number below ``minimum``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {_shown(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        try:
            number = int(value.strip())
        except ValueError:  # digits int() refuses: "²", "++3", more than 4300 of them
            raise ConfigError(
                f"{name} must be an integer >= {minimum}, got {_shown(value)}"
            ) from None
    else:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {_shown(value)}")
    if number < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {_shown(value)}")
    return number


def parse_seconds(name: str, value: object) -> float:
    """A setting in seconds: an integer or decimal >= 0 (0 usually means "no limit").

    Args:
        name: The setting, for the message.
        value: The value given: a number or its text.

    Returns:
        The seconds.

    Raises:
        ConfigError: For anything else, a negative number, an infinity or a NaN.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {_shown(value)}")
    number: float
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
        else:
            raise ValueError(value)
    except (ValueError, OverflowError):  # OverflowError: an int too large for a float
        raise ConfigError(
            f"{name} must be a number of seconds >= 0, got {_shown(value)}"
        ) from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {_shown(value)}")
    return number


_TRUE = ("true", "1")
_FALSE = ("false", "0")


def parse_bool(name: str, value: object) -> bool:
    """A yes-or-no setting: ``True``/``False``, ``1``/``0``, or their text.

    Args:
        name: The setting, for the message.
        value: The value given.

    Returns:
        The flag.

    Raises:
        ConfigError: For anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ConfigError(f"{name} must be true, false, 1 or 0, got {_shown(value)}")


def parse_pre_ping(name: str, value: object) -> float | None:
    """The ``pre_ping`` setting.

    Args:
        name: The setting, for the message.
        value: ``True``, ``False``, a window in seconds, or their text.

    Returns:
        The window in seconds (``True``: the default 0.5 s), or None for off.

    Raises:
        ConfigError: For anything else.
    """
    if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
        return PRE_PING_WINDOW
    if value is False or (isinstance(value, str) and value.strip().lower() == "false"):
        return None
    try:
        return parse_seconds(name, value)
    except ConfigError:
        raise ConfigError(
            f"{name} must be true, false or a window in seconds >= 0, got {_shown(value)}"
        ) from None


def parse_isolation_level(name: str, value: object) -> str | None:
    """The ``isolation_level`` setting, in any case, with ``_`` or spaces.

    Args:
        name: The setting, for the message.
        value: A level, such as ``"read_committed"``, or None.

    Returns:
        The level in capitals (``"READ COMMITTED"``), or None for the driver's default.

    Raises:
        ConfigError: For anything that is not an isolation level.
    """
    if value is None:
        return None
    if isinstance(value, str):
        level = " ".join(value.replace("_", " ").split()).upper()
        if level in ISOLATION_LEVELS:
            return level
    raise ConfigError(f"{name} must be one of {', '.join(ISOLATION_LEVELS)}, got {_shown(value)}")


def parse_schema(name: str, value: object) -> str | None:
    """The ``schema`` setting.

    Args:
        name: The setting, for the message.
        value: A schema name, or None.

    Returns:
        The name without surrounding spaces, or None.

    Raises:
        ConfigError: For an empty name or a value that is not a ``str``.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ConfigError(f"{name} must be a non-empty schema name, got {_shown(value)}")


def parse_positive_int(name: str, value: object) -> int:
    """An integer setting >= 1 (see ``parse_int_at_least``)."""
    return parse_int_at_least(name, value, 1)


# name -> parser; the order is the order of the CLI's settings table.
SETTINGS: dict[str, Callable[[str, object], Any]] = {
    "connection_limit": parse_positive_int,
    "pool_timeout": parse_seconds,
    "connect_timeout": parse_seconds,
    "max_idle_connection_lifetime": parse_seconds,
    "max_connection_lifetime": parse_seconds,
    "pre_ping": parse_pre_ping,
    "validation_timeout": parse_seconds,
    "socket_timeout": parse_seconds,
    "leak_detection_threshold": parse_seconds,
    "reap_idle_after": parse_seconds,
    "budget_check": parse_bool,
    "isolation_level": parse_isolation_level,
    "pgbouncer": parse_bool,
    "schema": parse_schema,
}

DEFAULTS: dict[str, Any] = {
    "pool_timeout": 10.0,
    "connect_timeout": 5.0,
    "max_idle_connection_lifetime": 300.0,
    "max_connection_lifetime": 0.0,
    "pre_ping": PRE_PING_WINDOW,
    "validation_timeout": 2.0,
    "socket_timeout": 0.0,
    "leak_detection_threshold": 0.0,
    "reap_idle_after": 0.0,
    "budget_check": True,
    "isolation_level": None,
    "pgbouncer": False,
    "schema": None,
}


@dataclass(frozen=True)
class EngineConfig:
    """Every resolved pool setting of an engine: ``engine.config``.

    A frozen dataclass, made by [`create_engine`][dbpool.create_engine] from the URL
    query, the keyword arguments and the defaults; the
    [configuration guide](configuration.md#the-settings) explains each setting.
    Seconds are ``float``; where ``0`` switches something off, the attribute says so.

    Attributes:
        connection_limit: Most connections open at once.
        pool_timeout: Longest wait in the queue for a connection, then
            [`PoolTimeoutError`][dbpool.PoolTimeoutError]; ``0`` waits forever.
        connect_timeout: Longest time to open one connection; ``0`` is no limit.
        max_idle_connection_lifetime: An idle connection older than this is closed;
            ``0`` is never.
        max_connection_lifetime: A connection older than this is retired when it is
            next idle; ``0`` is never.
        pre_ping: The window in seconds: a connection idle longer than this is pinged
            before it is handed out (``0``: at every checkout); None when off.
        validation_timeout: Longest a pre-ping waits for an answer; ``0`` is no limit.
        socket_timeout: Longest a statement, commit, rollback or reset waits for the
            server; ``0`` is no limit.
        leak_detection_threshold: A connection held longer is logged with the stack
            that checked it out; ``0`` is off.
        reap_idle_after: When the server is full, end this application's own server
            connections idle longer than this, then retry; ``0`` is off.
        budget_check: Compare ``connection_limit`` with the server's connection budget
            when the pool starts (PostgreSQL, MySQL).
        isolation_level: ``"AUTOCOMMIT"``, ``"READ COMMITTED"``, ... in capitals, or
            None for the driver's default.
        pgbouncer: PostgreSQL is reached through PgBouncer in transaction mode.
        schema: The PostgreSQL ``search_path``, or None.
    """

    connection_limit: int
    pool_timeout: float
    connect_timeout: float
    max_idle_connection_lifetime: float
    max_connection_lifetime: float
    pre_ping: float | None
    validation_timeout: float
    socket_timeout: float
    leak_detection_threshold: float
    reap_idle_after: float
    budget_check: bool
    isolation_level: str | None
    pgbouncer: bool
    schema: str | None

    def items(self) -> list[tuple[str, object]]:
        """The settings in order.

        Returns:
            ``(name, value)`` pairs, in the order of the attributes above.
        """
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance: insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A hint for a misspelt name.

    Args:
        name: The name given.
        candidates: The names it may have meant.

    Returns:
        `` Did you mean "x"?`` for the closest candidate within two edits, else ``""``.
    """
    scored = sorted((edit_distance(name.lower(), c), c) for c in candidates)
    if scored and scored[0][0] <= 2:
        return f' Did you mean "{scored[0][1]}"?'
    return ""


def resolve_settings(
    query: Mapping[str, str],
    overrides: Mapping[str, object],
    *,
    default_limit: int | None = None,
) -> tuple[EngineConfig, dict[str, str]]:
    """Split the URL query into pool settings and driver parameters, apply keyword overrides.

    Unknown keyword arguments are the caller's business (it knows its own extra keywords).

    Args:
        query: The URL's query parameters.
        overrides: Settings given as keyword arguments; they win over the query.
        default_limit: The dialect's default ``connection_limit``, None for Prisma's.

    Returns:
        The resolved settings, and the query parameters left for the dialect.

    Raises:
        ConfigError: For a bad value, or an override that is not a setting.
    """
    values = dict(DEFAULTS)
    driver_params: dict[str, str] = {}
    for name, raw in query.items():
        parser = SETTINGS.get(name)
        if parser is None:
            driver_params[name] = raw
        else:
            values[name] = parser(name, raw)
    for name, value in overrides.items():
        parser = SETTINGS.get(name)
        if parser is None:
            raise ConfigError(
                f"Unknown setting {name!r}; the settings are: {', '.join(SETTINGS)}."
                + did_you_mean(name, SETTINGS)
            )
        values[name] = parser(name, value)
    if "connection_limit" not in values:
        values["connection_limit"] = default_limit or default_connection_limit()
    return EngineConfig(**values), driver_params


def reject_unknown_params(params: Iterable[str], accepted: Iterable[str], *, dialect: str) -> None:
    """Refuse query parameters that are neither pool settings nor the driver's.

    Args:
        params: The query parameters left for the dialect.
        accepted: The parameters its driver takes.
        dialect: The dialect's name, for the message.

    Raises:
        ConfigError: For the first unknown parameter, with a "did you mean".
    """
    allowed = set(accepted)
    for name in params:
        if name not in allowed:
            hint = did_you_mean(name, list(SETTINGS)) or did_you_mean(name, allowed)
            raise ConfigError(
                f"Unknown query parameter {name!r} in the {dialect} URL: it is neither a pool "
                f"setting nor accepted by the {dialect} driver.{hint}"
            )
