"""Pool event listeners: ``engine.events.on("checkout", fn)``.

Listeners are kept as tuples on attributes named after the events, so the pool's hot
path tests ``if events.checkout:`` and pays nothing when nobody listens. They are always
called outside the pool lock; a listener that raises is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

logger = logging.getLogger("dbpool")

EVENT_NAMES = ("connect", "checkout", "checkin", "close", "invalidate", "timeout")

Listener = TypeVar("Listener", bound=Callable[..., Any])


class Events:
    """Listeners by event name.

    ``connect(dbapi_connection)``, ``checkout(dbapi_connection)``,
    ``checkin(dbapi_connection)``, ``close(dbapi_connection)``,
    ``invalidate(dbapi_connection, exception_or_None)``, ``timeout(waited_seconds)``.
    """

    __slots__ = EVENT_NAMES
    connect: tuple[Callable[..., Any], ...]
    checkout: tuple[Callable[..., Any], ...]
    checkin: tuple[Callable[..., Any], ...]
    close: tuple[Callable[..., Any], ...]
    invalidate: tuple[Callable[..., Any], ...]
    timeout: tuple[Callable[..., Any], ...]

    def __init__(self) -> None:
        for name in EVENT_NAMES:
            setattr(self, name, ())

    @overload
    def on(self, name: str) -> Callable[[Listener], Listener]: ...

    @overload
    def on(self, name: str, fn: Listener) -> Listener: ...

    def on(self, name: str, fn: Listener | None = None) -> Any:
        """Add a listener; without ``fn``, return a decorator."""
        if name not in EVENT_NAMES:
            from dbpool.config import did_you_mean
            from dbpool.exc import ConfigError

            raise ConfigError(
                f"Unknown event {name!r}; the events are: {', '.join(EVENT_NAMES)}."
                + did_you_mean(name, EVENT_NAMES)
            )
        if fn is None:
            return lambda f: self.on(name, f)
        setattr(self, name, (*getattr(self, name), fn))
        return fn

    def remove(self, name: str, fn: Callable[..., Any]) -> None:
        setattr(self, name, tuple(f for f in getattr(self, name) if f is not fn))

    def fire(self, name: str, *args: Any) -> None:
        for fn in getattr(self, name):
            try:
                fn(*args)
            except Exception:
                logger.exception("%s listener %r raised; ignored", name, fn)
