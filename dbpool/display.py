"""HTML tables for Jupyter (``_repr_html_``): settings and live counts, never a password."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dbpool.engine import Engine
    from dbpool.pool import PoolStatus


def _table(title: str, rows: list[tuple[str, object]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
        f"<td style='text-align:left'>{escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption>{escape(title)}</caption>{body}</table>"


def status_html(status: PoolStatus) -> str:
    return _table("PoolStatus", list(vars(status).items()))


def engine_html(engine: Engine) -> str:
    settings = [
        (name, "default" if value is None else value) for name, value in engine.config.items()
    ]
    counts = list(vars(engine.status()).items())
    return _table(f"Engine {engine.url}", [("url", engine.url), *settings, *counts])
