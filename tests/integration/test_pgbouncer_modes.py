"""dbpool's features through a real PgBouncer in transaction mode and in statement mode
(autocommit only), as docs/scaling.md "Adding PgBouncer" promises: what it says works
does, and what it says breaks fails with a clear error instead of silently.

The PgBouncers come from tests/conftest.py (``pgbouncer_url`` is transaction mode,
``pgbouncer_statement_url`` statement mode, ``pgbouncer_session_url`` session mode);
a test that needs two clients on one server connection starts its own with a pool of 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dbpool
from dbpool import Engine, text
from tests import pgbouncer
from tests.engines import engine_for
from tests.integration.targets import with_query
from tests.servers import POSTGRES_URL

psycopg = pytest.importorskip("psycopg")

TAG = "dbpool_bouncer"
TABLE = f"{TAG}_modes"


def bouncer_engine(engines: list[Engine], url: str, **settings: Any) -> Engine:
    settings.setdefault("pool_timeout", 30)
    settings.setdefault("connection_limit", 4)
    return engine_for(engines, with_query(url, pgbouncer="true"), **settings)


@pytest.fixture
def table() -> Iterator[str]:
    """A table of (n int), made and dropped on the server directly."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (n int)")
    yield TABLE
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


@pytest.fixture
def one_server_bouncer() -> Iterator[pgbouncer.PgBouncer]:
    """A private PgBouncer in transaction mode with ONE server connection, so two clients
    take turns on the same server session (what leaks, leaks to the other)."""
    try:
        bouncer = pgbouncer.start(POSTGRES_URL, pool_mode="transaction", pool_size=1)
    except pgbouncer.PgBouncerUnavailable as exc:
        pytest.skip(str(exc))
    yield bouncer
    bouncer.stop()


# -- transaction mode: what works ----------------------------------------------------------


def test_queries_binds_and_commit_as_you_go(
    pgbouncer_url: str, engines: list[Engine], table: str
) -> None:
    engine = bouncer_engine(engines, pgbouncer_url)
    with engine.connect() as conn:
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": 1})
        conn.commit()
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": 2})
        conn.rollback()
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), [{"n": 3}, {"n": 4}])
        conn.commit()
        rows = conn.execute(text(f"SELECT n FROM {table} WHERE n >= :low ORDER BY n"),
                            {"low": 0}).scalars().all()  # fmt: skip
        assert rows == [1, 3, 4]
        text_value = text("SELECT :s::text || '::' || :s::text AS v")
        assert conn.execute(text_value, {"s": "a'b"}).scalar() == "a'b::a'b"
        conn.commit()


def test_begin_keeps_one_server_connection_and_rolls_back(
    pgbouncer_url: str, engines: list[Engine], table: str
) -> None:
    engine = bouncer_engine(engines, pgbouncer_url)
    with engine.begin() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (10)"))
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (11)"))
        raise ZeroDivisionError
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT n FROM {table}")).scalars().all() == [10]


