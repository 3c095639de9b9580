"""Interpreter shutdown with threads still waiting for or holding connections: the process
exits promptly, with status 0 and nothing on stderr (no traceback, no "Exception ignored")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Threads left behind: two hold the only connections forever, three wait forever for one.
STRANDED_THREADS = """
import threading, time
import dbpool

engine = dbpool.create_engine(URL, connection_limit=2, pool_timeout=0, **SETTINGS)
holding = threading.Barrier(3)

def hold():
    conn = engine.connect()
    conn.exec_driver_sql("SELECT 1")
    holding.wait()
    time.sleep(3600)

def wait():
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")

for _ in range(2):
    threading.Thread(target=hold, daemon=True).start()
holding.wait()
for _ in range(3):
    threading.Thread(target=wait, daemon=True).start()
deadline = time.monotonic() + 10
while engine.status().waiting < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
print("waiting", engine.status().waiting, "busy", engine.status().busy)
"""

# Non-daemon threads still queued when the main thread ends: the interpreter waits for
# them, each is served in turn, and the process ends cleanly.
QUEUED_WORKERS = """
import threading, time
import dbpool

engine = dbpool.create_engine(URL, connection_limit=1, pool_timeout=30, **SETTINGS)
started = threading.Barrier(7)

def work():
    started.wait()
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        time.sleep(0.05)

for _ in range(6):
    threading.Thread(target=work).start()
started.wait()
print("main done")
"""

# Connections left checked out in globals and an engine never disposed.
FORGOTTEN_GLOBALS = """
import dbpool

engine = dbpool.create_engine(URL, connection_limit=3, **SETTINGS)
first = engine.connect()
first.exec_driver_sql("SELECT 1")
second = engine.pool.connect()
with engine.connect() as returned:
    returned.exec_driver_sql("SELECT 1")
cycle = {"conn": engine.connect()}
cycle["self"] = cycle
print("main done")
"""

# The janitor (lifetimes and leak detection on) and waiters with a deadline at exit.
JANITOR_RUNNING = """
import threading, time
import dbpool

engine = dbpool.create_engine(
    URL, connection_limit=1, pool_timeout=60, max_idle_connection_lifetime=0.2,
    max_connection_lifetime=30, leak_detection_threshold=600, **SETTINGS,
)
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT 1")
held = engine.connect()

def wait():
    with engine.connect():
        pass

threading.Thread(target=wait, daemon=True).start()
while engine.status().waiting < 1:
    time.sleep(0.01)
print("main done")
"""

SCRIPTS = {
    "stranded-threads": STRANDED_THREADS,
    "queued-workers": QUEUED_WORKERS,
    "forgotten-globals": FORGOTTEN_GLOBALS,
    "janitor-running": JANITOR_RUNNING,
}


def run_script(
    body: str, url: str, settings: str = "{}", *flags: str
) -> subprocess.CompletedProcess[str]:
    code = f"URL = {url!r}\nSETTINGS = {settings}\n" + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def assert_clean_exit(result: subprocess.CompletedProcess[str]) -> None:
    assert result.stderr == ""
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_sqlite_shutdown_is_clean(tmp_path: Path, script: str) -> None:
    result = run_script(SCRIPTS[script], f"sqlite:///{tmp_path / 'shutdown.db'}")
    assert_clean_exit(result)
    if script == "stranded-threads":
        assert result.stdout.strip() == "waiting 3 busy 2"
    else:
        assert "main done" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_postgresql_shutdown_is_clean(postgres_url: str, script: str) -> None:
    settings = "{'connect_timeout': 5}"
    url = postgres_url + "?application_name=dbpool-test-shutdown"
    result = run_script(SCRIPTS[script], url, settings)
    assert_clean_exit(result)
    if script == "stranded-threads":
        assert result.stdout.strip() == "waiting 3 busy 2"


@pytest.mark.parametrize("script", ["stranded-threads", "forgotten-globals"])
def test_mysql_shutdown_is_clean(mysql_url: str, script: str) -> None:
    result = run_script(SCRIPTS[script], mysql_url)
    assert_clean_exit(result)


def test_shutdown_reports_what_it_should_under_dev_mode(tmp_path: Path) -> None:
    """With warnings shown, forgotten checkouts are named (and still no traceback)."""
    result = run_script(
        FORGOTTEN_GLOBALS,
        f"sqlite:///{tmp_path / 'dev.db'}",
        "{}",
        "-W",
        "always::ResourceWarning",
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert result.stderr.count("ResourceWarning") >= 1, result.stderr
