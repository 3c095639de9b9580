"""The ``dbpool`` command: in-process through ``main(argv)``, and once as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from subprocess import CompletedProcess

import pytest

import dbpool
from dbpool.cli import main, settings_rows
from dbpool.config import EngineConfig
from dbpool.dialects.sqlite import SQLiteDialect
from tests.servers import MYSQL_URL, need, need_module

SECRET = "S3cret-pw"
# A statement that keeps SQLite busy for a good fraction of a second (with the GIL
# released), so a second thread cannot get the pool's only connection in 50 ms.
SLOW_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
    "SELECT count(*) FROM c"
)


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(cwd: Path, *argv: str, program: Sequence[str] = ()) -> CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [*(program or (sys.executable, "-m", "dbpool")), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_table(out: str) -> dict[str, tuple[str, str]]:
    """setting name -> (value, source), parsed from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("setting "))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        name, value, source = (cell.strip() for cell in line.split("  ") if cell.strip())
        rows[name] = (value, source)
    return rows


def assert_one_error_line(err: str) -> None:
    assert err.startswith("dbpool: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# -- success -------------------------------------------------------------------------------


def test_check_without_url_uses_embedded_sqlite_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert (tmp_path / "dbpool-check.db").is_file()
    assert "sqlite:///dbpool-check.db" in out
    table = settings_table(out)
    applicable = [name for name in EngineConfig.__dataclass_fields__
                  if name not in SQLiteDialect.inapplicable_settings]  # fmt: skip
    assert list(table) == applicable
    assert table["connection_limit"] == ("1", "default (sqlite)")
    assert table["pool_timeout"] == ("10 s", "default")
    assert "checkouts done  100 of 100" in out
    assert "pool status: connection_limit=1 open=1 busy=0 idle=1 waiting=0" in out
    assert out.rstrip().endswith("OK")
    assert err == ""


def test_settings_from_the_url_are_marked(capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///app.db?connection_limit=3&pool_timeout=2.5&pre_ping=false&journal_mode=wal"
    code, out, err = run(capsys, "check", url, "--threads", "6", "--checkouts", "5")
    assert code == 0, err
    table = settings_table(out)
    assert table["connection_limit"] == ("3", "URL")
    assert table["pool_timeout"] == ("2.5 s", "URL")
    assert table["pre_ping"] == ("off", "URL (no effect on sqlite)")  # SQLite has no ping
    assert table["connect_timeout"] == ("5 s", "default")
    assert table["max_connection_lifetime"] == ("0 (none)", "default")
    assert "probe: 6 threads x 5 checkouts" in out
    assert "checkouts done  30 of 30" in out
    assert "pool status: connection_limit=3 " in out
    assert " busy=0 " in out and " waiting=0 " in out


def test_sqlite_check_lists_only_the_settings_that_apply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "check", "sqlite:///app.db", "--checkouts", "2")
    assert code == 0, err
    table = settings_table(out)
    for name in ("pgbouncer", "schema", "pre_ping"):
        assert name not in table
    for name in ("connection_limit", "pool_timeout", "connect_timeout",
                 "max_idle_connection_lifetime", "isolation_level"):  # fmt: skip
        assert name in table


def test_which_settings_apply_is_the_dialects_rule() -> None:
    need_module("psycopg")
    sqlite = {row[0] for row in settings_rows(dbpool.create_engine("sqlite://"))}
    rows = {name: rest for name, *rest in settings_rows(dbpool.create_engine("postgresql://h/db"))}
    assert rows["pre_ping"] == ["0.5 s window", "default"]
    postgres = set(rows)
    assert postgres == set(EngineConfig.__dataclass_fields__)  # every one applies there
    assert postgres - sqlite == SQLiteDialect.inapplicable_settings & postgres
    assert {"pgbouncer", "schema", "pre_ping"} <= postgres - sqlite


def test_database_url_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")
    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert "sqlite:///from-env.db (from DATABASE_URL)" in out
    assert (tmp_path / "from-env.db").is_file()
    assert not (tmp_path / "dbpool-check.db").exists()


def test_password_is_hidden_on_success(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", f"sqlite://u:{SECRET}@/app.db")
    assert code == 0, err
    assert "sqlite://u:***@/app.db" in out
    assert SECRET not in out + err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"dbpool {dbpool.__version__}"


# -- failures ------------------------------------------------------------------------------


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert err.startswith("usage: dbpool")


@pytest.mark.parametrize("option", ["--threads", "--checkouts"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_probe_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    code, _, err = run(capsys, "check", option, value)
    assert code == 2
    assert option in err and "integer >= 1" in err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///app.db?pool_timeout=soon", "pool_timeout must be a number of seconds"),
        ("sqlite:///app.db?conection_limit=3", 'Did you mean "connection_limit"?'),
        ("sqlite:///app.db?connection_limit=0", "connection_limit must be an integer >= 1"),
        ("nosuchdb://localhost/x", "Unknown database 'nosuchdb'"),
        ("not a url", "Could not parse a database URL"),
    ],
)
def test_bad_configuration_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, expected: str
) -> None:
    code, out, err = run(capsys, "check", url)
    assert code == 2
    assert_one_error_line(err)
    assert expected in err
    assert out == ""
    assert not (tmp_path / "app.db").exists()


def test_unopenable_sqlite_file_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    code, out, err = run(capsys, "check", f"sqlite:///{directory}")
    assert code == 1
    assert_one_error_line(err)
    assert f"Cannot open the SQLite file {directory}" in err
    assert "setting " in out  # the settings were resolved and shown before connecting


def test_failing_query_exits_1_with_the_database_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "check", "--query", "SELEC 1")
    assert code == 1
    assert_one_error_line(err)
    assert "OperationalError" in err and "syntax error" in err
    assert "checkouts done  0 of 100" in out