def test_statements_run_often_are_never_prepared(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    # psycopg prepares a statement on its 5th run; PgBouncer 1.18 in transaction mode would
    # then send the EXECUTE to a server connection that never saw the PREPARE.
    engine = bouncer_engine(engines, pgbouncer_url, isolation_level="AUTOCOMMIT")
    first, second = engine.connect(), engine.connect()
    try:
        assert first.driver_connection.prepare_threshold is None
        for i in range(12):
            for conn in (first, second):
                assert conn.execute(text("SELECT :i::int * 2"), {"i": i}).scalar() == i * 2
    finally:
        first.close()
        second.close()


def test_pre_ping_and_both_timeouts(pgbouncer_url: str, engines: list[Engine]) -> None:
    engine = bouncer_engine(engines, pgbouncer_url, pre_ping=0, validation_timeout=2,
                            socket_timeout=0.5, connection_limit=1)  # fmt: skip
    for _ in range(3):  # pinged at every checkout, through PgBouncer
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            conn.commit()
    assert engine.status().opened_total == 1
    with engine.connect() as conn:
        with pytest.raises(dbpool.OperationalError, match="socket_timeout") as caught:
            conn.execute(text("SELECT pg_sleep(3)"))
        assert caught.value.connection_invalidated
        conn.rollback()
        assert conn.execute(text("SELECT 2")).scalar() == 2  # a fresh connection
        conn.commit()


def test_schema_is_refused_at_create_engine(pgbouncer_url: str) -> None:
    with pytest.raises(dbpool.ConfigError, match="schema cannot be used with pgbouncer=true"):
        dbpool.create_engine(with_query(pgbouncer_url, pgbouncer="true", schema="app"))


def test_set_local_and_transaction_scoped_state_work(
    pgbouncer_url: str, engines: list[Engine]
) -> None:
    engine = bouncer_engine(engines, pgbouncer_url)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 1234"))
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
        conn.execute(text("CREATE TEMP TABLE dbpool_bouncer_scratch (a int) ON COMMIT DROP"))
        conn.execute(text("INSERT INTO dbpool_bouncer_scratch VALUES (1), (2)"))
        assert conn.execute(text("SELECT count(*) FROM dbpool_bouncer_scratch")).scalar() == 2
        conn.execute(text("DECLARE dbpool_bouncer_cursor CURSOR FOR SELECT generate_series(1, 3)"))
        assert conn.execute(text("FETCH 2 FROM dbpool_bouncer_cursor")).scalars().all() == [1, 2]
        assert conn.execute(text("SELECT pg_try_advisory_xact_lock(90210)")).scalar() is True
        with engine.connect() as other:  # the lock is held until this transaction ends
            locked = text("SELECT pg_try_advisory_xact_lock(90210)")
            assert other.execute(locked).scalar() is False
            other.rollback()
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
        assert conn.execute(text("SELECT pg_try_advisory_xact_lock(90210)")).scalar() is True
        conn.commit()


def test_settings_pgbouncer_keeps_per_client_stay_private(
    one_server_bouncer: pgbouncer.PgBouncer, engines: list[Engine]
) -> None:
    engine = bouncer_engine(engines, one_server_bouncer.url, isolation_level="AUTOCOMMIT")
    first, second = engine.connect(), engine.connect()
    try:
        first.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
        first.execute(text("SET application_name = 'dbpool_bouncer_renamed'"))
        for _ in range(2):
            assert first.execute(text("SHOW TimeZone")).scalar() == "Asia/Tokyo"
            assert second.execute(text("SHOW TimeZone")).scalar() != "Asia/Tokyo"
            name = second.execute(text("SHOW application_name")).scalar()
            assert name == engine.dialect.application_name
    finally:
        first.close()
        second.close()


def test_notify_works(pgbouncer_url: str, engines: list[Engine]) -> None:
    engine = bouncer_engine(engines, pgbouncer_url, isolation_level="AUTOCOMMIT")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as listener:
        listener.execute("LISTEN dbpool_bouncer_channel")
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_notify('dbpool_bouncer_channel', :m)"), {"m": "hello"})
            conn.execute(text("NOTIFY dbpool_bouncer_channel, 'again'"))
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    assert got == ["hello", "again"]


def test_returned_connections_never_hold_a_server_in_a_transaction(
    pgbouncer_url: str, engines: list[Engine], table: str
) -> None:
    # dbpool's reset on return rolls back what a client left open, so PgBouncer gets the
    # server connection back: far more clients than servers never wait on each other.
    engine = bouncer_engine(engines, pgbouncer_url, connection_limit=8)
    for i in range(16):
        conn = engine.connect()
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": i})
        conn.close()  # uncommitted
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
        conn.commit()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        stuck = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%' "
            "AND application_name = %s", (engine.dialect.application_name,),
        ).fetchone()  # fmt: skip
    assert stuck == (0,)


