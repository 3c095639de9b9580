"""Errors raised on a raw DB-API handle that are also the driver's own PEP 249 errors.

PEP 249 says a connection used after ``close()`` raises the driver's ``Error`` (or a
subclass). Code written against a driver catches ``driver.Error``; a pooled
connection used after it went back to the pool must be caught there too, and by
``dbpool.ResourceClosedError``. So the error is a class that derives from both, made
once per driver and cached.
"""

from __future__ import annotations

import sys
from typing import Any

from dbpool.exc import ResourceClosedError

# The driver's base error class -> the ResourceClosedError that also derives from it.
_closed_errors: dict[type[BaseException], type[ResourceClosedError]] = {}
# The driver connection class -> its driver's base error class (None: none found).
_driver_errors: dict[type, type[BaseException] | None] = {}


def driver_error_class(connection_type: type) -> type[BaseException] | None:
    """The driver's ``InterfaceError`` (else ``Error``) for connections of this class.

    Found in the module that defines the class or in a package above it (PyMySQL's
    connection lives in ``pymysql.connections``, its errors in ``pymysql``), for the
    class and its bases (a driver connection subclassed elsewhere); None when no
    module on the way has one, as for an arbitrary ``creator``'s objects.
    """
    try:
        return _driver_errors[connection_type]
    except KeyError:
        pass
    found: type[BaseException] | None = None
    for klass in connection_type.__mro__:
        found = _module_error(klass.__module__)
        if found is not None:
            break
    _driver_errors[connection_type] = found
    return found


def _module_error(module_name: str) -> type[BaseException] | None:
    name = module_name
    while name and name != "builtins":
        if name == "dbpool" or name.startswith("dbpool."):
            return None  # dbpool's own Error is not the driver's
        module = sys.modules.get(name)
        for attribute in ("InterfaceError", "Error"):
            candidate = getattr(module, attribute, None)
            if isinstance(candidate, type) and issubclass(candidate, Exception):
                return candidate
        name = name.rpartition(".")[0]
    return None


def closed_error(connection_type: type | None, message: str) -> ResourceClosedError:
    """A ``ResourceClosedError`` that is also the driver's error, when there is one."""
    base = None if connection_type is None else driver_error_class(connection_type)
    if base is None:
        return ResourceClosedError(message)
    return closed_error_class(base)(message)


def closed_error_class(base: type[BaseException]) -> type[ResourceClosedError]:
    """``ResourceClosedError`` and ``base`` in one class, cached per ``base``."""
    try:
        return _closed_errors[base]
    except KeyError:
        pass
    klass: type[ResourceClosedError]
    try:
        klass = type(
            "ResourceClosedError",
            (ResourceClosedError, base),
            {
                "__module__": "dbpool",
                "__doc__": f"A pooled connection used after it was returned; also a "
                f"{base.__module__}.{base.__qualname__}.",
                "__reduce__": _reduce,
                "driver_error": base,
            },
        )
    except TypeError:  # a C base whose instance layout cannot be combined with ours
        klass = ResourceClosedError
    return _closed_errors.setdefault(base, klass)


def _reduce(error: BaseException) -> tuple[Any, ...]:
    # The class is made at run time, so pickle (multiprocessing, concurrent.futures)
    # cannot find it by name: rebuild it from the driver's class, which it can.
    return _rebuild, (type(error).driver_error, error.args)  # type: ignore[attr-defined]


def _rebuild(base: type[BaseException], args: tuple[Any, ...]) -> ResourceClosedError:
    return closed_error_class(base)(*args)
