"""Before-exit hooks and graceful dispose.

In-process tests use real SQLite engines. Everything about process exit and signals
runs in a child process (:class:`Script`), so that real signals reach a real interpreter
and this test process keeps its own handlers. Timing margins are generous: these must
pass on a loaded 2-core machine.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dbpool
from dbpool import PoolDisposedError, text
from tests.fakedb import wait_for

ROOT = Path(__file__).resolve().parent.parent
POSIX_SIGNALS = pytest.mark.skipif(
    sys.platform == "win32", reason="needs POSIX signals delivered to a child process"
)


class Script:
    """A Python script in a child process, read line by line as it prints.

    The child imports dbpool from this working tree and runs unbuffered, so a line the
    script prints is visible here at once.
    """

    def __init__(self, code: str, *, cwd: Path | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd or ROOT,
        )
        self.lines: list[str] = []
        self.stderr = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, wanted: str, timeout: float = 60.0) -> None:
        """Read lines until one equals ``wanted``; fail on EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"no line {wanted!r} within {timeout} s; got {self.lines}")
            if line is None:
                self.finish()
                pytest.fail(
                    f"the script ended before printing {wanted!r}; stdout {self.lines}, "
                    f"stderr:\n{self.stderr}"
                )
            self.lines.append(line)
            if line == wanted:
                return

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the child to end; return its exit status (negative: killed by signal)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._read_to_the_end(timeout)
            pytest.fail(f"the script did not end within {timeout} s; stdout {self.lines}")
        self._read_to_the_end(timeout)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def _read_to_the_end(self, timeout: float) -> None:
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                break
            self.lines.append(line)
        self._queue.put(None)  # a later finish() returns at once


def run_script(code: str, *, cwd: Path | None = None) -> tuple[int, list[str], str]:
    """Run a script to its end: exit status, stdout lines, stderr."""
    script = Script(code, cwd=cwd)
    status = script.finish()
    return status, script.lines, script.stderr


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dbpool.Engine]:
    # No janitor (no idle or lifetime limits): nothing else touches the pool meanwhile.
    eng = dbpool.create_engine(
        f"sqlite:///{tmp_path / 'app.db'}",
        connection_limit=2,
        pool_timeout=30,
        max_idle_connection_lifetime=0,
    )
    yield eng
    eng.dispose()


# -- hooks on dispose --------------------------------------------------------------------


def test_hooks_run_on_dispose_in_order_while_the_engine_still_works(
    engine: dbpool.Engine,
) -> None:
    seen: list[object] = []

    @engine.before_exit
    def first() -> None:
        with engine.connect() as conn:
            seen.append(conn.execute(text("SELECT 40 + 2")).scalar())

    def second() -> None:
        seen.append("second")

    assert engine.before_exit(second) is second
    assert first.__name__ == "first"  # the decorator hands the function back
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert seen == []

    engine.dispose()

    assert seen == [42, "second"]
    status = engine.status()
    assert status.open == 0, "the hook's connection is closed by the same dispose"
    assert status.opened_total == status.closed_total


