"""A seatbelt for PostgreSQL behind PgBouncer in transaction or statement mode.

With ``pgbouncer=true`` every transaction (statement mode: every statement) may run on a
different server connection, and the server connection goes on to serve other clients.
Whatever a statement leaves in the server *session* then either leaks to other clients
or is gone the next time: measured through PgBouncer 1.18 in transaction mode, a
``SET search_path`` or ``SET statement_timeout`` showed up in another client's session,
``pg_try_advisory_lock`` succeeded for two clients at once, another client could
``FETCH`` from a ``WITH HOLD`` cursor and read a temporary table, and ``LISTEN`` never
delivered. None of these fail on their own, so the PostgreSQL dialect connects with the
cursor class made here, which refuses them before they reach PgBouncer, with
``NotSupportedError`` naming the statement kind and the way out (``engine.direct()``).

What is refused (outside string literals and comments; each statement of a
multi-statement string):

* ``SET`` of a session setting, and ``set_config(name, value, false)`` with a literal
  ``false``. Not ``SET LOCAL``, ``SET TRANSACTION``, ``SET CONSTRAINTS``, nor the
  settings PgBouncer itself keeps per client (it reapplies them when it hands a server
  connection over): ``client_encoding`` (``SET NAMES``), ``DateStyle``, ``TimeZone``
  (``SET TIME ZONE``), ``standard_conforming_strings``, and ``application_name`` when the
  client sent one at login.
* ``LISTEN``; ``PREPARE`` (not ``PREPARE TRANSACTION``); ``DECLARE ... WITH HOLD``;
  ``CREATE TEMP TABLE/VIEW/SEQUENCE`` unless ``ON COMMIT DROP``.
* a call of ``pg_advisory_lock``, ``pg_try_advisory_lock`` or their ``_shared`` forms
  (the ``_xact_`` ones end with the transaction and are fine).

It is a seatbelt, not a parser: session state made inside a function body, a ``DO``
block, through ``SELECT ... INTO TEMP`` or with a bound ``is_local`` is not seen. Only
engines with ``pgbouncer=true`` use this class; each distinct SQL text is examined once.

PgBouncer's statement mode refuses transactions itself, by closing the client connection
with "transaction blocks not allowed in statement pooling mode", and a statement that
waited longer than PgBouncer's ``query_wait_timeout`` for a server connection fails with
just "query_wait_timeout"; the cursor adds what to do about either to the message.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from dbpool.exc import NotSupportedError
from dbpool.sql import code_only

# Settings PgBouncer (1.18 and later) tracks per client: on handing a server connection
# to a client it first sets these to the client's values, so a SET of one stays private.
TRACKED_SETTINGS = frozenset(
    {"client_encoding", "datestyle", "timezone", "standard_conforming_strings"}
)

_SET = re.compile(r"\s*SET\s+(?:(SESSION|LOCAL)\s+)?(\w+)(?:\s+(\w+))?", re.IGNORECASE)
_SET_ALIASES = {"names": "client_encoding", "schema": "search_path"}
_STATEMENTS = (
    (re.compile(r"\s*LISTEN\b", re.IGNORECASE), "LISTEN"),
    (re.compile(r"\s*PREPARE\s+(?!TRANSACTION\b)\w", re.IGNORECASE), "PREPARE"),
    (
        re.compile(r"\s*DECLARE\b.*?\bWITH\s+HOLD\b", re.IGNORECASE | re.DOTALL),
        "DECLARE ... WITH HOLD",
    ),
)
_CREATE_TEMP = re.compile(
    r"\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP|TEMPORARY)\s+"
    r"(?:UNLOGGED\s+)?(TABLE|VIEW|SEQUENCE|RECURSIVE\s+VIEW)\b",
    re.IGNORECASE,
)
_ON_COMMIT_DROP = re.compile(r"\bON\s+COMMIT\s+DROP\b", re.IGNORECASE)
_SESSION_FUNCTIONS = re.compile(
    r"(?<![\w$.])(pg_(?:try_)?advisory_lock(?:_shared)?|set_config)\s*\(", re.IGNORECASE
)
# set_config(name, value, is_local) with a literal false as the last argument.
_SET_CONFIG_SESSION = re.compile(r"\((?:[^()]|%\(\w+\)s)*,\s*false\s*\)", re.IGNORECASE)

_WHY = {
    "SET": "the setting would stay on the server connection, which PgBouncer then hands to "
    "other clients, while this client's next transaction may run elsewhere; use SET LOCAL "
    "inside a transaction, or ALTER ROLE ... SET for every connection",
    "LISTEN": "notifications would reach whichever client holds that server connection "
    "next, or nobody",
    "PREPARE": "the prepared statement stays on one server connection, and the next "
    "EXECUTE may run on another (or another client's)",
    "DECLARE ... WITH HOLD": "the cursor outlives the transaction on a server connection "
    "that other clients share",
    "CREATE TEMP": "the temporary object outlives the transaction on a server connection "
    "that other clients share; inside a transaction, ON COMMIT DROP is fine",
    "advisory lock": "a session-level lock stays with the server connection, which other "
    "clients then share (they would get the same lock); use pg_advisory_xact_lock inside "
    "a transaction",
    "set_config": "a session-level setting stays on the server connection, which "
    "PgBouncer then hands to other clients; pass is_local = true inside a transaction",
}

# PgBouncer's own errors (SQLSTATE 08P01, and it closes the client connection).
_STATEMENT_MODE = "statement pooling mode"
_QUERY_WAIT = "query_wait_timeout"
STATEMENT_MODE_HINT = (
    "PgBouncer in statement mode runs each statement in autocommit and allows no "
    "transactions: use isolation_level=AUTOCOMMIT, neither engine.begin() nor "
    "Connection.begin(), and engine.direct() (or a transaction-mode PgBouncer) for "
    "transactions"
)
QUERY_WAIT_HINT = (
    "PgBouncer found no free server connection within its query_wait_timeout (all of "
    "its default_pool_size were busy); dbpool's pool_timeout does not cover this wait. "
    "Give PgBouncer more server connections, or shorten the transactions that hold them"
)


@functools.lru_cache(maxsize=1024)
def session_state(sql: str, tracked: frozenset[str] = TRACKED_SETTINGS) -> str | None:
    """The kind of session-level state ``sql`` would leave on the server connection
    (``"SET search_path"``, ``"LISTEN"``, ``"pg_advisory_lock()"``, ...), or None."""
    code = code_only(sql)
    for statement in code.split(";"):
        kind = _statement_kind(statement, tracked)
        if kind is not None:
            return kind
    for call in _SESSION_FUNCTIONS.finditer(code):
        name = call.group(1).lower()
        if name != "set_config":
            return f"{name}()"
        if _SET_CONFIG_SESSION.match(code, call.end() - 1):
            return "set_config(..., false)"
    return None


def _statement_kind(statement: str, tracked: frozenset[str]) -> str | None:
    match = _SET.match(statement)
    if match is not None:
        scope, name, following = match.group(1), match.group(2).lower(), match.group(3)
        if scope is not None and scope.lower() == "local":
            return None
        if scope is None and name in ("transaction", "constraints"):
            return None
        if name == "time" and following is not None and following.lower() == "zone":
            name = "timezone"
        if _SET_ALIASES.get(name, name) in tracked:
            return None
        return f"SET {'SESSION ' if scope else ''}{match.group(2)}"
    for pattern, kind in _STATEMENTS:
        if pattern.match(statement):
            return kind
    match = _CREATE_TEMP.match(statement)
    if match is not None and not _ON_COMMIT_DROP.search(statement):
        return f"CREATE TEMP {match.group(1).upper()}"
    return None


def refusal(kind: str, sql: str) -> NotSupportedError:
    """The error for running ``sql``, which leaves ``kind`` of session state, through
    PgBouncer."""
    if kind.startswith("SET"):
        why = _WHY["SET"]
    elif kind.startswith("CREATE TEMP"):
        why = _WHY["CREATE TEMP"]
    elif kind.startswith("pg_"):
        why = _WHY["advisory lock"]
    elif kind.startswith("set_config"):
        why = _WHY["set_config"]
    else:
        why = _WHY[kind]
    return NotSupportedError(
        f"{kind} does not work through PgBouncer in transaction or statement mode "
        f"(pgbouncer=true): {why}. Run it on a direct connection to the server instead: "
        f"`with engine.direct() as conn:` (create_engine(..., direct_url=...) or "
        f"DIRECT_URL)\n[SQL: {sql}]",
        statement=sql,
    )


@functools.cache
def guarded_cursor(base: type[Any], dbapi: Any, tracked: frozenset[str]) -> type[Any]:
    """A subclass of the psycopg cursor class ``base`` that refuses session-level
    statements, and says what to do about PgBouncer's own refusals (a transaction in
    statement mode, a wait past ``query_wait_timeout``)."""
    execute = base.execute
    executemany = base.executemany
    protocol_violation = dbapi.errors.ProtocolViolation

    def explained(exc: BaseException) -> BaseException:
        message = str(exc)
        if _STATEMENT_MODE in message:
            hint = STATEMENT_MODE_HINT
        elif message.strip() == _QUERY_WAIT:
            hint = QUERY_WAIT_HINT
        else:
            return exc
        # Still a ProtocolViolation (SQLSTATE 08P01): PgBouncer has closed this client
        # connection, and the engine must discard it as lost.
        better: BaseException = protocol_violation(f"{message}: {hint}")
        return better

    def guarded(method: Any, cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(query, str):
            kind = session_state(query, tracked)
            if kind is not None:
                raise refusal(kind, query)
        try:
            return method(cursor, query, *args, **kwargs)
        except protocol_violation as exc:
            better = explained(exc)
            if better is exc:
                raise
            raise better from exc

    class PgBouncerCursor(base):  # type: ignore[misc]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return guarded(execute, self, query, params, **kwargs)

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any:
            return guarded(executemany, self, query, params_seq, **kwargs)

    PgBouncerCursor.__name__ = PgBouncerCursor.__qualname__ = f"PgBouncer{base.__name__}"
    return PgBouncerCursor
