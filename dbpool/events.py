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
    """The pool's event listeners: ``engine.events`` and ``pool.events``.

    Listeners are called outside the pool lock, in the thread where the event happens;
    one that raises is logged and ignored. The events and what their listeners get:

    | event | arguments |
    |---|---|
    | `connect` | the new driver connection, before its first use |
    | `checkout` | the driver connection handed out |
    | `checkin` | the driver connection given back (after its reset) |
    | `close` | the driver connection just closed |
    | `invalidate` | the driver connection, and the exception or None |
    | `timeout` | the seconds the caller waited before `PoolTimeoutError` |

    Each event is also an attribute holding its listeners as a tuple (``events.connect``),
    so the pool pays nothing for an event nobody listens to.

    Attributes:
        connect: The listeners of ``connect``, a tuple; change it with ``on`` and ``remove``.
        checkout: The listeners of ``checkout``.
        checkin: The listeners of ``checkin``.
        close: The listeners of ``close``.
        invalidate: The listeners of ``invalidate``.
        timeout: The listeners of ``timeout``.

    Example:
        ```python
        @engine.events.on("connect")
        def set_pragmas(dbapi_connection):
            dbapi_connection.execute("PRAGMA foreign_keys = ON")

        engine.events.on("timeout", lambda waited: log.warning("waited %.1f s", waited))
        ```
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
        """Add a listener for an event; without ``fn``, return a decorator that adds one.

        Args:
            name: The event: ``connect``, ``checkout``, ``checkin``, ``close``,
                ``invalidate`` or ``timeout``.
            fn: The listener, called with the event's arguments (see above).

        Returns:
            ``fn`` itself; without ``fn``, a decorator that adds the function it decorates
            and returns it.

        Raises:
            ConfigError: For an unknown event name (with a "did you mean").
        """
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
        """Remove a listener added with [`on`][dbpool.Events.on].

        Args:
            name: The event it listens to.
            fn: The listener; one that was not added is ignored.
        """
        setattr(self, name, tuple(f for f in getattr(self, name) if f is not fn))

    def fire(self, name: str, *args: Any) -> None:
        """Call the listeners of an event, as the pool does when it happens.

        A listener that raises is logged on the ``dbpool`` logger and the others still run.

        Args:
            name: The event.
            *args: The arguments the event's listeners take.
        """
        for fn in getattr(self, name):
            try:
                fn(*args)
            except Exception:
                logger.exception("%s listener %r raised; ignored", name, fn)
