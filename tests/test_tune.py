"""``dbpool tune`` on SQLite: the script reader, the recommendation, a short measured run,
its table, JSON and PNG, the argument errors, the path without the ``tune`` extra, and
Ctrl-C. The same against PostgreSQL and MariaDB: tests/integration/test_tune.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dbpool import ConfigError, make_url
from dbpool.budget import ServerUsage, plan
from dbpool.cli import _table, main
from dbpool.tune import (
    EXTRA_HINT,
    Step,
    as_json,
    default_sizes,
    load_workload,
    parse_defines,
    parse_sizes,
    progress_bar,
    recommend,
    report,
    run,
    split_statements,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "S3cret-pw"
# Short runs: two sizes of 0.3 s after 0.1 s of warm-up.
QUICK = ["--sizes", "1,2", "--seconds", "0.3", "--warmup", "0.1", "--threads", "4"]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.syspath_prepend(str(ROOT))  # --callable tests.tune_support:...
    return tmp_path


def tune(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["tune", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str) -> None:
    assert err.startswith("dbpool: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def assert_png(path: Path) -> None:
    """A real PNG of the plot's size with something drawn on it."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 700)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 10  # lines, text, markers: not blank


def table_sizes(out: str) -> list[int]:
    """The sizes in the printed table's first column."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("size "))
    sizes = []
    for line in lines[start + 2 :]:
        if not line[:1].isdigit():
            break
        sizes.append(int(line.split()[0]))
    return sizes


def step(size: int, throughput: float, timeouts: int = 0, errors: int = 0) -> Step:
    return Step(size, 1.0, int(throughput), throughput, 0.001, 0.002, 0.003, 0.001, 0.002,
                timeouts, errors)  # fmt: skip


def server_plan(limit: int, instances: int) -> Any:
    usage = ServerUsage(
        max_connections=limit, reserved=0, reserved_by="", user="app", user_limit=None,
        user_limit_by="", database_limit=None, holders=(),
    )  # fmt: skip
    return plan(usage, instances=instances, connection_limit=5, explicit=False,
                default_limit=5, headroom=0)  # fmt: skip


# -- sizes, scripts, parameters ------------------------------------------------------------


def test_parse_sizes_sorts_and_deduplicates() -> None:
    assert parse_sizes("8, 1,2,2") == [1, 2, 8]


@pytest.mark.parametrize("value", ["", "0", "1,,2", "two", "1,-2", "1.5"])
def test_bad_sizes(value: str) -> None:
    with pytest.raises(ConfigError, match="--sizes takes pool sizes"):
        parse_sizes(value)


@pytest.mark.parametrize(
    ("default", "current", "expected"),
    [
        (5, None, [1, 2, 4, 5, 8]),
        (9, None, [1, 2, 4, 8, 9, 16]),
        (17, None, [1, 2, 4, 8, 16, 17, 32]),
        (1, None, [1, 2]),  # SQLite's default
        (5, 12, [1, 2, 4, 5, 8, 12]),  # the URL's own connection_limit is measured too
    ],
)
def test_default_sizes_go_a_bit_above_the_default(
    default: int, current: int | None, expected: list[int]
) -> None:
    assert default_sizes(default, current) == expected


def test_split_statements_respects_quotes_and_comments() -> None:
    script = """
        INSERT INTO t VALUES ('a;b', "c;d", E'e\\';f');  -- a comment; with a semicolon
        /* block; /* nested; */ still */ SELECT $$x;y$$, $tag$;$tag$;
        SELECT 3 ;
        -- only a comment;
    """
    statements = split_statements(script)
    assert len(statements) == 3, statements
    assert statements[0] == "INSERT INTO t VALUES ('a;b', \"c;d\", E'e\\';f')"
    assert statements[1].startswith("-- a comment; with a semicolon\n")
    assert statements[1].endswith("SELECT $$x;y$$, $tag$;$tag$")
    assert statements[2] == "SELECT 3"


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_set_lines_draw_fresh_parameters(tmp_path: Path) -> None:
    script = write(tmp_path / "w.sql", "\\set id random(1, 10 * :scale)\n"
                   "\\set half :id / 2\nSELECT :id, :half, :scale;\n")  # fmt: skip
    workload = load_workload(sql_file=script, defines={"scale": 3})
    assert workload.kind == "sql-file" and workload.description == "w.sql (1 statement)"
    from dbpool import create_engine

    with create_engine("sqlite:///w.db") as engine, engine.connect() as conn:
        for _ in range(20):
            workload(conn)
    from dbpool.tune import _Parameters

    draw = _Parameters([("id", "random(1, 10 * :scale)"), ("half", ":id / 2")],
                       {"scale": 3}, "w.sql")  # fmt: skip
    seen = set()
    for _ in range(500):
        params = draw()
        assert 1 <= params["id"] <= 30 and params["half"] == params["id"] // 2
        assert params["scale"] == 3
        seen.add(params["id"])
    assert len(seen) > 20  # a fresh value each time, not one fixed draw


@pytest.mark.parametrize(
    ("script", "defines", "expected"),
    [
        ("SELECT :id;", {}, "statement 1 uses :id, which has no value"),
        ("\\set id random(1, 10 * :scale)\nSELECT :id;", {}, ":scale has no value"),
        ("\\set id __import__('os')\nSELECT :id;", {}, "the only function is random(lo, hi)"),
        ("\\set id (1).real\nSELECT :id;", {}, "attribute is not allowed"),
        ("\\set id 1.5\nSELECT :id;", {}, "1.5 is not an integer"),
        ("\\set id x\nSELECT :id;", {}, "x is not a :name"),
        ("\\set id random\nSELECT :id;", {}, "random is a function: random(lo, hi)"),
        ("\\sleep 10\nSELECT 1;", {}, "only \\set name expression is understood"),
        ("BEGIN;\nSELECT 1;\nEND;", {}, "statement 1 is BEGIN: leave transaction control out"),
        ("-- nothing\n", {}, "has no SQL statement"),
    ],
)
def test_bad_scripts_are_config_errors(
    tmp_path: Path, script: str, defines: dict[str, int], expected: str
) -> None:
    path = write(tmp_path / "bad.sql", script)
    with pytest.raises(ConfigError, match=r"^--sql-file .*bad\.sql") as caught:
        load_workload(sql_file=path, defines=defines)
    assert expected in str(caught.value)


def test_pgbenchs_tpcb_like_script_loads() -> None:
    workload = load_workload(sql_file=str(ROOT / "benchmarks/tune/tpcb-like.sql"),
                             transaction=True, defines={"scale": 1})  # fmt: skip
    assert workload.description == "tpcb-like.sql (5 statements)"
    assert workload.transaction


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "give exactly one of --sql, --sql-file or --callable"),
        ({"sql": "SELECT 1", "call": "m:f"}, "not --sql and --callable"),
        ({"sql": "SELECT :x"}, "--sql uses :x, which has no value"),
        ({"sql_file": "missing.sql"}, "--sql-file missing.sql: cannot read it"),
        ({"call": "no_colon"}, "--callable must be module:function"),
        ({"call": "no_such_module_here:f"}, "cannot import no_such_module_here"),
        ({"call": "tests.tune_support:nothing"}, "tests.tune_support has no nothing"),
        ({"call": "tests.tune_support:NOT_CALLABLE"}, "NOT_CALLABLE is not callable"),
    ],
)
def test_bad_workloads(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_workload(**kwargs)
    assert expected in str(caught.value)


def test_defines() -> None:
    assert parse_defines(["scale=10", "n = -2"]) == {"scale": 10, "n": -2}
    for bad in ("scale", "=3", "scale=ten", "1x=2"):
        with pytest.raises(ConfigError, match="--define takes name=integer"):
            parse_defines([bad])


# -- the recommendation ---------------------------------------------------------------------


def test_the_smallest_size_within_five_percent_of_the_best() -> None:
    steps = [step(1, 500), step(2, 960), step(4, 1000), step(8, 990)]
    rec = recommend(steps, default_size=5)
    assert (rec.measured, rec.best, rec.connection_limit, rec.capped) == (2, 4, 2, False)
    assert rec.seeds == 5
    assert any("seeds' rule: default size 5 // 1 instance = 5" in note for note in rec.notes)


def test_sizes_with_timeouts_or_errors_are_never_recommended() -> None:
    steps = [step(1, 990, timeouts=3), step(2, 995, errors=1), step(4, 1000)]
    rec = recommend(steps, default_size=5)
    assert rec.measured == 4
    assert any("Left out for timeouts or errors: size 1,2" in note for note in rec.notes)


def test_nothing_to_recommend_when_every_size_timed_out() -> None:
    rec = recommend([step(1, 10, timeouts=5), step(2, 20, timeouts=1)], default_size=5)
    assert rec.measured is None and rec.connection_limit is None
    assert "Raise --pool-timeout" in rec.notes[0]
    assert recommend([], default_size=5).notes == ("Nothing was measured.",)


def test_the_budget_caps_the_recommendation_at_the_instance_share() -> None:
    steps = [step(1, 100), step(4, 300), step(8, 1000)]
    rec = recommend(steps, default_size=5, instances=4, plan=server_plan(20, 4))
    assert (rec.measured, rec.connection_limit, rec.capped, rec.share) == (8, 5, True, 5)
    assert any("Capped at 5, each instance's share" in note for note in rec.notes)
    assert any("default size 5 // 4 instances = 1" in note for note in rec.notes)
    fits = recommend(steps, default_size=5, instances=1, plan=server_plan(20, 1))
    assert (fits.connection_limit, fits.capped) == (8, False)
    none_left = recommend(steps, default_size=5, instances=30, plan=server_plan(20, 30))
    assert any("not even one per instance" in note for note in none_left.notes)


# -- a measured run ---------------------------------------------------------------------------


def test_a_short_run_measures_every_size() -> None:
    url = make_url("sqlite:///run.db")
    result = run(url, load_workload(sql="SELECT 1"), sizes=[1, 2], threads=4, seconds=0.3,
                 warmup=0.1, progress=False)  # fmt: skip
    assert [s.size for s in result.steps] == [1, 2]
    assert not result.interrupted
    for measured in result.steps:
        assert measured.completed > 0 and measured.throughput > 0
        assert measured.timeouts == 0 and measured.errors == 0
        assert 0 <= measured.wait_p50 <= measured.wait_p99 <= measured.wait_max
        assert 0 < measured.query_p50 <= measured.query_p99
        assert measured.seconds == pytest.approx(0.3)
    assert result.recommendation is not None and result.recommendation.measured in (1, 2)
    assert result.default_size == 1 and result.plan is None
    assert "sqlite has no server connection limit" in result.budget_note
    document = json.loads(json.dumps(as_json(result, url)))
    assert [entry["size"] for entry in document["sizes"]] == [1, 2]


def test_timeouts_are_counted_and_keep_a_size_from_being_recommended() -> None:
    # 8 callers holding the only connection 50 ms each, pool_timeout 10 ms: most time out.
    result = run(make_url("sqlite:///run.db"), load_workload(call="tests.tune_support:hold"),
                 sizes=[1], threads=8, seconds=0.4, warmup=0.0, pool_timeout=0.01,
                 progress=False)  # fmt: skip
    (only,) = result.steps
    assert only.timeouts > 0 and only.completed > 0
    assert result.recommendation is not None and result.recommendation.measured is None
    assert "timeouts/errors" in report(result, _table)


def test_errors_are_counted_once_the_first_unit_worked(tmp_path: Path) -> None:
    # Fails on every third call after the first: counted, the run goes on.
    calls = {"n": 0}

    def sometimes(conn: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1 and calls["n"] % 3 == 0:
            raise RuntimeError("boom")

    from dbpool.tune import Workload

    result = run(make_url("sqlite:///run.db"), Workload("callable", "sometimes", False,
                 sometimes), sizes=[1], threads=2, seconds=0.2, warmup=0.0,
                 progress=False)  # fmt: skip
    assert result.steps[0].errors > 0
    assert result.steps[0].first_error == "RuntimeError: boom"
    assert "size 1, first error: RuntimeError: boom" in report(result, _table)


def test_the_cli_prints_a_table_and_writes_json_and_png(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = tune(capsys, "sqlite:///cli.db", "--sql", "SELECT 1", *QUICK,
                          "--json", "tune.json", "--plot", "tune.png")  # fmt: skip
    assert code == 0, err
    assert "workload: SELECT 1" in out
    assert table_sizes(out) == [1, 2]
    assert "Recommended: connection_limit=" in out
    document = json.loads((tmp_path / "tune.json").read_text())
    assert [entry["size"] for entry in document["sizes"]] == [1, 2]
    assert document["recommendation"]["connection_limit"] in (1, 2)
    assert document["interrupted"] is False
    for entry in document["sizes"]:
        assert entry["completed"] > 0
        assert set(entry["checkout_wait_ms"]) == {"p50", "p99", "max"}
        assert set(entry["query_latency_ms"]) == {"p50", "p99"}
    assert_png(tmp_path / "tune.png")
    assert EXTRA_HINT not in err  # the extra is installed in the test environment


def test_json_to_stdout_is_only_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = tune(capsys, "sqlite:///cli.db", "--callable",
                          "tests.tune_support:select_one", "--transaction", *QUICK,
                          "--json", "-")  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["workload"] == {"kind": "callable", "transaction": True,
                                    "description": "tests.tune_support:select_one"}  # fmt: skip
    assert len(document["sizes"]) == 2
    assert "workload:" in err  # the header went to stderr, out of the JSON's way


def test_a_sql_file_in_a_transaction(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from dbpool import create_engine, text

    with create_engine("sqlite:///file.db") as engine, engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(
            text("INSERT INTO counter VALUES (:id, 0)"), [{"id": i} for i in range(1, 11)]
        )
    script = write(tmp_path / "unit.sql", "\\set id random(1, :rows)\n"
                   "UPDATE counter SET n = n + 1 WHERE id = :id;\n"
                   "SELECT n FROM counter WHERE id = :id;\n")  # fmt: skip
    code, out, err = tune(capsys, "sqlite:///file.db", "--sql-file", script, "--transaction",
                          "--define", "rows=10", *QUICK, "--json", "t.json")  # fmt: skip
    assert code == 0, err
    assert "workload: unit.sql (2 statements) in one transaction" in out
    document = json.loads((tmp_path / "t.json").read_text())
    done = sum(entry["completed"] for entry in document["sizes"])
    with create_engine("sqlite:///file.db") as engine, engine.connect() as conn:
        total = conn.execute(text("SELECT sum(n) FROM counter")).scalar()
    assert total >= done > 0  # every measured unit committed (and the warm-up's too)


# -- argument errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "one of the arguments --sql --sql-file --callable is required"),
        (["--sql", "SELECT 1", "--sql-file", "x.sql"], "not allowed with argument --sql"),
        (["--sql", "SELECT 1", "--sizes", "0,1"], "--sizes takes pool sizes"),
        (["--sql", "SELECT 1", "--sizes", "four"], "--sizes takes pool sizes"),
        (["--sql", "SELECT 1", "--threads", "0"], "integer >= 1"),
        (["--sql", "SELECT 1", "--instances", "-1"], "integer >= 1"),
        (["--sql", "SELECT 1", "--seconds", "0"], "a number of seconds > 0"),
        (["--sql", "SELECT 1", "--warmup", "soon"], "a number of seconds >= 0"),
        (["--sql", "SELECT 1", "--pool-timeout", "-1"], "a number of seconds >= 0"),
        (["--sql", "SELECT 1", "--bogus"], "unrecognized arguments: --bogus"),
        (["--sql", "SELECT 1", "--threads"], "expected one argument"),
        (["--sql", "SELECT :id"], "--sql uses :id, which has no value"),
        (["--sql-file", "missing.sql"], "--sql-file missing.sql: cannot read it"),
        (["--callable", "nowhere:f"], "cannot import nowhere"),
        (["--sql", "SELECT 1", "--define", "x"], "--define takes name=integer"),
        (["--sql", "SELECT 1", "--json", "no/such/dir/t.json"], "--json: no directory"),
        (["--sql", "SELECT 1", "--plot", "no/such/dir/t.png"], "--plot: no directory"),
        (["not a url", "--sql", "SELECT 1"], "Could not parse a database URL"),
        (["sqlite:///t.db?pool_timeout=soon", "--sql", "SELECT 1"], "pool_timeout must be"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], expected: str
) -> None:
    code, out, err = tune(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_error_line(err)
    assert expected in err
    assert not list(tmp_path.glob("*.db"))  # nothing opened on the way


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = tune(capsys, "--help")
    assert code == 0
    for option in ("--sql", "--sql-file", "--callable", "--transaction", "--define",
                   "--threads", "--sizes", "--seconds", "--warmup", "--pool-timeout",
                   "--instances", "--json", "--plot"):  # fmt: skip
        assert option in out


def test_a_failing_statement_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = tune(capsys, "sqlite:///t.db", "--sql", "SELECT * FROM no_such_table", *QUICK)
    assert code == 1
    assert_one_error_line(err)
    assert "no such table" in err


def test_a_failing_callable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = tune(capsys, "sqlite:///t.db", "--callable", "tests.tune_support:fail", *QUICK)
    assert code == 1
    assert_one_error_line(err)
    assert "the unit of work failed on purpose" in err


def test_an_unreachable_server_exits_1_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://app:{SECRET}@127.0.0.1:1/shop?connect_timeout=2"
    code, out, err = tune(capsys, url, "--sql", "SELECT 1", *QUICK)
    assert code == 1
    assert_one_error_line(err)
    assert "Cannot connect to postgresql at 127.0.0.1:1" in err
    assert SECRET not in err + out


def test_the_progress_bar_shows_the_size_and_the_time_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress_bar([1, 2], per_step=1.5)
    bar.step(1, 2)
    bar.advance(1.5)
    shown = terminal.getvalue()
    bar.close()
    assert "dbpool tune: size 2 (2 of 2)" in shown
    assert "50%" in shown and "<" in shown  # elapsed<remaining
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as without dbpool[tune]
    quiet = progress_bar([1, 2], per_step=1.5)
    quiet.step(0, 1)
    quiet.advance(1.0)
    quiet.close()
    assert type(quiet).__name__ == "_NoProgress"


# -- without the tune extra, and Ctrl-C, in real processes --------------------------------------

# Runs the command with tqdm and matplotlib made unimportable, as without dbpool[tune].
WITHOUT_EXTRA = (
    "import sys; sys.modules['tqdm'] = None; sys.modules['matplotlib'] = None; "
    "from dbpool.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def process(cwd: Path, *argv: str, code: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    program = [sys.executable, "-c", code] if code else [sys.executable, "-m", "dbpool"]
    return subprocess.Popen([*program, *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_without_the_extra_the_table_still_comes(tmp_path: Path) -> None:
    proc = process(tmp_path, "tune", "sqlite:///t.db", "--sql", "SELECT 1", *QUICK,
                   "--json", "t.json", code=WITHOUT_EXTRA)  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert table_sizes(out) == [1, 2]
    assert err.strip() == f"dbpool: {EXTRA_HINT} adds a progress bar and --plot"
    assert len(json.loads((tmp_path / "t.json").read_text())["sizes"]) == 2


def test_without_the_extra_plot_is_refused_before_measuring(tmp_path: Path) -> None:
    proc = process(tmp_path, "tune", "sqlite:///t.db", "--sql", "SELECT 1", *QUICK,
                   "--plot", "t.png", code=WITHOUT_EXTRA)  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert out == ""
    assert_one_error_line(err)
    assert f"--plot needs matplotlib: {EXTRA_HINT}" in err
    assert not (tmp_path / "t.db").exists()


def interrupt_after(proc: subprocess.Popen[str], seconds: float) -> tuple[str, str]:
    """Wait for the header's last line (measuring starts), then ``seconds``, then
    SIGINT, as Ctrl-C in a terminal sends; the whole output."""
    assert proc.stdout is not None
    head = []
    for line in proc.stdout:
        head.append(line)
        if line.startswith("server budget:"):
            break
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return "".join(head) + out, err


def test_ctrl_c_reports_the_sizes_measured_and_exits_130(tmp_path: Path) -> None:
    proc = process(tmp_path, "tune", "sqlite:///t.db", "--sql", "SELECT 1", "--sizes",
                   "1,2,4", "--seconds", "2", "--warmup", "0.1", "--threads", "4",
                   "--json", "t.json", "--plot", "t.png")  # fmt: skip
    out, err = interrupt_after(proc, 3.2)  # inside size 2 (each size takes 2.1 s)
    assert proc.returncode == 130, err
    measured = table_sizes(out)
    assert measured in ([1], [1, 2]), out  # [1, 2] only on a very slow machine
    assert f"Interrupted: {len(measured)} of 3 sizes measured" in out
    assert "Traceback" not in err
    document = json.loads((tmp_path / "t.json").read_text())
    assert document["interrupted"] is True and len(document["sizes"]) == len(measured)
    assert_png(tmp_path / "t.png")


def test_ctrl_c_before_the_first_size_is_done(tmp_path: Path) -> None:
    proc = process(tmp_path, "tune", "sqlite:///t.db", "--sql", "SELECT 1", "--sizes", "1,2",
                   "--seconds", "5", "--warmup", "0", "--threads", "4")  # fmt: skip
    out, err = interrupt_after(proc, 0.5)
    assert proc.returncode == 130, err
    assert "Interrupted: 0 of 2 sizes measured (stopped during size 1)." in out
    assert "Nothing was measured." in out
    assert "Traceback" not in err
