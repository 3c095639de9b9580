"""Scripts and cron jobs leave no connections behind on the real PostgreSQL server.

Each test runs a real script in a child process with its own ``application_name`` and
asks the server (``pg_stat_activity``) how many connections that name holds. The count
is taken while the script is still alive, after it disposed its engine: a process that
exits closes its sockets anyway, so only a count taken before the exit proves that
dbpool closed them. Each script first shows a non-zero count, so the check can fail.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dbpool import make_url
from tests.test_lifecycle import Script

DEADLINE = 30.0  # seconds for the server to notice closed connections; usually ~10 ms


def connect_direct(url: str) -> Any:
    """A plain psycopg connection, outside dbpool, to watch the server."""
    import psycopg

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        application_name="dbpool-test-observer",
        autocommit=True,
    )


class Server:
    def __init__(self, url: str) -> None:
        self.conn = connect_direct(url)

    def connections(self, application_name: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
        return int(row[0])

    def wait_for_connections(self, application_name: str, wanted: int) -> int:
        deadline = time.monotonic() + DEADLINE
        while (count := self.connections(application_name)) != wanted:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return count


@pytest.fixture
def server(postgres_url: str) -> Iterator[Server]:
    watcher = Server(postgres_url)
    yield watcher
    watcher.conn.close()


@pytest.fixture
def app() -> str:
    return f"dbpool-script-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def script_url(postgres_url: str, app: str) -> str:
    url = make_url(postgres_url).update_query({"application_name": app})
    return url.render_as_string(hide_password=False)


# Three connections in use at once, then a line, and the script waits for "go"; then
# ``main`` disposes of the engine in its own way, another line, and it waits again.
THREE_THEN_DISPOSED = """
import sys
import dbpool
from dbpool import text

def use_three(engine):
    with engine.connect() as a, engine.connect() as b, engine.connect() as c:
        for conn in (a, b, c):
            conn.execute(text("SELECT 1"))
        print("three in use", flush=True)
        sys.stdin.readline()

{main}
print("disposed", flush=True)
sys.stdin.readline()
"""


def assert_no_connections_once_disposed(server: Server, app: str, main: str, why: str) -> None:
    script = Script(THREE_THEN_DISPOSED.format(main=textwrap.dedent(main)))
    script.expect("three in use")
    assert server.wait_for_connections(app, 3) == 3
    script.tell("go")
    script.expect("disposed")
    assert server.wait_for_connections(app, 0) == 0, why
    script.tell("go")
    assert script.finish() == 0, script.stderr


def test_a_with_block_script_leaves_no_connections(
    server: Server, app: str, script_url: str
) -> None:
    main = f"""
    with dbpool.create_engine({script_url!r}, connection_limit=5) as engine:
        use_three(engine)
    """
    assert_no_connections_once_disposed(
        server, app, main, "the with block closed every connection"
    )


def test_a_script_that_disposes_explicitly_leaves_no_connections(
    server: Server, app: str, script_url: str
) -> None:
    main = f"""
    engine = dbpool.create_engine({script_url!r}, connection_limit=5)
    try:
        use_three(engine)
    finally:
        engine.dispose()
    """
    assert_no_connections_once_disposed(server, app, main, "dispose() closed every connection")


@pytest.fixture
def exit_log(server: Server, app: str) -> Iterator[str]:
    """A table the before_exit hooks write to, so that their query is seen on the server."""
    server.conn.execute("CREATE TABLE IF NOT EXISTS dbpool_exit_hook_log (app text NOT NULL)")
    yield "dbpool_exit_hook_log"
    server.conn.execute("DELETE FROM dbpool_exit_hook_log WHERE app = %s", (app,))


def hook_rows(server: Server, app: str) -> int:
    row = server.conn.execute(
        "SELECT count(*) FROM dbpool_exit_hook_log WHERE app = %s", (app,)
    ).fetchone()
    return int(row[0])


SIGTERM_SCRIPT = """
    import signal, sys, time
    import dbpool
    from dbpool import text

    engine = dbpool.create_engine({url!r}, connection_limit=3)

    @engine.before_exit
    def record_exit():
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO dbpool_exit_hook_log (app) VALUES (:app)"),
                         {{"app": {app!r}}})
        print("hook ran", flush=True)

    with engine.connect() as a, engine.connect() as b:
        a.execute(text("SELECT 1"))
        b.execute(text("SELECT 1"))
    print("ready", flush=True)
    time.sleep(120)
    print("not stopped", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sigtermed_script_runs_its_hook_query_and_leaves_no_connections(
    server: Server, app: str, script_url: str, exit_log: str
) -> None:
    script = Script(SIGTERM_SCRIPT.format(url=script_url, app=app))
    script.expect("ready")
    assert server.wait_for_connections(app, 2) == 2  # idle in the pool, still open
    script.send(signal.SIGTERM)

    assert script.finish() == -signal.SIGTERM, script.stderr  # still stops as SIGTERM does
    assert script.lines == ["ready", "hook ran"]
    assert hook_rows(server, app) == 1, "the hook's query reached the server"
    assert server.wait_for_connections(app, 0) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_after_sigterm_the_connections_are_gone_before_the_process_is(
    server: Server, app: str, postgres_url: str, script_url: str, exit_log: str
) -> None:
    # The script's own SIGTERM handler, installed before dbpool's, runs after the
    # disposal and while the process still lives: it asks the server what is left.
    watcher = f"""
    import time
    from tests.integration.test_scripts_leave_no_connections import Server

    def counted_then_exit(signum, frame):
        watcher = Server({postgres_url!r})
        count = watcher.wait_for_connections({app!r}, 0)
        print("connections left before exit:", count, flush=True)
        sys.exit(3)

    signal.signal(signal.SIGTERM, counted_then_exit)
"""
    code = SIGTERM_SCRIPT.format(url=script_url, app=app).replace(
        "from dbpool import text\n", "from dbpool import text\n" + watcher, 1
    )
    script = Script(code)
    script.expect("ready")
    assert server.wait_for_connections(app, 2) == 2
    script.send(signal.SIGTERM)

    assert script.finish() == 3, script.stderr
    assert script.lines == ["ready", "hook ran", "connections left before exit: 0"]
    assert hook_rows(server, app) == 1
