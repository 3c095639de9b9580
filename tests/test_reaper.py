"""The reaper's orchestration on the fake driver: when it runs, on which connection, how
often, and that the pool's counts stay right. The real reaping (which server sessions go)
is in tests/integration/test_reap_idle.py.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import cast

import pytest

import dbpool
from dbpool import QueuePool, TooManyConnectionsError
from dbpool.dialects.base import Dialect
from dbpool.reaper import Reaper
from tests.fakedb import FakeConnection, FakeDB, OperationalError, assert_consistent


class Server:
    """A fake server with room for ``capacity`` sessions, ``zombies`` of them taken by
    clients that are gone; it refuses with TooManyConnectionsError when full."""

    def __init__(self, capacity: int, zombies: int) -> None:
        self.db = FakeDB()
        self.capacity = capacity
        self.zombies = zombies
        self.refused = 0

    def connect(self) -> FakeConnection:
        if self.db.live + self.zombies >= self.capacity:
            self.refused += 1
            raise TooManyConnectionsError("Too many connections: the fake server is full")
        return self.db.connect()


class FakeDialect:
    """What the reaper needs of a dialect; reap_idle ends every zombie of the server."""

    name = "fake"
    supports_reaping = True

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = SimpleNamespace(pgbouncer=False, reap_idle_after=30.0)
        self.reaped_on: list[FakeConnection] = []
        self.fail: Exception | None = None

    def describe(self) -> str:
        return "fake.example.com/app"

    def reap_idle(self, conn: FakeConnection, *, older_than: float) -> int:
        assert older_than == 30.0
        assert not conn.closed
        self.reaped_on.append(conn)
        if self.fail is not None:
            raise self.fail
        reaped, self.server.zombies = self.server.zombies, 0
        return reaped

    def close(self, conn: FakeConnection) -> None:
        conn.close()

    def is_disconnect(self, error: BaseException) -> bool:
        return "gone" in str(error)


def build(server: Server, *, limit: int = 2, timeout: float = 5, interval: float = 1.0
          ) -> tuple[QueuePool, Reaper, FakeDialect]:  # fmt: skip
    dialect = FakeDialect(server)
    reaper = Reaper(server.connect, cast(Dialect, dialect), 30.0, interval=interval)
    pool = QueuePool(reaper, connection_limit=limit, pool_timeout=timeout)
    reaper.attach(pool)
    return pool, reaper, dialect


def test_the_first_connection_cleans_up_once(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(capacity=3, zombies=2)
    pool, reaper, dialect = build(server, limit=3)
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        records = [pool.checkout() for _ in range(3)]  # room for 1 until the zombies go
    assert server.refused == 0
    assert dialect.reaped_on == [records[0].dbapi_connection]  # once, on the first
    assert reaper.reaped_total == 2 and reaper.runs == 1
    assert "reaped 2 idle connections of this application on fake.example.com/app" in caplog.text
    for record in records:
        pool.checkin(record)
    assert_consistent(pool, server.db)
    pool.dispose()


def test_a_refusal_reaps_through_an_idle_connection_of_the_pool() -> None:
    server = Server(capacity=2, zombies=0)
    pool, reaper, dialect = build(server, interval=0)
    first, idle = pool.checkout(), pool.checkout()
    pool.checkin(idle)  # one busy, one idle
    server.zombies = 1  # a sibling froze: the server is full
    server.capacity = 2
    dialect.reaped_on.clear()
    with pytest.raises(TooManyConnectionsError):
        reaper()  # what the pool's _open calls when it needs a connection
    # (a): the idle connection did the work; no connection was opened for it.
    assert dialect.reaped_on == [idle.dbapi_connection]
    assert server.zombies == 0
    assert server.db.opened == 2
    status = pool.status()
    assert (status.open, status.busy, status.idle) == (2, 1, 1)  # it came back idle
    pool.checkin(first)
    assert_consistent(pool, server.db)
    pool.dispose()


def test_without_an_idle_connection_a_fresh_one_is_tried() -> None:
    server = Server(capacity=3, zombies=0)
    pool, reaper, dialect = build(server, interval=0)
    busy = pool.checkout()
    dialect.reaped_on.clear()
    server.zombies = 1
    server.capacity = 2  # full for the pool, one slot kept for the "privileged" probe

    def probe_gets_in() -> FakeConnection:
        return server.db.connect()  # the reserved slot

    refusing = reaper._creator
    calls = iter([refusing, probe_gets_in])
    reaper._creator = lambda: next(calls)()
    with pytest.raises(TooManyConnectionsError):
        reaper()
    # (b): a fresh connection did the work and was closed; the pool never saw it.
    assert len(dialect.reaped_on) == 1 and dialect.reaped_on[0] is not busy.dbapi_connection
    assert dialect.reaped_on[0].closed
    assert server.zombies == 0
    status = pool.status()
    assert (status.open, status.busy, status.idle) == (1, 1, 0)
    pool.checkin(busy)
    pool.dispose()


def test_when_nothing_gets_in_the_backoff_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(capacity=1, zombies=0)
    pool, reaper, dialect = build(server, interval=0)
    busy = pool.checkout()
    dialect.reaped_on.clear()
    server.zombies = 1
    with caplog.at_level(logging.DEBUG, logger="dbpool"), pytest.raises(TooManyConnectionsError):
        reaper()
    assert dialect.reaped_on == []  # (c): nothing to reap on
    assert "no connection to reap idle connections on fake.example.com/app" in caplog.text
    pool.checkin(busy)
    pool.dispose()


def test_reaping_is_rate_limited() -> None:
    server = Server(capacity=2, zombies=0)
    pool, reaper, dialect = build(server, interval=60)
    first, idle = pool.checkout(), pool.checkout()
    pool.checkin(idle)
    dialect.reaped_on.clear()  # the first connection's clean-up counts as a run
    server.zombies = 1
    for _ in range(5):
        with pytest.raises(TooManyConnectionsError):
            reaper()
    assert dialect.reaped_on == []
    reaper._last_run = -1e9  # a minute later
    with pytest.raises(TooManyConnectionsError):
        reaper()
    assert dialect.reaped_on == [idle.dbapi_connection]
    pool.checkin(first)
    pool.dispose()


def test_a_pool_refused_for_a_while_gets_in_after_the_reaper_ran() -> None:
    # End to end through the pool: busy connection, zombie fills the server, the caller
    # waiting to open is refused until the busy connection comes back and is borrowed.
    server = Server(capacity=2, zombies=0)
    pool, reaper, _ = build(server, interval=0.05, timeout=10)
    busy = pool.checkout()
    server.zombies = 1
    timer = threading.Timer(0.3, pool.checkin, (busy,))
    timer.start()
    try:
        second = pool.checkout()
        third = pool.checkout()
    finally:
        timer.join()
    # Counted: the pool's own attempts, not the reaper's probes (path (b)).
    assert 1 <= pool.too_many_connections_total < server.refused
    assert reaper.reaped_total == 1
    pool.checkin(second)
    pool.checkin(third)
    assert_consistent(pool, server.db)
    assert pool.status().open == 2
    pool.dispose()


def test_a_failed_reap_returns_or_drops_the_borrowed_connection() -> None:
    server = Server(capacity=2, zombies=0)
    pool, reaper, dialect = build(server, interval=0)
    first, idle = pool.checkout(), pool.checkout()
    pool.checkin(idle)
    server.zombies = 1
    dialect.fail = OperationalError("permission denied")
    with pytest.raises(TooManyConnectionsError):  # the refusal, not the reap's error
        reaper()
    assert pool.status().idle == 1  # given back
    dialect.fail = OperationalError("the connection is gone")
    with pytest.raises(TooManyConnectionsError):
        reaper()
    status = pool.status()
    assert (status.open, status.idle) == (1, 0)  # a dead one is discarded
    pool.checkin(first)
    assert_consistent(pool, server.db)
    pool.dispose()


def test_one_run_at_a_time() -> None:
    server = Server(capacity=2, zombies=0)
    pool, reaper, dialect = build(server, interval=0)
    first, idle = pool.checkout(), pool.checkout()
    pool.checkin(idle)
    dialect.reaped_on.clear()
    server.zombies = 1
    entered, release = threading.Event(), threading.Event()
    original = dialect.reap_idle

    def slow_reap(conn: FakeConnection, *, older_than: float) -> int:
        entered.set()
        release.wait(5)
        return original(conn, older_than=older_than)

    dialect.reap_idle = slow_reap  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def refused() -> None:
        try:
            reaper()
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=refused)
    runner.start()
    assert entered.wait(5)
    others = [threading.Thread(target=refused) for _ in range(4)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(5)
    release.set()
    runner.join(5)
    assert len(dialect.reaped_on) == 1
    assert len(errors) == 5 and all(isinstance(e, TooManyConnectionsError) for e in errors)
    pool.checkin(first)
    pool.dispose()


def test_create_engine_wraps_the_creator_only_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = FakeDB()
    plain = dbpool.create_engine("sqlite://", creator=db.connect)
    assert plain.pool._creator == db.connect
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        sqlite = dbpool.create_engine("sqlite://", creator=db.connect, reap_idle_after=60)
    assert sqlite.pool._creator == db.connect  # SQLite has no server sessions to end
    assert "reap_idle_after has no effect on sqlite" in caplog.text
    for engine in (plain, sqlite):
        engine.dispose()


def test_create_engine_wraps_for_postgresql_but_not_through_pgbouncer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("psycopg")
    engine = dbpool.create_engine("postgresql://app@db.example.com/shop", reap_idle_after=60)
    assert isinstance(engine.pool._creator, Reaper)
    assert engine.pool._creator.older_than == 60
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        bounced = dbpool.create_engine("postgresql://app@db.example.com/shop?pgbouncer=true",
                                       reap_idle_after=60)  # fmt: skip
    assert not isinstance(bounced.pool._creator, Reaper)
    assert "no effect with pgbouncer=true" in caplog.text
    for made in (engine, bounced):
        made.dispose()


def test_a_failed_first_clean_up_still_hands_out_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(capacity=3, zombies=1)
    pool, reaper, dialect = build(server)
    dialect.fail = OperationalError("permission denied for view pg_stat_activity")
    with caplog.at_level(logging.WARNING, logger="dbpool"):
        record = pool.checkout()
    assert not record.dbapi_connection.closed
    assert (
        "reaping idle connections on fake.example.com/app on the pool's first connection "
        "failed: permission denied" in caplog.text
    )
    assert server.zombies == 1 and reaper.reaped_total == 0
    pool.checkin(record)
    assert_consistent(pool, server.db)
    pool.dispose()
