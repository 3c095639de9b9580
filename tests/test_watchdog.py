"""The watchdog that bounds calls a driver cannot bound (dbpool/watchdog.py), on real
sockets; and the settings and pool hooks around it (validation_timeout, socket_timeout,
failed pre-pings, dispose(timeout) waking a blocked call)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dbpool
from dbpool import QueuePool
from dbpool.watchdog import SocketDeadline, _watchdog
from tests.fakedb import FakeDB

SLACK = 2.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_a_call_past_its_deadline_has_its_socket_shut(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    deadline = SocketDeadline(ours.fileno())
    deadline.arm(0.2)
    start = time.monotonic()
    assert ours.recv(1) == b""  # blocked until the watchdog shut the socket: end of file
    took = time.monotonic() - start
    assert 0.15 <= took < 0.2 + SLACK
    assert deadline.disarm() is True
    assert ours.fileno() >= 0  # shut down, not closed: the owner still closes it


def test_a_call_that_ends_in_time_leaves_the_socket_alone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    deadline = SocketDeadline(ours.fileno())
    for _ in range(1000):  # re-armed per call: one pending wake-up, not a thousand
        deadline.arm(0.3)
        assert deadline.disarm() is False
    with _watchdog._lock:
        assert sum(1 for entry in _watchdog._heap if entry[2] is deadline) <= 1
    time.sleep(0.5)  # past every deadline armed above
    peer.sendall(b"x")
    assert ours.recv(1) == b"x"
    assert deadline.disarm() is False


def test_an_earlier_deadline_is_honoured_after_a_later_one(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    deadline = SocketDeadline(ours.fileno())
    deadline.arm(30)  # a long statement bound ...
    deadline.disarm()
    deadline.arm(0.2)  # ... then a short ping bound on the same connection
    start = time.monotonic()
    assert ours.recv(1) == b""
    assert time.monotonic() - start < 0.2 + SLACK
    assert deadline.disarm()


def test_many_connections_each_get_their_own_deadline() -> None:
    pairs = [socket.socketpair() for _ in range(8)]
    try:
        deadlines = [SocketDeadline(a.fileno()) for a, _ in pairs]
        for i, deadline in enumerate(deadlines):
            deadline.arm(0.1 + 0.05 * i if i % 2 else 60)
        time.sleep(0.6 + SLACK / 4)
        fired = [deadline.disarm() for deadline in deadlines]
        assert fired == [bool(i % 2) for i in range(8)]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# -- settings ----------------------------------------------------------------------------------


def test_the_new_settings_defaults_url_and_keyword(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = dbpool.create_engine(url)
    assert (engine.config.validation_timeout, engine.config.socket_timeout) == (2.0, 0.0)
    engine = dbpool.create_engine(url + "?validation_timeout=0.5&socket_timeout=30")
    assert (engine.config.validation_timeout, engine.config.socket_timeout) == (0.5, 30.0)
    engine = dbpool.create_engine(
        url + "?socket_timeout=30", socket_timeout=0, validation_timeout=0
    )
    assert (engine.config.validation_timeout, engine.config.socket_timeout) == (0.0, 0.0)
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(dbpool.ConfigError, match="socket_timeout must be a number"):
            dbpool.create_engine(url + f"?socket_timeout={bad}")
        with pytest.raises(dbpool.ConfigError, match="validation_timeout must be a number"):
            dbpool.create_engine(url, validation_timeout=bad)
    with pytest.raises(dbpool.ConfigError, match='Did you mean "socket_timeout"'):
        dbpool.create_engine(url + "?socket_timeut=1")


def test_the_driver_gets_the_bounds_and_keepalives() -> None:
    pytest.importorskip("pymysql")
    pytest.importorskip("psycopg")
    mysql = dbpool.create_engine("mysql://u@db.example/x", socket_timeout=5)
    assert mysql.dialect._params["read_timeout"] == mysql.dialect._params["write_timeout"] == 5
    assert mysql.dialect._keepalives == {
        "keepalives": 1, "keepalives_idle": 60, "keepalives_interval": 10, "keepalives_count": 6
    }  # fmt: skip
    own = dbpool.create_engine(
        "mysql://u@db.example/x?read_timeout=60&keepalives_idle=30&keepalives=0", socket_timeout=5
    )
    assert own.dialect._params["read_timeout"] == 60  # the URL's own wins
    assert own.dialect._keepalives["keepalives_idle"] == 30
    assert own.dialect._keepalives["keepalives"] is False
    assert "keepalives" not in own.dialect._params  # not a PyMySQL argument

    pg = dbpool.create_engine("postgresql://u@db.example/x?keepalives_idle=20")
    params = pg.dialect._params
    assert (params["keepalives"], params["keepalives_idle"]) == (1, "20")
    assert (params["keepalives_interval"], params["keepalives_count"]) == (10, 6)
    assert "cursor_factory" not in params  # no socket_timeout: psycopg's own classes
    sock = dbpool.create_engine("postgresql://u@/x?host=/run/postgresql")
    assert "keepalives" not in sock.dialect._params  # a Unix socket has none
    bounded = dbpool.create_engine("postgresql://u@db.example/x", socket_timeout=5)
    assert bounded.dialect._params["cursor_factory"].__name__ == "BoundedCursor"
    # A pre-ping never outlasts pool_timeout; 0 stays "no limit".
    capped = dbpool.create_engine("postgresql://u@db.example/x", pool_timeout=1)
    assert capped.dialect.timeouts.validation_timeout == 1
    unbounded = dbpool.create_engine("postgresql://u@db.example/x", validation_timeout=0)
    assert unbounded.dialect.timeouts.validation_timeout == 0


# -- the pool's side ---------------------------------------------------------------------------


def test_a_failed_pre_ping_is_counted_and_logged_with_where_never_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = FakeDB()

    def ping(conn: Any) -> None:
        raise OSError("no answer within validation_timeout")

    pool = QueuePool(db.connect, connection_limit=1, pre_ping=0, ping=ping,
                     where="db.example:5432/shop")  # fmt: skip
    try:
        pool.connect().close()
        with caplog.at_level(logging.WARNING, logger="dbpool"), pool.connect():
            pass
        assert pool.validation_failures_total == 1
        [record] = [r for r in caplog.records if "pre-ping" in r.getMessage()]
        assert "db.example:5432/shop" in record.getMessage()
        assert "no answer within validation_timeout" in record.getMessage()
    finally:
        pool.dispose()


def test_dispose_timeout_aborts_a_connection_in_use_before_closing_it() -> None:
    db = FakeDB()
    order: list[str] = []

    def abort(conn: Any) -> None:
        order.append("abort")

    def close(conn: Any) -> None:
        order.append("close")

    pool = QueuePool(db.connect, connection_limit=1, abort=abort, close=close)
    held = pool.connect()
    start = time.monotonic()
    pool.dispose(timeout=0.2)
    assert time.monotonic() - start < 0.2 + SLACK
    assert order == ["abort", "close"]
    assert pool.status().open == 0
    held.close()  # its connection is already closed and its slot free: nothing more


def test_the_watchdog_thread_is_one_named_daemon(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    deadline = SocketDeadline(pair[0].fileno())
    deadline.arm(60)
    try:
        watchdogs = [t for t in threading.enumerate() if t.name == "dbpool-watchdog"]
        assert len(watchdogs) == 1 and watchdogs[0].daemon
    finally:
        deadline.disarm()


def test_a_descriptor_reused_by_another_socket_is_left_alone() -> None:
    first, peer = socket.socketpair()
    fd = first.fileno()
    deadline = SocketDeadline(fd)
    first.close()  # closed under the armed call (dispose with a timeout) ...
    peer.close()
    others = [socket.socketpair() for _ in range(4)]  # ... and its number taken again
    try:
        # POSIX hands out the lowest free number: one of these has it.
        [(reused, other)] = [(a, b) for a, b in others if fd in (a.fileno(), b.fileno())]
        if reused.fileno() != fd:
            reused, other = other, reused
        deadline.arm(0.1)
        time.sleep(0.3 + SLACK / 4)
        assert deadline.disarm()  # the call is told it ran out of time
        other.sendall(b"x")
        assert reused.recv(1) == b"x"  # the socket now at that number was left alone
    finally:
        for a, b in others:
            a.close()
            b.close()
