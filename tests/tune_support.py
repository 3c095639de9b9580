"""Units of work for the ``dbpool tune --callable`` tests (importable as
``tests.tune_support:NAME`` from the repository root)."""

from __future__ import annotations

import time

from dbpool import Connection, text


def select_one(conn: Connection) -> None:
    """One round trip."""
    conn.execute(text("SELECT 1"))


def hold(conn: Connection) -> None:
    """Keep the connection 50 ms with the GIL released, as a slow query does, so that
    callers queue behind a small pool."""
    conn.execute(text("SELECT 1"))
    time.sleep(0.05)


def fail(conn: Connection) -> None:
    """Always fails, as a unit of work hitting a bug does."""
    raise RuntimeError("the unit of work failed on purpose")


NOT_CALLABLE = 42
