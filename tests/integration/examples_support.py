"""Watching the examples in examples/ from the database server's side.

A program under test gets a URL with a marker that tags its sessions on the server: an
``application_name`` on PostgreSQL (``pg_stat_activity``), a user of its own on MariaDB
(``information_schema.processlist``, which has no application name). A separate
observer engine, in autocommit, counts the sessions with that marker and reads what the
program wrote.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dbpool
from dbpool import make_url, text

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
DEADLINE = 30.0  # seconds for the server to forget closed sessions; usually milliseconds


@dataclass
class Sessions:
    """The server sessions of one program, found by the marker in ``url``."""

    url: str  # what the program connects with (password included)
    password: str  # in ``url``; it must never be printed
    observer: dbpool.Engine
    count_sql: str
    marker: str

    def count(self) -> int:
        with self.observer.connect() as conn:
            return int(conn.execute(text(self.count_sql), {"marker": self.marker}).scalar_one())

    def wait_for(self, wanted: int) -> int:
        """The count once it is ``wanted``, or the last count after ``DEADLINE``."""
        deadline = time.monotonic() + DEADLINE
        while (count := self.count()) != wanted and time.monotonic() < deadline:
            time.sleep(0.02)
        return count

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        with self.observer.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def run(self, sql: str) -> None:
        with self.observer.connect() as conn:
            conn.execute(text(sql))


def observer_engine(url: str) -> dbpool.Engine:
    return dbpool.create_engine(url, connection_limit=1, isolation_level="AUTOCOMMIT")


def postgres_sessions(admin_url: str, application_name: str, password: str) -> Sessions:
    # Trust authentication ignores the password; it is there to be looked for in output.
    url = (
        make_url(admin_url)
        .set(password=password)
        .update_query({"application_name": application_name})
    )
    return Sessions(
        url=url.render_as_string(hide_password=False),
        password=password,
        observer=observer_engine(admin_url),
        count_sql="SELECT count(*) FROM pg_stat_activity WHERE application_name = :marker",
        marker=application_name,
    )


def mariadb_sessions(admin_url: str, user: str, password: str) -> Sessions:
    url = make_url(admin_url).set(username=user, password=password)
    return Sessions(
        url=url.render_as_string(hide_password=False),
        password=password,
        observer=observer_engine(admin_url),
        count_sql="SELECT COUNT(*) FROM information_schema.processlist WHERE user = :marker",
        marker=user,
    )
