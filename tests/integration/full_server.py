"""A "full" server for one test user, and zombie connections of killed processes.

A server-wide full server would hit every session on the machine, so the tests fill a
limit of their own instead: a PostgreSQL role with ``CONNECTION LIMIT n`` or a MariaDB
user ``WITH MAX_USER_CONNECTIONS n``. The server refuses that user the same way it
refuses everyone when ``max_connections`` is reached (SQLSTATE 53300 / error 1226), and
nobody else notices.

A zombie is a server session whose client died without the server hearing of it. On
loopback a killed process's socket is closed by the kernel and the server ends the
session itself, so :func:`zombies` runs the doomed processes through a
:class:`~tests.silent_proxy.SilentProxy` that goes silent before the kill: the proxy
keeps the server side open and never passes the client's end on, as a frozen container
or a NAT box that dropped its state does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import dbpool
from tests.servers import MYSQL_URL, POSTGRES_URL, admin_query
from tests.silent_proxy import SilentProxy

TAG = "dbpool_reap"
USER = f"{TAG}_full"  # the test user whose limit the tests fill
OTHER_USER = f"{TAG}_other"  # MariaDB: another application's user
APP = f"{TAG}_app"  # the application name of "this application"
OTHER_APP = f"{TAG}_other_app"
PASSWORD = "s3cret-dbpool-h-a"  # trust auth on PostgreSQL ignores it; MariaDB checks it

# A child process: open N connections through dbpool, use them, leave them idle in its
# pool, say so, and wait to be killed.
_CHILD = """
import sys, time, dbpool
engine = dbpool.create_engine(sys.argv[1], connection_limit=int(sys.argv[2]), pool_timeout=20)
held = [engine.connect() for _ in range(int(sys.argv[2]))]
for conn in held:
    conn.exec_driver_sql("SELECT 1")
    conn.close()
print("ready", flush=True)
time.sleep(600)
"""


def vendor_url(vendor: str, *, user: str = USER, app: str | None = APP) -> str:
    """The test server's URL as ``user`` (with the password), tagged with ``app``."""
    base = dbpool.make_url(POSTGRES_URL if vendor == "postgresql" else MYSQL_URL)
    url = base.set(username=user, password=PASSWORD)
    if app is not None:
        key = "application_name" if vendor == "postgresql" else "program_name"
        url = url.update_query({key: app})
    return url.render_as_string(hide_password=False)


@contextmanager
def limited_user(vendor: str, limit: int) -> Iterator[str]:
    """Create ``USER`` with a connection limit of ``limit`` (and, on MariaDB,
    ``OTHER_USER``); yield its URL; drop them, ending their sessions, at the end."""
    _drop(vendor)
    if vendor == "postgresql":
        admin_query("postgresql", f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}' "
                                  f"CONNECTION LIMIT {limit}")  # fmt: skip
    else:
        database = dbpool.make_url(MYSQL_URL).database
        for name, most in ((USER, limit), (OTHER_USER, 10)):
            admin_query("mysql", f"CREATE USER '{name}'@'%' IDENTIFIED BY '{PASSWORD}' "
                                 f"WITH MAX_USER_CONNECTIONS {most}")  # fmt: skip
            admin_query("mysql", f"GRANT SELECT ON `{database}`.* TO '{name}'@'%'")
    try:
        yield vendor_url(vendor)
    finally:
        _drop(vendor)


def _drop(vendor: str) -> None:
    if vendor == "postgresql":
        admin_query("postgresql", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  f"WHERE usename = '{USER}'")  # fmt: skip
        admin_query("postgresql", f"DROP ROLE IF EXISTS {USER}")
        return
    for name in (USER, OTHER_USER):
        for (thread_id,) in admin_query(
            "mysql", f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{name}'"
        ):
            with suppress(Exception):  # it ended meanwhile
                admin_query("mysql", f"KILL CONNECTION {int(thread_id)}")
        admin_query("mysql", f"DROP USER IF EXISTS '{name}'@'%'")


def sessions(vendor: str, *, user: str = USER) -> list[tuple[Any, ...]]:
    """The server's sessions of ``user``: (id, state, seconds idle or busy)."""
    if vendor == "postgresql":
        return admin_query(
            "postgresql",
            "SELECT pid, state, extract(epoch FROM clock_timestamp() - state_change)::float "
            f"FROM pg_stat_activity WHERE usename = '{user}' ORDER BY pid",
        )
    return admin_query(
        "mysql",
        "SELECT ID, COMMAND, TIME_MS / 1000 FROM information_schema.PROCESSLIST "
        f"WHERE USER = '{user}' ORDER BY ID",
    )


def session_ids(vendor: str, *, user: str = USER) -> set[int]:
    return {int(row[0]) for row in sessions(vendor, user=user)}


def wait_until(condition: Any, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


@contextmanager
def zombies(vendor: str, url: str, processes: int) -> Iterator[set[int]]:
    """``processes`` child processes each connect once through a proxy and are then
    killed (SIGKILL) with the proxy silent: their sessions stay on the server, idle.
    Yields the zombies' session ids; closing the proxy at the end lets the server end
    any that are left."""
    target = dbpool.make_url(url)
    default_port = 5432 if vendor == "postgresql" else 3306
    proxy = SilentProxy(target.host or "127.0.0.1", target.port or default_port)
    try:
        before = session_ids(vendor)
        proxied = target.set(host=proxy.host, port=proxy.port)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        command = [sys.executable, "-c", _CHILD, proxied.render_as_string(hide_password=False)]
        children = [
            subprocess.Popen([*command, "1"], stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(processes)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready", "a child failed to connect"
            proxy.silence()  # the network loses the children's end from here on
        finally:
            for child in children:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        found = session_ids(vendor) - before
        assert len(found) == processes, (found, sessions(vendor))
        time.sleep(0.3)
        assert session_ids(vendor) >= found, "the server ended the killed processes' sessions"
        yield found
    finally:
        proxy.close()