def test_pool_timeouts_in_the_probe_exit_1_with_p2024(tmp_path: Path) -> None:
    # A real process: the pool logs each timeout as a warning, and the command must keep
    # them off stderr without -v (in-process, pytest's own log handlers would hide them).
    url = "sqlite:///app.db?pool_timeout=0.05"
    proc = run_process(tmp_path, "check", url, "--threads", "3", "--checkouts", "2",
                       "--query", SLOW_QUERY)  # fmt: skip
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr)
    assert proc.stderr.startswith("dbpool: error: P2024 Timed out fetching a new connection")
    assert "current connection limit: 1, pool timeout: 0.05 s" in proc.stderr
    out = proc.stdout
    timeouts = int(next(line for line in out.splitlines() if "timeouts " in line).split()[-1])
    assert timeouts >= 1
    assert f"timeouts_total={timeouts}" in out


def test_verbose_shows_the_library_log(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "--verbose")
    assert code == 0
    assert "INFO Starting a sqlite pool with 1 connections" in err
    code, _, err = run(capsys, "check")
    assert code == 0
    assert err == ""


def test_refused_postgresql_connection_hides_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    need_module("psycopg")
    code, out, err = run(capsys, "check", f"postgresql://u:{SECRET}@127.0.0.1:1/db")
    assert code == 1
    assert_one_error_line(err)
    assert "127.0.0.1" in err
    assert "unexpected" not in err
    assert "postgresql://u:***@127.0.0.1:1/db" in out
    assert SECRET not in out + err


def test_percent_encoded_password_is_hidden_too(capsys: pytest.CaptureFixture[str]) -> None:
    need_module("psycopg")
    code, out, err = run(capsys, "check", "postgresql://u:S3cret%40pw@127.0.0.1:1/db")
    assert code == 1
    assert "unexpected" not in err
    assert "S3cret@pw" not in out + err
    assert "S3cret%40pw" not in out + err


def test_postgresql_check_with_a_password(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    url = dbpool.make_url(postgres_url)
    if url.password is None:  # the test server trusts loopback: any password does
        url = url.set(password=SECRET)
    assert url.password is not None
    code, out, err = run(capsys, "check", url.render_as_string(hide_password=False))
    assert code == 0, err
    assert settings_table(out)["connection_limit"][1] == "default (cores*2+1)"
    assert "checkouts done  100 of 100" in out
    assert url.password not in out + err


def test_mysql_login_refused_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    need_module("pymysql")
    need(MYSQL_URL)
    url = dbpool.make_url(MYSQL_URL).set(password=SECRET + "-wrong")
    code, out, err = run(capsys, "check", url.render_as_string(hide_password=False))
    assert code == 1
    assert_one_error_line(err)
    assert "unexpected" not in err
    assert SECRET not in out + err


# -- as a real process ---------------------------------------------------------------------


def test_python_m_dbpool_check_in_a_fresh_directory(tmp_path: Path) -> None:
    proc = run_process(tmp_path, "check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    table = settings_table(proc.stdout)
    assert (
        set(table) == set(EngineConfig.__dataclass_fields__) - SQLiteDialect.inapplicable_settings
    )
    status = next(line for line in proc.stdout.splitlines() if line.startswith("pool status: "))
    assert "connection_limit=1 open=1 busy=0 idle=1 waiting=0 opened_total=1" in status
    assert (tmp_path / "dbpool-check.db").is_file()


def test_console_script_error_exit(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("dbpool")
    if not script.exists():
        pytest.skip("the dbpool console script is not installed in this environment")
    proc = run_process(tmp_path, "check", "sqlite:///x.db?connection_limit=lots",
                       program=[str(script)])  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("dbpool: error: connection_limit must be an integer >= 1")
    assert "Traceback" not in proc.stderr