def test_waiting_past_query_wait_timeout_says_so(
    one_server_bouncer: pgbouncer.PgBouncer, engines: list[Engine]
) -> None:
    with psycopg.connect(one_server_bouncer.admin_url, autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:  # fmt: skip
        admin.execute("SET query_wait_timeout = 1")
    engine = bouncer_engine(engines, one_server_bouncer.url, pre_ping=False)
    holder = engine.connect()
    holder.execute(text("SELECT 1"))  # a transaction holds PgBouncer's only server
    try:
        with engine.connect() as conn:
            with pytest.raises(dbpool.OperationalError) as caught:
                conn.execute(text("SELECT 2"))
            conn.rollback()
    finally:
        holder.close()
    message = str(caught.value)
    assert "query_wait_timeout" in message and "pool_timeout does not cover" in message
    assert caught.value.connection_invalidated  # PgBouncer closed that client connection
    with engine.connect() as conn:  # the server is free again
        assert conn.execute(text("SELECT 3")).scalar() == 3
        conn.commit()


# -- transaction mode: what breaks, refused with a clear error -------------------------------

REFUSED = [
    ("SET search_path = public", "SET search_path"),
    ("SET statement_timeout = 1000", "SET statement_timeout"),
    ("LISTEN dbpool_bouncer_channel", "LISTEN"),
    ("SELECT pg_advisory_lock(90211)", "pg_advisory_lock()"),
    ("SELECT pg_try_advisory_lock(90211)", "pg_try_advisory_lock()"),
    ("PREPARE dbpool_bouncer_statement AS SELECT 1", "PREPARE"),
    ("CREATE TEMP TABLE dbpool_bouncer_temp (a int)", "CREATE TEMP TABLE"),
    ("DECLARE dbpool_bouncer_held CURSOR WITH HOLD FOR SELECT 1", "DECLARE ... WITH HOLD"),
    ("SELECT set_config('search_path', 'public', false)", "set_config(..., false)"),
]


@pytest.mark.parametrize(("sql", "kind"), REFUSED)
@pytest.mark.parametrize("isolation_level", [None, "AUTOCOMMIT"])
def test_session_state_is_refused_before_it_reaches_pgbouncer(
    pgbouncer_url: str, engines: list[Engine], sql: str, kind: str, isolation_level: str | None
) -> None:
    engine = bouncer_engine(engines, pgbouncer_url, isolation_level=isolation_level)
    with engine.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.commit()
        with pytest.raises(dbpool.NotSupportedError) as caught:
            conn.exec_driver_sql(sql)
        message = str(caught.value)
        assert message.startswith(f"{kind} does not work through PgBouncer")
        assert "engine.direct()" in message
        conn.rollback()
        # Nothing was sent, and the connection goes on working.
        assert conn.execute(text("SELECT 1")).scalar() == 1
        conn.commit()
    assert engine.status().opened_total == 1
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        locks = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 90211"
        ).fetchone()
        listening = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND query LIKE 'LISTEN%%'",
            (backend,),
        ).fetchone()
    assert locks == (0,) and listening == (0,)


def test_direct_is_the_way_out(pgbouncer_url: str, engines: list[Engine]) -> None:
    engine = bouncer_engine(engines, pgbouncer_url, direct_url=POSTGRES_URL)
    with engine.direct() as conn:  # the same statements, straight to PostgreSQL
        conn.execute(text("SET statement_timeout = 1234"))
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
        assert conn.execute(text("SELECT pg_try_advisory_lock(90212)")).scalar() is True
        assert conn.execute(text("SELECT pg_advisory_unlock(90212)")).scalar() is True
        conn.commit()


def test_without_the_seatbelt_session_state_leaks_to_another_client(
    one_server_bouncer: pgbouncer.PgBouncer, engines: list[Engine]
) -> None:
    # Why the seatbelt: with pgbouncer=true's refusal bypassed (a plain psycopg cursor),
    # what one client leaves in the session is another client's, without any error.
    engine = bouncer_engine(engines, one_server_bouncer.url, isolation_level="AUTOCOMMIT")
    first, second = engine.connect(), engine.connect()
    try:
        raw = psycopg.Cursor(first.driver_connection)
        raw.execute("SET statement_timeout = 4321")
        assert second.execute(text("SHOW statement_timeout")).scalar() == "4321ms"
        for cursor in (raw, psycopg.Cursor(second.driver_connection)):
            cursor.execute("SELECT pg_try_advisory_lock(90214)")
            assert cursor.fetchone() == (True,)  # "exclusive", yet both clients have it
        raw.execute("CREATE TEMP TABLE dbpool_bouncer_leak (a int)")
        raw.execute("DECLARE dbpool_bouncer_leak CURSOR WITH HOLD FOR SELECT 7")
        assert second.execute(text("SELECT count(*) FROM dbpool_bouncer_leak")).scalar() == 0
        assert second.execute(text("FETCH 1 FROM dbpool_bouncer_leak")).scalar() == 7
    finally:
        first.close()
        second.close()  # the fixture's PgBouncer ends, and the server session with it


