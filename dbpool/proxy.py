"""PooledConnection: what a standalone ``QueuePool.connect()`` hands out.

A thin proxy over one checked-out driver connection: ``close()`` gives it back, and if
it is garbage-collected instead, ``__del__`` tells the pool, which reclaims the slot.
"""

from __future__ import annotations

from contextlib import suppress
from types import CodeType
from typing import TYPE_CHECKING, Any

from dbpool.exc import ResourceClosedError

if TYPE_CHECKING:
    from dbpool.pool import QueuePool, _Record

INHERITED_AFTER_FORK = (
    "This connection was checked out before os.fork(): it belongs to the parent process, "
    "and using it here would interleave with the parent on the same socket. Check out a "
    "new one in this process."
)


class PooledConnection:
    """A checked-out DB-API connection; ``close()`` returns it to its pool.

    Unknown attributes are looked up on the driver's connection.
    """

    __slots__ = ("_code", "_line", "_pool", "_record")

    def __init__(self, pool: QueuePool, record: _Record, code: CodeType | None = None,
                 line: int = 0) -> None:  # fmt: skip
        self._pool = pool
        self._record: _Record | None = record
        # Where it was checked out, for the warning if it is garbage-collected unreturned.
        self._code = code
        self._line = line

    @property
    def driver_connection(self) -> Any:
        record = self._record
        if record is None:
            raise ResourceClosedError("This connection has been returned to the pool")
        if record.epoch != self._pool._epoch:
            raise ResourceClosedError(INHERITED_AFTER_FORK)
        return record.dbapi_connection

    @property
    def closed(self) -> bool:
        return self._record is None

    def close(self) -> None:
        """Return the connection to the pool (an error if it was already returned)."""
        record = self._record
        if record is None:
            raise ResourceClosedError("This connection has already been returned to the pool")
        self._record = None
        self._pool.checkin(record)

    def invalidate(self, error: BaseException | None = None) -> None:
        """Close the driver connection instead of returning it; its slot is freed."""
        record = self._record
        if record is None:
            raise ResourceClosedError("This connection has already been returned to the pool")
        self._record = None
        self._pool.invalidate(record, error)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return self.driver_connection.cursor(*args, **kwargs)

    def commit(self) -> None:
        self.driver_connection.commit()

    def rollback(self) -> None:
        self.driver_connection.rollback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver_connection, name)

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._record is not None:
            self.close()

    def __del__(self) -> None:
        record = self._record
        if record is not None:
            self._record = None
            with suppress(Exception):  # at interpreter shutdown modules may be torn down
                self._pool.orphaned(record, self._code, self._line)

    def __repr__(self) -> str:
        state = "returned" if self._record is None else "checked out"
        return f"<PooledConnection {state} from {self._pool.name or 'pool'}>"
