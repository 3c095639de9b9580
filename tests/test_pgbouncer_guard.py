"""The pgbouncer=true seatbelt (dbpool/dialects/_pgbouncer.py): which statements it
refuses as session-level, and that it never refuses what is fine behind PgBouncer.
Through a real PgBouncer: tests/integration/test_pgbouncer_modes.py."""

from __future__ import annotations

import pytest

from dbpool import NotSupportedError
from dbpool.dialects._pgbouncer import TRACKED_SETTINGS, refusal, session_state
from dbpool.sql import code_only

REFUSED = [
    ("SET search_path = app", "SET search_path"),
    ("set statement_timeout = 1000", "SET statement_timeout"),
    ("SET SESSION work_mem TO '64MB'", "SET SESSION work_mem"),
    ("SET SCHEMA 'app'", "SET SCHEMA"),
    ("SET ROLE reporting", "SET ROLE"),
    ("SET SESSION AUTHORIZATION alice", "SET SESSION AUTHORIZATION"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "SET SESSION CHARACTERISTICS"),
    ("SET IntervalStyle = iso_8601", "SET IntervalStyle"),  # PgBouncer 1.18 does not track it
    ("SET application_name = 'x'", "SET application_name"),  # no name sent at login
    ("  /* setup */ SET search_path = app", "SET search_path"),
    ("SELECT 1; SET search_path = app", "SET search_path"),
    ("LISTEN orders", "LISTEN"),
    ('listen "Orders"', "LISTEN"),
    ("PREPARE q (int) AS SELECT $1", "PREPARE"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DECLARE ... WITH HOLD"),
    ("DECLARE c NO SCROLL CURSOR\n  WITH HOLD FOR SELECT 1", "DECLARE ... WITH HOLD"),
    ("CREATE TEMP TABLE t (a int)", "CREATE TEMP TABLE"),
    ("create temporary table if not exists t (a int) on commit delete rows", "CREATE TEMP TABLE"),
    ("CREATE LOCAL TEMPORARY VIEW v AS SELECT 1", "CREATE TEMP VIEW"),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE TEMP VIEW"),
    ("CREATE TEMP SEQUENCE s", "CREATE TEMP SEQUENCE"),
    ("SELECT pg_advisory_lock(42)", "pg_advisory_lock()"),
    ("SELECT pg_try_advisory_lock(%(key)s)", "pg_try_advisory_lock()"),
    ("SELECT PG_ADVISORY_LOCK_SHARED (1, 2)", "pg_advisory_lock_shared()"),
    ("SELECT pg_try_advisory_lock_shared(1)", "pg_try_advisory_lock_shared()"),
    ('SELECT "pg_advisory_lock"(1)', "pg_advisory_lock()"),
    ("SELECT set_config('search_path', 'app', false)", "set_config(..., false)"),
    ("SELECT set_config('search_path', %(path)s, FALSE)", "set_config(..., false)"),
]

ALLOWED = [
    "SELECT 1",
    "",
    "UPDATE t SET a = 1 WHERE b = 2",
    "INSERT INTO t (a) VALUES (%(a)s) ON CONFLICT (a) DO UPDATE SET a = 2",
    "SET LOCAL search_path = app",
    "set local statement_timeout = 100",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET CONSTRAINTS ALL DEFERRED",
    # The settings PgBouncer keeps per client.
    "SET TIME ZONE 'UTC'",
    "SET timezone = 'Europe/Paris'",
    "SET \"TimeZone\" TO 'UTC'",
    "SET DateStyle = 'ISO, DMY'",
    "SET NAMES 'UTF8'",
    "SET client_encoding = 'UTF8'",
    "SET standard_conforming_strings = on",
    # Keywords that are not code.
    "SELECT 'LISTEN x'",
    "SELECT 'SET search_path = x'",
    "SELECT E'it\\'s; LISTEN x'",
    "SELECT $$; LISTEN x$$",
    "SELECT $tag$pg_advisory_lock(1)$tag$",
    "-- LISTEN x\nSELECT 1",
    "/* SET search_path = x; /* nested */ LISTEN y */ SELECT 1",
    "SELECT 1 AS listen, 2 AS prepare",
    'SELECT "LISTEN" FROM t',
    "NOTIFY orders, 'new'",
    "SELECT pg_notify('orders', 'new')",
    "UNLISTEN *",
    "PREPARE TRANSACTION 'tx1'",
    "DECLARE c CURSOR FOR SELECT 1",
    "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
    "CREATE TABLE temp (a int)",
    "INSERT INTO temp VALUES (1)",
    "SELECT pg_advisory_xact_lock(42)",
    "SELECT pg_try_advisory_xact_lock_shared(42)",
    "SELECT pg_advisory_unlock(42)",
    "SELECT my_pg_advisory_lock(42)",
    "SELECT s.pg_advisory_lock(1) FROM s",
    "SELECT set_config('search_path', 'app', true)",
    "SELECT current_setting('search_path')",
    "SHOW search_path",
    "RESET ALL",
    "DISCARD ALL",
]


@pytest.mark.parametrize(("sql", "kind"), REFUSED)
def test_session_state_is_found(sql: str, kind: str) -> None:
    assert session_state(sql) == kind


@pytest.mark.parametrize("sql", ALLOWED)
def test_what_pgbouncer_handles_is_left_alone(sql: str) -> None:
    assert session_state(sql) is None


def test_application_name_is_tracked_when_sent_at_login() -> None:
    tracked = TRACKED_SETTINGS | {"application_name"}
    assert session_state("SET application_name = 'worker'", tracked) is None
    assert session_state("SET search_path = app", tracked) == "SET search_path"


def test_refusal_names_the_statement_and_the_way_out() -> None:
    error = refusal("LISTEN", "LISTEN orders")
    assert isinstance(error, NotSupportedError)
    message = str(error)
    assert message.startswith("LISTEN does not work through PgBouncer")
    assert "pgbouncer=true" in message and "engine.direct()" in message
    assert message.endswith("[SQL: LISTEN orders]")
    assert error.statement == "LISTEN orders"
    assert "SET LOCAL" in str(refusal("SET search_path", "SET search_path = a"))
    assert "pg_advisory_xact_lock" in str(refusal("pg_advisory_lock()", "SELECT 1"))
    assert "ON COMMIT DROP" in str(refusal("CREATE TEMP TABLE", "SELECT 1"))


def test_code_only_blanks_literals_and_comments() -> None:
    assert code_only("SELECT 'a;b' -- c;\n; x") == "SELECT    ; x"
    assert code_only('SET "TimeZone" = 1') == "SET TimeZone = 1"
    assert code_only('SELECT "odd name;"') == "SELECT _"
    assert code_only("SELECT $q$ ; $q$, a$b, $1") == "SELECT  , a$b, $1"
    assert code_only("SELECT :x::int, \\:y") == "SELECT :x::int, \\:y"
    assert code_only("SELECT 'unterminated; LISTEN") == "SELECT  "
