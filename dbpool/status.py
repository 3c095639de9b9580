"""PoolStatus: a snapshot of a pool's counts, and the HTML table a notebook shows for it.

It sits at the bottom of the package (it imports nothing of dbpool), so the pool, the
engine, the metrics and the display code all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


def html_table(title: str, rows: list[tuple[str, object]]) -> str:
    """A two-column HTML table of ``rows`` (name, value) under the caption ``title``.

    Args:
        title: the caption.
        rows: (name, value) pairs; both are shown with ``str()`` and escaped.

    Returns:
        The table as HTML.
    """
    body = "".join(
        f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
        f"<td style='text-align:left'>{escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption>{escape(title)}</caption>{body}</table>"


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of a pool's counts, taken under the pool lock by `status()`.

    The counts are consistent with each other: ``open == busy + idle`` and
    ``opened_total - closed_total == open``. Jupyter shows it as a table.

    Attributes:
        connection_limit: the most connections the pool opens at once.
        open: connections open now (idle or checked out; not those being opened).
        busy: connections checked out now.
        idle: connections open and waiting in the pool to be checked out.
        waiting: callers queued for a connection now.
        opened_total: connections opened since the pool was made.
        closed_total: connections closed since the pool was made.
        timeouts_total: checkouts that gave up after ``pool_timeout``
            (`PoolTimeoutError`).

    Example:
        ```python
        status = engine.status()
        print(f"{status.busy}/{status.connection_limit} busy, {status.waiting} waiting")
        ```
    """

    connection_limit: int
    open: int
    busy: int
    idle: int
    waiting: int
    opened_total: int
    closed_total: int
    timeouts_total: int

    def _repr_html_(self) -> str:
        return html_table("PoolStatus", list(vars(self).items()))
