"""One engine per process: ``shared_engine()``, and a warning when engines multiply.

Every engine is a pool of its own. Code that makes an engine per request, per notebook
cell run or per module reload multiplies the connections one process holds, until the
database refuses more. ``shared_engine(url, **settings)`` returns the same engine for
the same URL and settings for the life of the process; and when more than
``MANY_ENGINES`` engines for one database are alive at once, one warning says so.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
import weakref
from collections.abc import Hashable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from dbpool.exc import ArgumentError
from dbpool.lifecycle import in_dbpool
from dbpool.url import URL, make_url

if TYPE_CHECKING:
    from dbpool.engine import Engine

MANY_ENGINES = 10

_shared: dict[tuple[URL, Hashable], Engine] = {}
_shared_lock = threading.Lock()
_live: dict[tuple[Any, ...], weakref.WeakSet[Engine]] = {}
_live_lock = threading.Lock()
_warned = False


def shared_engine(url: str | URL | None = None, **settings: Any) -> Engine:
    """The process's engine for this URL and these settings, made on the first call.

    Later calls with equal arguments return the same engine, so code that runs again
    in one process (a notebook cell, a reloaded module, a serverless handler) does not
    open another pool each time. The engine lives until the process ends;
    ``dispose()`` closes its connections and it stays usable.

    Args:
        url: The database URL, as for [`create_engine`][dbpool.create_engine]; None
            reads ``DATABASE_URL`` (and ``DIRECT_URL`` with it).
        **settings: Pool settings and ``create_engine`` keywords. Values are compared,
            so they must be hashable, or dicts, lists and tuples of hashable values.

    Returns:
        The engine made for these arguments by the first call.

    Raises:
        ConfigError: As [`create_engine`][dbpool.create_engine] raises it (a bad URL or
            setting, or no URL at all).
        ArgumentError: For a keyword value that cannot be compared.

    Example:
        ```python
        engine = dbpool.shared_engine("sqlite:///app.db")
        assert dbpool.shared_engine("sqlite:///app.db") is engine
        ```
    """
    from dbpool.engine import create_engine

    if url is None:
        url = os.environ.get("DATABASE_URL")
        if not url:
            return create_engine(None, **settings)  # raises the error saying how to give one
        if settings.get("direct_url") is None and os.environ.get("DIRECT_URL"):
            # As create_engine() without a URL: DIRECT_URL goes with DATABASE_URL.
            settings["direct_url"] = os.environ["DIRECT_URL"]
    parsed = make_url(url)
    key = (parsed, tuple(sorted((name, _freeze(name, v)) for name, v in settings.items())))
    with _shared_lock:
        engine = _shared.get(key)
        if engine is None:
            engine = _shared[key] = create_engine(parsed, **settings)
    return engine


def _freeze(name: str, value: Any) -> Hashable:
    """A hashable stand-in for a settings value, equal for equal settings."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(f"{name}[{k!r}]", v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(name, v) for v in value)
    try:
        hash(value)
    except TypeError:
        raise ArgumentError(
            f"shared_engine() needs settings it can compare; {name} is a "
            f"{type(value).__name__}, which is not hashable"
        ) from None
    return value  # type: ignore[no-any-return]


def track(engine: Engine) -> None:
    """Count an engine among the live engines for its database; warn once when too many.

    Args:
        engine: A new engine; held weakly. In-memory SQLite engines are not counted.
    """
    global _warned
    url = engine.url
    if url.backend_name == "sqlite" and url.database in (None, ":memory:"):
        return  # each in-memory SQLite engine has a database of its own
    database = (url.backend_name, url.host, url.port, url.database)
    with _live_lock:
        live = _live.setdefault(database, weakref.WeakSet())
        live.add(engine)
        engines = list(live)
        if len(engines) <= MANY_ENGINES or _warned:
            return
        _warned = True
    most = sum(e.config.connection_limit for e in engines)
    warnings.warn(
        f"{len(engines)} dbpool engines for the same database ({engine.dialect.describe()}) "
        f"are alive in this process. Each engine is a separate pool, so together they may "
        f"open up to {most} connections. Make one engine and share it: "
        "dbpool.shared_engine(url) returns the same engine for the same URL and settings "
        "(notebook re-runs, reloaded modules, serverless handlers); dispose() engines you "
        "are done with. This warning is shown once.",
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside dbpool."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and in_dbpool(frame):
        frame = frame.f_back
        level += 1
    return level
