"""``dbpool tune`` on the real PostgreSQL and MariaDB: a short run's table, JSON and PNG,
a multi-statement unit of work in a transaction with fresh parameters, the server's
connection budget in the recommendation, argument and database errors, and Ctrl-C.

Other sessions use the servers too: the tests work on tables of their own
(``dbpool_tune_...``) and assert nothing about connections others hold.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbpool import make_url
from dbpool.cli import main
from tests.servers import MYSQL_URL, POSTGRES_URL, admin_query, need, need_module
from tests.test_tune import QUICK, ROOT, assert_one_error_line, assert_png, table_sizes

SERVERS = [
    pytest.param((POSTGRES_URL, "psycopg", "postgresql"), id="postgresql"),
    pytest.param((MYSQL_URL, "pymysql", "mysql"), id="mariadb"),
]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    url, driver, vendor = request.param
    need_module(driver)
    need(url)
    return url, vendor


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def accounts(server: tuple[str, str]) -> Iterator[str]:
    """A small table of 100 accounts of this test's own."""
    url, vendor = server
    table = f"dbpool_tune_{uuid.uuid4().hex[:10]}"
    admin_query(vendor, f"CREATE TABLE {qualified(url, table)} "
                "(id INTEGER PRIMARY KEY, balance INTEGER)")  # fmt: skip
    values = ", ".join(f"({i}, 0)" for i in range(1, 101))
    admin_query(vendor, f"INSERT INTO {qualified(url, table)} VALUES {values}")
    try:
        yield table
    finally:
        admin_query(vendor, f"DROP TABLE {qualified(url, table)}")


def qualified(url: str, table: str) -> str:
    """The table as admin_query reaches it: its MySQL connection has no database."""
    return table if url == POSTGRES_URL else f"{make_url(url).database}.{table}"


def tune(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["tune", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_short_run_gives_a_table_json_and_a_png(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: tuple[str, str]
) -> None:
    url, vendor = server
    code, out, err = tune(capsys, url, "--sql", "SELECT 1", *QUICK, "--json", "t.json",
                          "--plot", "t.png")  # fmt: skip
    assert code == 0, err
    assert f"database: {vendor}" in out
    assert "server budget: " in out and " per instance for 1 instance" in out
    assert table_sizes(out) == [1, 2]
    assert "Fits the server's connection budget" in out
    document = json.loads((tmp_path / "t.json").read_text())
    assert document["database"] == vendor
    assert [entry["size"] for entry in document["sizes"]] == [1, 2]
    assert all(entry["completed"] > 0 and entry["errors"] == 0 for entry in document["sizes"])
    assert document["budget"]["share_per_instance"] >= 2
    assert document["recommendation"]["connection_limit"] in (1, 2)
    assert_png(tmp_path / "t.png")


def test_a_transaction_of_several_statements_with_fresh_parameters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: tuple[str, str], accounts: str
) -> None:
    url, vendor = server
    script = tmp_path / "transfer.sql"
    script.write_text(
        "-- move an amount from one account to another\n"
        "\\set a random(1, :n)\n\\set b random(1, :n)\n\\set amount random(1, 100)\n"
        f"UPDATE {accounts} SET balance = balance - :amount WHERE id = :a;\n"
        f"UPDATE {accounts} SET balance = balance + :amount WHERE id = :b;\n"
        f"SELECT balance FROM {accounts} WHERE id = :a;\n",
        encoding="utf-8",
    )
    code, out, err = tune(capsys, url, "--sql-file", str(script), "--transaction",
                          "--define", "n=100", *QUICK, "--json", "t.json")  # fmt: skip
    assert code == 0, err
    assert "workload: transfer.sql (3 statements) in one transaction" in out
    document = json.loads((tmp_path / "t.json").read_text())
    assert all(entry["completed"] > 0 for entry in document["sizes"])
    # Every transfer committed whole: the money is all still there, and it moved around.
    ((total, moved),) = admin_query(
        vendor, f"SELECT SUM(balance), SUM(CASE WHEN balance <> 0 THEN 1 ELSE 0 END) "
        f"FROM {qualified(url, accounts)}"
    )  # fmt: skip
    assert int(total) == 0
    assert int(moved) > 10


def test_the_budget_caps_the_recommendation_for_many_instances(
    capsys: pytest.CaptureFixture[str], server: tuple[str, str]
) -> None:
    url, _ = server
    code, out, err = tune(capsys, url, "--sql", "SELECT 1", *QUICK, "--json", "-",
                          "--instances", "100000")  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    rec = document["recommendation"]
    assert document["budget"]["share_per_instance"] == 0
    assert rec["seeds_rule"] == 1
    assert any("not even one per instance" in note for note in rec["notes"])


def test_sizes_past_the_servers_budget_are_refused(
    capsys: pytest.CaptureFixture[str], server: tuple[str, str]
) -> None:
    url, _ = server
    code, out, err = tune(capsys, url, "--sql", "SELECT 1", "--sizes", "1,100000")
    assert code == 2
    assert out == ""  # refused before measuring
    assert_one_error_line(err)
    assert "--sizes goes up to 100000, more than the" in err


def test_a_failing_statement_exits_1(
    capsys: pytest.CaptureFixture[str], server: tuple[str, str]
) -> None:
    url, _ = server
    code, _, err = tune(capsys, url, "--sql", "SELECT * FROM dbpool_tune_no_such_table", *QUICK)
    assert code == 1
    assert_one_error_line(err)
    assert "dbpool_tune_no_such_table" in err


def test_ctrl_c_stops_cleanly_and_reports_what_was_measured(tmp_path: Path) -> None:
    need_module("psycopg")
    need(POSTGRES_URL)
    application_name = f"dbpool_tune_{uuid.uuid4().hex[:10]}"
    url = f"{POSTGRES_URL}?application_name={application_name}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbpool", "tune", url, "--sql", "SELECT pg_sleep(0.001)",
         "--sizes", "1,2,4", "--seconds", "2", "--warmup", "0.1", "--threads", "8",
         "--json", "t.json"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    head = []
    for line in proc.stdout:
        head.append(line)
        if line.startswith("server budget:"):
            break
    time.sleep(3.2)  # inside size 2 (each size takes 2.1 s)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    out = "".join(head) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    measured = table_sizes(out)
    assert measured in ([1], [1, 2]), out
    assert f"Interrupted: {len(measured)} of 3 sizes measured" in out
    document = json.loads((tmp_path / "t.json").read_text())
    assert document["interrupted"] is True and len(document["sizes"]) == len(measured)
    # The engine was disposed: none of the run's connections is left on the server.
    left = admin_query(
        "postgresql",
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}'",
    )
    assert left == [(0,)]