def test_a_raising_hook_is_logged_and_the_others_and_the_disposal_go_on(
    engine: dbpool.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    @engine.before_exit
    def broken() -> None:
        raise RuntimeError("hook failed")

    engine.before_exit(lambda: ran.append("after"))
    with engine.connect():
        pass
    with caplog.at_level(logging.ERROR, logger="dbpool"):
        engine.dispose()

    assert ran == ["after"]
    assert engine.status().open == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "before_exit hook" in errors[0].getMessage()
    assert errors[0].exc_info is not None and "hook failed" in str(errors[0].exc_info[1])


def test_hooks_run_once_per_dispose_and_again_only_after_the_engine_was_used(
    engine: dbpool.Engine,
) -> None:
    calls: list[int] = []
    engine.before_exit(lambda: calls.append(1))

    engine.dispose()  # never used: the hooks are still due
    engine.dispose()  # nothing happened since: not again
    assert calls == [1]

    with engine.connect() as conn:  # used again: a fresh pool, due again
        conn.execute(text("SELECT 1"))
    engine.dispose()
    engine.dispose()
    assert calls == [1, 1]


def test_a_hook_that_disposes_its_own_engine_does_not_recurse(engine: dbpool.Engine) -> None:
    calls: list[int] = []

    @engine.before_exit
    def hook() -> None:
        calls.append(1)
        engine.dispose()

    engine.dispose()
    assert calls == [1]
    assert engine.status().open == 0


def test_the_engine_context_manager_runs_the_hooks(tmp_path: Path) -> None:
    seen: list[object] = []
    with dbpool.create_engine(f"sqlite:///{tmp_path / 'cm.db'}") as engine:

        @engine.before_exit
        def hook() -> None:
            with engine.connect() as conn:
                seen.append(conn.execute(text("SELECT 7")).scalar())

        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert seen == [7]
    assert engine.status().open == 0


# -- dispose(timeout) ----------------------------------------------------------------------


def test_dispose_fails_waiters_with_a_clear_error(tmp_path: Path) -> None:
    engine = dbpool.create_engine(
        f"sqlite:///{tmp_path / 'w.db'}", connection_limit=1, pool_timeout=0
    )  # pool_timeout=0: without dispose the waiter would wait forever
    held = engine.connect()
    errors: list[BaseException] = []

    def wait_for_a_connection() -> None:
        try:
            engine.connect().close()
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_a_connection)
    waiter.start()
    assert wait_for(lambda: engine.status().waiting == 1, timeout=30)

    engine.dispose()
    waiter.join(30)

    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], PoolDisposedError)
    assert "disposed" in str(errors[0])
    held.close()
    assert engine.status().open == 0


def test_dispose_with_timeout_closes_connections_returned_in_time_and_stops_waiting(
    engine: dbpool.Engine,
) -> None:
    held = engine.connect()
    idle = engine.connect()
    idle.close()
    assert engine.status().open == 2
    release = threading.Timer(0.2, held.close)
    release.start()

    start = time.monotonic()
    engine.dispose(timeout=60)
    elapsed = time.monotonic() - start

    release.join()
    assert elapsed < 30, "dispose returns once the last connection is back"
    status = engine.status()
    assert status.open == 0
    assert status.closed_total == 2


