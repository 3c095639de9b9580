"""HTML tables for Jupyter (``_repr_html_``): settings and live counts, never a password,
and the first rows of a query result."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

# PoolStatus's own table lives beside it, in a module the pool can import (this one is
# engine-level); the engine's table is built the same way.
from dbpool.status import html_table as _table

if TYPE_CHECKING:
    from dbpool.engine import Engine


def engine_html(engine: Engine) -> str:
    """``Engine._repr_html_``: URL (password hidden), settings and the pool's counts."""
    settings = [
        (name, "default" if value is None else value) for name, value in engine.config.items()
    ]
    counts = list(vars(engine.status()).items())
    urls: list[tuple[str, object]] = [("url", engine.url)]
    if engine.direct_url is not None:  # str() hides the password, as for url
        urls.append(("direct_url", engine.direct_url))
    return _table(f"Engine {engine.url}", [*urls, *settings, *counts])


# A notebook shows a result's first rows only: enough to see its shape, never a page of
# ten thousand rows (nor a value of a megabyte) in the notebook file.
RESULT_MAX_ROWS = 20
RESULT_MAX_CHARS = 200


def _cell(value: object) -> str:
    if value is None:
        return "<td><i>NULL</i></td>"
    text = str(value)
    if len(text) > RESULT_MAX_CHARS:
        text = text[: RESULT_MAX_CHARS - 1] + "…"
    return f"<td>{escape(text)}</td>"


def result_html(keys: Sequence[str], rows: Sequence[Sequence[object]], start: int = 0) -> str:
    """``Result._repr_html_``: the rows not read yet, as a table.

    Args:
        keys: The column names.
        rows: All the result's rows.
        start: How many were already fetched; the table starts after them.

    Returns:
        A table of at most ``RESULT_MAX_ROWS`` rows under the column names, with the
        total, HTML-escaped and long values cut.
    """
    total = len(rows) - start
    shown = rows[start : start + RESULT_MAX_ROWS]
    caption = f"Result: {total} row{'' if total == 1 else 's'}"
    if total > len(shown):
        caption += f", showing {len(shown)}"
    if start:
        caption += f" ({start} already fetched)"
    head = "".join(f"<th>{escape(str(key))}</th>" for key in keys)
    body = "".join(f"<tr>{''.join(_cell(v) for v in row)}</tr>" for row in shown)
    if total > len(shown):
        more = total - len(shown)
        body += (
            f"<tr><td colspan='{max(len(keys), 1)}'><i>… {more} more "
            f"row{'' if more == 1 else 's'}</i></td></tr>"
        )
    return (
        f"<table><caption>{escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
