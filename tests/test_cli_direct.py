"""``dbpool check`` (and ``flask dbpool check``) with a direct URL: both URLs shown with
their passwords hidden, both checked, a failure on the direct one named as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbpool.cli import main
from tests.integration.targets import with_query
from tests.pgbouncer import free_port
from tests.servers import POSTGRES_URL, need, need_module

SECRET = "S3cret-main"
DIRECT_SECRET = "S3cret-direct"


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIRECT_URL", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", "--threads", "2", "--checkouts", "2", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


def postgres() -> str:
    need_module("psycopg")
    need(POSTGRES_URL)
    return POSTGRES_URL


def test_both_urls_are_shown_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sqlite:///pooled.db", "--direct-url", "sqlite:///direct.db")
    assert code == 0, err
    assert "checking sqlite:///pooled.db (given)" in out
    assert "direct URL: sqlite:///direct.db (given)" in out
    assert "direct connection: opened in" in out
    assert out.rstrip().endswith("OK")
    assert Path("direct.db").exists()


def test_postgresql_passwords_are_hidden_on_both_urls(capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres()  # trust authentication: any password logs in
    direct = with_query(with_password(url, DIRECT_SECRET), application_name="dbpool_direct_cli")
    code, out, err = run(capsys, with_password(url, SECRET), "--direct-url", direct)
    assert code == 0, err
    assert SECRET not in out + err and DIRECT_SECRET not in out + err
    assert "checking postgresql://postgres:***@127.0.0.1:5432/test (given)" in out
    assert "direct URL: postgresql://postgres:***@127.0.0.1:5432/test?application_name=" in out
    assert "direct connection: opened in" in out


def test_a_failing_direct_url_is_one_error_line_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = postgres()
    port = free_port()  # nothing listens there
    direct = f"postgresql://postgres:{DIRECT_SECRET}@127.0.0.1:{port}/test"
    code, out, err = run(capsys, with_password(url, SECRET), "--direct-url", direct)
    assert code == 1
    assert "pool status:" in out  # the pooled URL was checked first, and passed
    assert err.startswith(f"dbpool: error: direct URL postgresql://postgres:***@127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1
    assert DIRECT_SECRET not in out + err and SECRET not in out + err


def test_a_failing_sqlite_direct_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "sqlite:///a.db", "--direct-url", "sqlite:///no/such/dir.db")
    assert code == 1
    assert err.startswith("dbpool: error: direct URL sqlite:///no/such/dir.db: Cannot open")


def test_a_direct_url_of_another_kind_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    direct = f"mysql://root:{DIRECT_SECRET}@127.0.0.1/test"
    code, _out, err = run(capsys, "sqlite:///a.db", "--direct-url", direct)
    assert code == 2
    assert err.startswith("dbpool: error: direct_url must be a sqlite URL")
    assert DIRECT_SECRET not in err


def test_direct_url_environment_goes_with_database_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///pooled.db")
    monkeypatch.setenv("DIRECT_URL", "sqlite:///direct.db")
    code, out, err = run(capsys)
    assert code == 0, err
    assert "direct URL: sqlite:///direct.db (from DIRECT_URL)" in out
    # A URL on the command line is another database: DIRECT_URL is not its direct URL.
    code, out, err = run(capsys, "sqlite:///other.db")
    assert code == 0, err
    assert "direct URL: none (engine.direct() opens an unpooled connection" in out


def test_a_pgbouncer_url_without_direct_url_says_what_direct_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = with_query(postgres(), pgbouncer="true")  # the server itself: the check passes
    code, out, err = run(capsys, url)
    assert code == 0, err
    assert "direct URL: none (engine.direct() needs one with pgbouncer=true" in out


def test_flask_check_shows_and_checks_the_direct_url(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    from flask import Flask

    from dbpool.contrib.flask import DBPool

    app = Flask("clidirect")
    app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / 'pooled.db'}"
    app.config["DBPOOL_SETTINGS"] = {"direct_url": f"sqlite:///{tmp_path / 'direct.db'}"}
    db = DBPool(app)
    result = app.test_cli_runner().invoke(args=["dbpool", "check", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert f"direct URL: sqlite:///{tmp_path / 'direct.db'} (DBPOOL_SETTINGS)" in result.output
    assert "direct connection: opened in" in result.output
    db.get_engine(app).dispose()


def test_flask_takes_direct_url_from_where_database_url_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("flask")
    from flask import Flask

    from dbpool.contrib.flask import DBPool

    pooled, direct = f"sqlite:///{tmp_path / 'pooled.db'}", f"sqlite:///{tmp_path / 'direct.db'}"
    monkeypatch.setenv("DIRECT_URL", f"mysql://root:{DIRECT_SECRET}@elsewhere/db")  # stray
    configured = Flask("fromconfig")
    configured.config.update(DATABASE_URL=pooled, DIRECT_URL=direct)
    bare = Flask("bare")
    bare.config["DATABASE_URL"] = pooled
    db = DBPool()
    db.init_app(configured)
    db.init_app(bare)  # the stray DIRECT_URL neither attaches itself nor fails
    monkeypatch.setenv("DATABASE_URL", pooled)
    monkeypatch.setenv("DIRECT_URL", direct)
    from_env = Flask("fromenv")
    db.init_app(from_env)
    try:
        assert str(db.get_engine(configured).direct_url) == direct
        assert db.get_engine(bare).direct_url is None
        assert str(db.get_engine(from_env).direct_url) == direct
        result = from_env.test_cli_runner().invoke(args=["dbpool", "check"])
        assert result.exit_code == 0, result.output
        assert "(DIRECT_URL from the environment)" in result.output
    finally:
        for app in (configured, bare, from_env):
            db.get_engine(app).dispose()