# -- statement mode (autocommit only) --------------------------------------------------------


def test_statement_mode_autocommit_works(
    pgbouncer_statement_url: str, engines: list[Engine], table: str
) -> None:
    engine = bouncer_engine(engines, pgbouncer_statement_url, isolation_level="AUTOCOMMIT",
                            pre_ping=0, socket_timeout=5)  # fmt: skip
    with engine.connect() as conn:
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": 1})
        conn.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), [{"n": 2}, {"n": 3}])
        for _ in range(8):  # never prepared
            assert conn.execute(text(f"SELECT sum(n) FROM {table} WHERE n > :z"),
                                {"z": 0}).scalar() == 6  # fmt: skip
    with engine.connect() as conn:  # pinged on checkout
        with pytest.raises(dbpool.NotSupportedError, match=r"^LISTEN does not work"):
            conn.execute(text("LISTEN dbpool_bouncer_channel"))
        assert conn.execute(text("SELECT 1")).scalar() == 1


@pytest.mark.parametrize("how", ["engine.begin", "non-autocommit engine"])
def test_statement_mode_refuses_transactions_clearly(
    pgbouncer_statement_url: str, engines: list[Engine], table: str, how: str
) -> None:
    autocommit = bouncer_engine(engines, pgbouncer_statement_url, isolation_level="AUTOCOMMIT",
                                connection_limit=1)  # fmt: skip
    if how == "engine.begin":
        engine = autocommit
    else:
        engine = bouncer_engine(engines, pgbouncer_statement_url, connection_limit=1)
    with pytest.raises(dbpool.OperationalError) as caught:
        with engine.begin() if how == "engine.begin" else engine.connect() as conn:
            conn.execute(text(f"INSERT INTO {table} (n) VALUES (1)"))
            conn.commit()
    message = str(caught.value)
    assert "transaction blocks not allowed in statement pooling mode" in message
    assert "use isolation_level=AUTOCOMMIT" in message and "engine.direct()" in message
    assert caught.value.connection_invalidated  # PgBouncer closed that client connection
    with autocommit.connect() as conn:  # nothing was written, and the engine goes on
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0


# -- session mode: everything session-level works, without pgbouncer=true --------------------


def test_session_mode_needs_no_pgbouncer_setting(
    pgbouncer_session_url: str, engines: list[Engine]
) -> None:
    engine = engine_for(engines, pgbouncer_session_url, connection_limit=2, pool_timeout=30,
                        isolation_level="AUTOCOMMIT")  # fmt: skip
    with engine.connect() as conn:
        conn.execute(text("SET statement_timeout = 2345"))
        conn.execute(text("LISTEN dbpool_bouncer_session"))
        for i in range(8):  # prepared from the 5th run on, and still right
            assert conn.execute(text("SELECT :i::int + 1"), {"i": i}).scalar() == i + 1
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "2345ms"
        assert conn.execute(text("SELECT pg_try_advisory_lock(90213)")).scalar() is True
        with psycopg.connect(POSTGRES_URL, autocommit=True) as other:
            other.execute("NOTIFY dbpool_bouncer_session, 'ping'")
        conn.execute(text("SELECT 1"))
        got = list(conn.driver_connection.notifies(timeout=5, stop_after=1))
        assert [n.payload for n in got] == ["ping"]
        assert conn.execute(text("SELECT pg_advisory_unlock(90213)")).scalar() is True
        conn.execute(text("RESET ALL"))
        conn.execute(text("UNLISTEN *"))
