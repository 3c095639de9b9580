"""SQLite through the standard library's sqlite3: the embedded default.

* The pool hands connections between threads, so they are opened with
  ``check_same_thread=False``; the pool guarantees one user at a time.
* sqlite3's own transaction handling is switched off (``isolation_level=None``) and the
  engine issues ``BEGIN`` itself, so a transaction covers reads too and the driver's
  ``in_transaction`` tells the truth on return.
* ``connect_timeout`` becomes the busy timeout: opening a file is instant, the only wait
  SQLite has is for another connection's lock.
* ``sqlite://`` and ``sqlite:///:memory:`` give one shared-cache memory database per
  engine, kept alive by an anchor connection until the engine is disposed, so every
  pooled connection sees the same tables.
* Default ``connection_limit`` is 1: SQLite admits one writer at a time, and with more
  connections two transactions that both read and then write deadlock at once
  ("database is locked"). One connection turns that into the pool's fair FIFO queue.
  Raise it for read-mostly work, ideally with ``journal_mode=WAL``.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from typing import Any, ClassVar

from dbpool.dialects.base import Dialect
from dbpool.exc import ConfigError, ConnectError

_memory_names = itertools.count(1)

# sqlite3 takes the busy timeout in seconds and stores milliseconds in a C int.
_NO_BUSY_LIMIT = 2_147_483.0

_JOURNAL_MODES = ("DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF")
_URI_PARAMS = ("mode", "cache", "immutable", "nolock", "vfs")


class SQLiteDialect(Dialect):
    name = "sqlite"
    driver = "sqlite3"
    extra = "sqlite"
    paramstyle = "named"
    default_connection_limit: ClassVar[int | None] = 1
    accepted_query_params = frozenset({*_URI_PARAMS, "journal_mode"})
    isolation_levels = ("AUTOCOMMIT", "READ UNCOMMITTED", "SERIALIZABLE")
    begins_implicitly = False  # connections run in sqlite3's autocommit: dbpool says BEGIN
    supports_ping = False  # in-process: there is no link that could break
    # No server: no PgBouncer, no search_path, nothing to ping, no socket to time out and
    # no server-side connection limit to budget for or idle sessions to reap.
    inapplicable_settings = frozenset(
        {"pgbouncer", "schema", "pre_ping", "validation_timeout", "socket_timeout",
         "reap_idle_after", "budget_check"}
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.schema is not None:
            raise ConfigError(
                "schema is a PostgreSQL setting; SQLite has no schemas to search (ATTACH "
                "another database file and name it in the SQL instead)"
            )
        if self.config.pgbouncer:
            raise ConfigError("pgbouncer=true is a PostgreSQL setting; it has no meaning here")
        journal = self.driver_params.get("journal_mode")
        if journal is not None and journal.upper() not in _JOURNAL_MODES:
            raise ConfigError(
                f"journal_mode must be one of {', '.join(_JOURNAL_MODES)}, got {journal!r}"
            )
        database = self.url.database
        self.memory = database in (None, "", ":memory:")
        if self.memory:
            self.target = f"file:dbpool-memory-{os.getpid()}-{next(_memory_names)}"
            uri_params = {"mode": "memory", "cache": "shared"}
        else:
            assert database is not None
            self.target = database
            uri_params = {}
        for key in _URI_PARAMS:
            if key in self.driver_params:
                uri_params[key] = self.driver_params[key]
        self.uri = bool(uri_params) or self.target.startswith("file:")
        if uri_params:
            if not self.target.startswith("file:"):
                self.target = "file:" + self.target
            query = "&".join(f"{k}={v}" for k, v in uri_params.items())
            self.target += ("&" if "?" in self.target else "?") + query
        self._anchor: sqlite3.Connection | None = None
        self._anchor_lock = threading.Lock()

    def describe(self) -> str:
        return "an in-memory database" if self.memory else f"file {self.url.database}"

    def connect(self) -> Any:
        timeout = self.config.connect_timeout or _NO_BUSY_LIMIT
        try:
            conn = sqlite3.connect(
                self.target,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=self.uri,
                **self.connect_args,
            )
        except sqlite3.Error as exc:
            raise ConnectError(
                f"Cannot open the SQLite {self.describe()}: {exc}", orig=exc
            ) from exc
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            journal = self.driver_params.get("journal_mode")
            if journal:
                conn.execute(f"PRAGMA journal_mode = {journal.upper()}")
            if self.config.isolation_level == "READ UNCOMMITTED":
                conn.execute("PRAGMA read_uncommitted = 1")
        except sqlite3.Error as exc:
            conn.close()
            raise ConnectError(
                f"Cannot use the SQLite {self.describe()}: {exc}", orig=exc
            ) from exc
        if self.memory:
            self._keep_memory_database()
        return conn

    def _keep_memory_database(self) -> None:
        # A shared memory database vanishes with its last connection; the janitor may
        # close every pooled one, so an anchor outside the pool keeps the data.
        with self._anchor_lock:
            if self._anchor is None:
                self._anchor = sqlite3.connect(self.target, uri=True, check_same_thread=False)

    def release_resources(self) -> None:
        """Drop the anchor of a memory database (engine disposal)."""
        with self._anchor_lock:
            anchor, self._anchor = self._anchor, None
        if anchor is not None:
            anchor.close()

    def in_transaction(self, conn: Any) -> bool | None:
        return bool(conn.in_transaction)

    def is_disconnect(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.ProgrammingError) and "closed" in str(error)

    def do_begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def begin_explicit(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def end_explicit(self, conn: Any) -> None:
        pass
