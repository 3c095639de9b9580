"""examples/cron_batch.py, run as cron runs it, leaves no connection behind.

The script runs unchanged in a child process (``runpy``, as ``python cron_batch.py``).
The only addition is a pause around ``Engine.dispose``: just before it, the server must
show the script's connection (so the count can fail), and just after it, while the
process is still alive, none. A process that exits closes its sockets anyway, so only a
count taken before the exit proves the script closed them. The same holds when the
script fails halfway: the exit status is 1, the message says why, nothing of the file
is kept, and no password is printed.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.examples_support import (
    EXAMPLES,
    Sessions,
    mariadb_sessions,
    postgres_sessions,
)
from tests.test_lifecycle import ROOT, Script

CRON_BATCH = EXAMPLES / "cron_batch.py"

# Runs the example as `python cron_batch.py FILE` would, pausing in dispose() for the test.
OBSERVED = """
import runpy, sys
import dbpool

dispose = dbpool.Engine.dispose

def observed_dispose(self, timeout=None):
    print(f"disposing with {{self.status().open}} open", flush=True)
    sys.stdin.readline()
    dispose(self, timeout)
    print("disposed", flush=True)
    sys.stdin.readline()

dbpool.Engine.dispose = observed_dispose
sys.argv = [{script!r}, {csv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.fixture(params=["postgresql", "mariadb"])
def sessions(request: pytest.FixtureRequest) -> Iterator[Sessions]:
    password = f"pw-{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        admin_url = request.getfixturevalue("postgres_url")
        watched = postgres_sessions(admin_url, f"dbpool-cron-{uuid.uuid4().hex[:12]}", password)
    else:
        admin_url = request.getfixturevalue("mysql_url")
        user, password = request.getfixturevalue("mysql_user")
        watched = mariadb_sessions(admin_url, user, password)
    yield watched
    watched.run("DROP TABLE IF EXISTS dbpool_ex_readings")
    watched.run("DROP TABLE IF EXISTS dbpool_ex_imports")
    watched.observer.dispose()


def write_readings(path: Path, count: int, bad_line: int | None = None, bad: str = "") -> Path:
    lines = [f"sensor-{n % 3},{n}" for n in range(1, count + 1)]
    if bad_line is not None:
        lines[bad_line - 1] = bad
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_observed(
    sessions: Sessions, csv: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, Script]:
    """Run the script on ``csv``; assert one connection before dispose() and none after."""
    monkeypatch.setenv("DATABASE_URL", sessions.url)
    script = Script(OBSERVED.format(script=str(CRON_BATCH), csv=str(csv)), cwd=csv.parent)
    script.expect("disposing with 1 open")
    assert sessions.wait_for(1) == 1, "the server shows the script's idle connection"
    script.tell("go")
    script.expect("disposed")
    assert sessions.wait_for(0) == 0, "dispose() closed the script's connection"
    script.tell("go")
    return script.finish(), script


def imported_rows(sessions: Sessions, csv: Path) -> int:
    return int(
        sessions.scalar(
            "SELECT COUNT(*) FROM dbpool_ex_readings WHERE import_name = :name",
            {"name": csv.name},
        )
    )


def test_a_successful_run_imports_the_file_and_leaves_no_connection(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = write_readings(tmp_path / f"readings-{uuid.uuid4().hex[:8]}.csv", 1200)

    status, script = run_observed(sessions, csv, monkeypatch)

    assert status == 0, script.stderr
    assert script.lines[:4] == [
        f"{csv.name}: imported 1200 readings",
        "sensor-0: total 240600 over 400 readings",
        "sensor-1: total 239800 over 400 readings",
        "sensor-2: total 240200 over 400 readings",
    ]
    assert imported_rows(sessions, csv) == 1200


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("sensor-1,twelve", "line 700: 'twelve' is not an integer"),
        # Accepted by the script, refused by the database: the second chunk fails there.
        ("sensor-1,99999999999", "out of range"),
    ],
    ids=["bad-line", "database-error"],
)
def test_a_run_that_fails_halfway_exits_1_keeps_nothing_and_leaves_no_connection(
    sessions: Sessions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bad: str,
    message: str,
) -> None:
    # The bad line is in the second chunk of 500: the first was already sent.
    csv = write_readings(tmp_path / f"readings-{uuid.uuid4().hex[:8]}.csv", 1200, 700, bad)

    status, script = run_observed(sessions, csv, monkeypatch)

    assert status == 1, script.stderr
    assert script.lines == ["disposing with 1 open", "disposed"]
    # (psycopg may log a warning of its own first: "error ignored terminating <Pipeline>")
    (said,) = [line for line in script.stderr.splitlines() if line.startswith("cron_batch:")]
    assert said.startswith(f"cron_batch: {csv.name} was not imported: "), script.stderr
    assert message.lower() in said.lower(), script.stderr
    assert "Traceback" not in script.stderr
    assert sessions.password not in script.stderr
    assert imported_rows(sessions, csv) == 0, "the transaction was rolled back"


def run_plain(csv: Path, database_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, str(CRON_BATCH), str(csv)],
        cwd=csv.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_as_a_plain_script_on_sqlite_rerun_and_failure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'readings.db'}"
    good = write_readings(tmp_path / "good.csv", 6)
    bad = write_readings(tmp_path / "bad.csv", 6, 4, "sensor-1")

    first = run_plain(good, url)
    again = run_plain(good, url)
    failed = run_plain(bad, url)

    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout.splitlines() == [
        "good.csv: imported 6 readings",
        "sensor-0: total 9 over 2 readings",
        "sensor-1: total 5 over 2 readings",
        "sensor-2: total 7 over 2 readings",
    ]
    assert again.returncode == 0
    assert again.stdout.splitlines()[0] == "good.csv: imported before, nothing to do"
    assert again.stdout.splitlines()[1:] == first.stdout.splitlines()[1:], "nothing doubled"
    assert failed.returncode == 1
    assert failed.stderr == (
        "cron_batch: bad.csv was not imported: line 4: expected 'sensor,value', got 'sensor-1'\n"
    )
    assert failed.stdout == ""


def test_without_database_url_it_says_how_to_give_one(tmp_path: Path) -> None:
    proc = run_plain(write_readings(tmp_path / "r.csv", 1), None)

    assert proc.returncode == 1
    assert "set DATABASE_URL" in proc.stderr and "Traceback" not in proc.stderr


def test_without_a_file_argument_it_prints_its_usage(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(CRON_BATCH)], capture_output=True, text=True, timeout=120
    )

    assert (proc.returncode, proc.stderr) == (2, "usage: cron_batch.py CSV_FILE\n")
