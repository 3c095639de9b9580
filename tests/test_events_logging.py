"""Pool events (engine.events.on) and the dbpool logger, echo included, on real engines.

The engines here have no janitor (no idle or lifetime limit) unless a test wants one,
so that nothing but the test itself touches the pool lock while a listener checks it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dbpool
from dbpool import ConfigError, PoolTimeoutError, text
from dbpool.events import EVENT_NAMES
from tests.engines import engine_for
from tests.fakedb import wait_for
from tests.test_lifecycle import run_script

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def engine(tmp_path: Path, engines: list[dbpool.Engine]) -> dbpool.Engine:
    return engine_for(
        engines,
        f"sqlite://app:{PASSWORD}@/{tmp_path / 'app.db'}",
        connection_limit=1,
        pool_timeout=0.1,
        max_idle_connection_lifetime=0,
    )


class Recorder:
    """Listens to every event; notes each call, whether the pool lock was free, and
    names driver connections c1, c2, ... in the order they appear."""

    def __init__(self, engine: dbpool.Engine) -> None:
        self.engine = engine
        self.calls: list[tuple[Any, ...]] = []
        self.lock_was_held: list[str] = []
        self._seen: list[Any] = []  # kept alive, so that no id() is reused
        for name in EVENT_NAMES:
            engine.events.on(name, self._listener(name))

    def _listener(self, event: str) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            lock = self.engine.pool._lock
            if lock.acquire(blocking=False):
                lock.release()
            else:
                self.lock_was_held.append(event)
            self.calls.append((event, *(self._describe(a) for a in args)))

        return listener

    def _describe(self, arg: Any) -> Any:
        if isinstance(arg, float):
            return "seconds" if arg >= 0.09 else f"too short: {arg}"
        if arg is None or isinstance(arg, BaseException):
            return arg if arg is None else repr(arg)
        for number, seen in enumerate(self._seen, 1):
            if seen is arg:
                return f"c{number}"
        self._seen.append(arg)
        return f"c{len(self._seen)}"

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


def test_the_six_events_fire_at_the_right_moments_outside_the_lock(
    engine: dbpool.Engine,
) -> None:
    events = Recorder(engine)

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert events.take() == [("connect", "c1"), ("checkout", "c1")]
    assert events.take() == [("checkin", "c1")]

    with engine.connect():
        pass
    assert events.take() == [("checkout", "c1"), ("checkin", "c1")], "reused: no connect"

    held = engine.connect()
    with pytest.raises(PoolTimeoutError):
        engine.connect()
    assert events.take() == [("checkout", "c1"), ("timeout", "seconds")]

    held.invalidate(RuntimeError("broken"))
    assert events.take() == [("invalidate", "c1", "RuntimeError('broken')"), ("close", "c1")]
    held.close()
    assert events.take() == []

    with engine.connect():
        pass
    engine.dispose()
    assert events.take() == [("connect", "c2"), ("checkout", "c2"), ("checkin", "c2"),
                             ("close", "c2")]  # fmt: skip
    assert events.lock_was_held == []


def test_listeners_get_the_driver_connection(engine: dbpool.Engine) -> None:
    got: list[Any] = []
    engine.events.on("checkout", got.append)
    with engine.connect() as conn:
        assert got == [conn.driver_connection]


def test_the_decorator_form_and_removal(engine: dbpool.Engine) -> None:
    seen: list[str] = []

    @engine.events.on("checkin")
    def on_checkin(dbapi_connection: Any) -> None:
        seen.append("checkin")

    with engine.connect():
        pass
    engine.events.remove("checkin", on_checkin)
    with engine.connect():
        pass
    assert seen == ["checkin"]
    assert on_checkin.__name__ == "on_checkin"


def test_a_raising_listener_is_logged_and_ignored(
    engine: dbpool.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    after: list[str] = []

    @engine.events.on("checkout")
    def broken(dbapi_connection: Any) -> None:
        raise RuntimeError("listener bug")

    engine.events.on("checkout", lambda c: after.append("called"))

    with caplog.at_level(logging.ERROR, logger="dbpool"), engine.connect() as conn:
        assert conn.execute(text("SELECT 5")).scalar() == 5

    assert after == ["called"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "checkout listener" in record.getMessage()
    assert record.exc_info is not None and "listener bug" in str(record.exc_info[1])


def test_an_unknown_event_is_a_config_error_with_a_suggestion(engine: dbpool.Engine) -> None:
    with pytest.raises(ConfigError, match='Did you mean "checkout"'):
        engine.events.on("checkuot", print)


def test_a_listener_may_use_the_pool_itself(tmp_path: Path) -> None:
    # Outside the lock means a listener can even check out a connection of its own.
    engine = dbpool.create_engine(
        f"sqlite:///{tmp_path / 'a.db'}", connection_limit=2, max_idle_connection_lifetime=0
    )
    statuses: list[int] = []
    engine.events.on("connect", lambda c: statuses.append(engine.status().open))
    done = threading.Event()

    def run() -> None:
        with engine.connect():
            pass
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "a status() call in a listener must not deadlock"
    assert statuses == [1]
    engine.dispose()


# -- logging -------------------------------------------------------------------------------


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dbpool" and r.levelno == level]


def test_log_levels_for_start_opens_closes_timeouts_and_invalidations(
    engine: dbpool.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="dbpool"):
        held = engine.connect()
        with pytest.raises(PoolTimeoutError):
            engine.connect()
        held.invalidate()
        held.close()
        engine.dispose()

    assert messages(caplog, logging.INFO) == ["Starting a sqlite pool with 1 connections"]
    debug = messages(caplog, logging.DEBUG)
    assert any(m.startswith("opened a connection") for m in debug)
    assert any(m.startswith("closed a connection") for m in debug)
    warnings = messages(caplog, logging.WARNING)
    assert any("Timed out fetching a new connection" in m for m in warnings)
    assert any(m.startswith("invalidating a connection") for m in warnings)


def test_the_janitor_logs_evictions_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = dbpool.create_engine(
        f"sqlite:///{tmp_path / 'a.db'}", max_idle_connection_lifetime=0.1
    )
    with caplog.at_level(logging.DEBUG, logger="dbpool"):
        with engine.connect():
            pass
        assert wait_for(lambda: engine.status().open == 0, timeout=30)
        engine.dispose()
    assert any("retires 1 idle connection" in m for m in messages(caplog, logging.DEBUG))


def test_no_log_line_shows_the_password(
    engine: dbpool.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.echo = True
    with caplog.at_level(logging.DEBUG, logger="dbpool"):
        held = engine.connect()
        held.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeoutError):
            engine.connect()
        held.invalidate()
        engine.dispose()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "SELECT 1" in logged and "Timed out" in logged
    assert PASSWORD not in logged
    assert PASSWORD not in repr(engine) and PASSWORD not in engine._repr_html_()


def test_connect_failures_never_log_the_password(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("psycopg")
    # Port 1 on loopback: nothing listens, so every attempt is refused at once.
    engine = dbpool.create_engine(
        f"postgresql://app:{PASSWORD}@127.0.0.1:1/shop", pool_timeout=0.5, connect_timeout=1
    )
    with (
        caplog.at_level(logging.DEBUG, logger="dbpool"),
        pytest.raises(dbpool.DBPoolError) as info,
    ):
        engine.connect()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "127.0.0.1" in logged or "127.0.0.1" in str(info.value)
    assert PASSWORD not in logged
    assert PASSWORD not in str(info.value)


# -- echo (child processes: the point is output with no logging set up) ----------------------


def test_echo_prints_sql_to_stderr_with_no_logging_configured() -> None:
    status, stdout, stderr = run_script(
        f"""
    import dbpool
    from dbpool import text
    one = dbpool.create_engine("sqlite://u:{PASSWORD}@/", echo=True)
    two = dbpool.create_engine("sqlite://", echo=True)  # a second echo engine: no 2nd handler
    quiet = dbpool.create_engine("sqlite://")
    with one.connect() as conn:
        conn.execute(text("SELECT 'echoed' AS marker"))
    with quiet.connect() as conn:
        conn.execute(text("SELECT 'not echoed'"))
    """
    )
    assert status == 0, stderr
    assert stdout == []
    lines = stderr.splitlines()
    echoed = [line for line in lines if "SELECT 'echoed' AS marker" in line]
    assert len(echoed) == 1, stderr
    assert " INFO dbpool SELECT 'echoed'" in echoed[0]
    assert not any("not echoed" in line for line in lines)
    assert any("Starting a sqlite pool" in line for line in lines)
    assert PASSWORD not in stderr


def test_echo_uses_the_applications_logging_when_there_is_some() -> None:
    status, stdout, stderr = run_script(
        """
    import logging, sys
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="app: %(message)s")
    import dbpool
    from dbpool import text
    engine = dbpool.create_engine("sqlite://", echo=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT 'echoed'"))
    """
    )
    assert status == 0, stderr
    assert "app: SELECT 'echoed'" in stdout
    assert "SELECT" not in stderr, "no second handler next to the application's"