def test_dispose_with_timeout_closes_what_is_still_checked_out(
    engine: dbpool.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    held = engine.connect()
    driver_connection = held.driver_connection

    with caplog.at_level(logging.WARNING, logger="dbpool"):
        engine.dispose(timeout=0.1)

    assert engine.status().open == 0
    with pytest.raises(Exception, match="closed"):
        driver_connection.execute("SELECT 1")
    assert any("still checked out" in r.getMessage() for r in caplog.records)
    assert engine.pool._janitor is None
    held.close()  # returning it afterwards is harmless
    assert engine.status().open == 0


def test_the_engine_stays_usable_after_dispose(engine: dbpool.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT a FROM t")).scalar() == 1
    assert engine.status().open == 1


# -- process exit and signals (child processes) --------------------------------------------

# A script's engine: a SQLite file in the child's working directory, and a hook that runs
# a query and prints its result, so "the hook ran while the engine worked" is visible.
ENGINE_WITH_HOOK = """
    import os, signal, sys, threading, time
    import dbpool
    from dbpool import text

    engine = dbpool.create_engine("sqlite:///app.db", connection_limit=2)

    @engine.before_exit
    def goodbye():
        with engine.connect() as conn:
            answer = conn.execute(text("SELECT 6 * 7")).scalar()
        print(f"hook ran: {answer} in {threading.current_thread().name}", flush=True)

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
"""


def test_hooks_run_at_normal_interpreter_exit(tmp_path: Path) -> None:
    code, lines, stderr = run_script(
        ENGINE_WITH_HOOK
        + """
    print("script done", flush=True)
    """,
        cwd=tmp_path,
    )
    assert code == 0, stderr
    assert lines == ["script done", "hook ran: 42 in MainThread"]


def test_hooks_run_once_when_the_script_disposed_the_engine_itself(tmp_path: Path) -> None:
    code, lines, stderr = run_script(
        ENGINE_WITH_HOOK
        + """
    engine.dispose()
    print("disposed", flush=True)
    """,
        cwd=tmp_path,
    )
    assert code == 0, stderr
    assert lines == ["hook ran: 42 in MainThread", "disposed"]


@POSIX_SIGNALS
def test_sigterm_runs_the_hooks_then_the_process_still_dies_of_sigterm(tmp_path: Path) -> None:
    script = Script(
        ENGINE_WITH_HOOK
        + """
    print("ready", flush=True)
    time.sleep(120)
    print("not stopped", flush=True)
    """,
        cwd=tmp_path,
    )
    script.expect("ready")
    script.send(signal.SIGTERM)
    code = script.finish()
    assert code == -signal.SIGTERM, script.stderr
    assert script.lines == ["ready", "hook ran: 42 in MainThread"]


@POSIX_SIGNALS
def test_sigint_runs_the_hooks_then_raises_keyboardinterrupt_as_before(tmp_path: Path) -> None:
    script = Script(
        ENGINE_WITH_HOOK
        + """
    try:
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", engine.status().open, flush=True)
    """,
        cwd=tmp_path,
    )
    script.expect("ready")
    script.send(signal.SIGINT)
    code = script.finish()
    assert code == 0, script.stderr
    assert script.lines == ["ready", "hook ran: 42 in MainThread", "KeyboardInterrupt 0"]


@POSIX_SIGNALS
def test_a_handler_installed_before_is_called_after_the_disposal(tmp_path: Path) -> None:
    script = Script(
        """
    import signal, sys

    def previous(signum, frame):
        print("previous handler; open connections:", engine.status().open, flush=True)
        sys.exit(3)

    signal.signal(signal.SIGTERM, previous)
    """
        + ENGINE_WITH_HOOK
        + """
    print("ready", flush=True)
    time.sleep(120)
    """,
        cwd=tmp_path,
    )
    script.expect("ready")
    script.send(signal.SIGTERM)
    code = script.finish()
    assert code == 3, script.stderr
    assert script.lines == [
        "ready",
        "hook ran: 42 in MainThread",
        "previous handler; open connections: 0",
    ]


@POSIX_SIGNALS
def test_an_ignored_signal_stays_ignored(tmp_path: Path) -> None:
    script = Script(
        """
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    """
        + ENGINE_WITH_HOOK
        + """
    print("handler is SIG_IGN:", signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, flush=True)
    print("ready", flush=True)
    sys.stdin.readline()
    print("still running", flush=True)
    """,
        cwd=tmp_path,
    )
    script.expect("ready")
    script.send(signal.SIGTERM)
    time.sleep(0.5)  # the signal, were it handled, would have been by now
    script.tell("go on")
    code = script.finish()
    assert code == 0, script.stderr
    assert script.lines == [
        "handler is SIG_IGN: True",
        "ready",
        "still running",
        "hook ran: 42 in MainThread",  # at normal exit, not on the ignored signal
    ]


def test_signal_handlers_are_installed_only_for_hooks_and_only_from_the_main_thread() -> None:
    code, lines, stderr = run_script(
        """
    import signal, threading
    import dbpool

    def handlers():
        return (signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)

    engine = dbpool.create_engine("sqlite://")
    with engine.connect():
        pass
    print("no hooks, defaults kept:", handlers(), flush=True)

    worker = threading.Thread(target=engine.before_exit, args=(lambda: print("hook 1"),))
    worker.start(); worker.join()
    print("hook added from a thread, defaults kept:", handlers(), flush=True)

    engine.before_exit(lambda: print("hook 2", flush=True))
    print("hook added from the main thread, defaults kept:", handlers(), flush=True)
    """
    )
    assert code == 0, stderr
    assert lines == [
        "no hooks, defaults kept: (True, True)",
        "hook added from a thread, defaults kept: (True, True)",
        "hook added from the main thread, defaults kept: (False, False)",
        "hook 1",  # at exit: the atexit hook was installed from the thread
        "hook 2",
    ]


# The main thread waits for a connection, so a signal stops it inside dbpool, where it
# could hold a pool lock that the disposal needs: the hooks and the disposal must run in
# another thread, which wakes the waiter with PoolDisposedError and then has the signal
# delivered again. The script goes on with the code that follows `engine.connect()`.
MAIN_THREAD_WAITING_IN_THE_POOL = """
    import threading, time
    import dbpool

    engine = dbpool.create_engine("sqlite:///app.db", connection_limit=1, pool_timeout=0)
    engine.before_exit(
        lambda: print("hook ran in", threading.current_thread().name, flush=True)
    )
    held = engine.connect()

    def report_waiting():
        while engine.status().waiting == 0:
            time.sleep(0.01)
        print("waiting", flush=True)

    threading.Thread(target=report_waiting, daemon=True).start()
"""


@POSIX_SIGNALS
def test_a_signal_while_waiting_inside_the_pool_is_handled_without_deadlock(
    tmp_path: Path,
) -> None:
    # The signal is delivered again as soon as the pool is disposed, so with the default
    # action the process may die before the woken waiter has even raised its error. The
    # handler it is passed on to here only records it: the waiter's fate is then certain.
    script = Script(
        """
    import signal
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    """
        + MAIN_THREAD_WAITING_IN_THE_POOL
        + """
    try:
        engine.connect()
    except dbpool.PoolDisposedError:
        print("PoolDisposedError", flush=True)
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    print("passed on:", received, flush=True)
    """,
        cwd=tmp_path,
    )
    script.expect("waiting")
    script.send(signal.SIGTERM)
    code = script.finish()
    assert code == 0, script.stderr
    assert script.lines == [
        "waiting",
        "hook ran in dbpool-before-exit",
        "PoolDisposedError",
        f"passed on: [{int(signal.SIGTERM)}]",
        # and the hooks do not run again at exit: nothing used the engine since
    ]


@POSIX_SIGNALS
def test_a_signal_while_waiting_inside_the_pool_still_stops_the_process(tmp_path: Path) -> None:
    script = Script(
        MAIN_THREAD_WAITING_IN_THE_POOL
        + """
    try:
        engine.connect()
    except dbpool.PoolDisposedError:
        pass  # printed, it would race with the signal that stops the process
    time.sleep(120)
    print("not stopped", flush=True)
    """,
        cwd=tmp_path,
    )
    script.expect("waiting")
    script.send(signal.SIGTERM)
    code = script.finish()
    assert code == -signal.SIGTERM, script.stderr
    assert script.lines == ["waiting", "hook ran in dbpool-before-exit"]


@POSIX_SIGNALS
def test_a_second_signal_during_slow_hooks_stops_the_process_at_once(tmp_path: Path) -> None:
    script = Script(
        """
    import time
    import dbpool

    engine = dbpool.create_engine("sqlite://")

    @engine.before_exit
    def slow():
        print("hook started", flush=True)
        time.sleep(120)
        print("hook finished", flush=True)

    print("ready", flush=True)
    time.sleep(120)
    """
    )
    script.expect("ready")
    script.send(signal.SIGTERM)
    script.expect("hook started")
    script.send(signal.SIGTERM)
    code = script.finish()
    assert code == -signal.SIGTERM, script.stderr
    assert script.lines == ["ready", "hook started"]
