"""Pool errors as Django code expects them: also Django's ``OperationalError``."""

from __future__ import annotations

from django.db.utils import OperationalError

from dbpool.exc import PoolDisposedError, PoolTimeoutError


class PoolTimeout(PoolTimeoutError, OperationalError):
    """No connection became free within ``pool_timeout``: both dbpool's ``P2024`` error
    and Django's ``OperationalError``, so either ``except`` clause catches it."""


class PoolDisposed(PoolDisposedError, OperationalError):
    """The pool was disposed while waiting for a connection (also Django's
    ``OperationalError``)."""
