"""Tests for dbpool.sql: ``text()`` and its translation to each DB-API paramstyle."""

from __future__ import annotations

import os
import pickle
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbpool.exc import ArgumentError, DBPoolError
from dbpool.sql import PARAMSTYLES, CompiledSQL, TextClause, text

REQUIRE_DATABASES = os.environ.get("DBPOOL_REQUIRE_DATABASES") == "1"


def _unavailable(reason: str) -> None:
    """Skip, or fail when the run promised real databases."""
    if REQUIRE_DATABASES:
        pytest.fail(f"{reason} (and DBPOOL_REQUIRE_DATABASES=1)")
    pytest.skip(reason)


# --------------------------------------------------------------------------- paramstyles

SIMPLE = "SELECT * FROM users WHERE id = :id AND name = :name"
SIMPLE_PARAMS = {"id": 7, "name": "ann", "unused": object()}


@pytest.mark.parametrize(
    ("paramstyle", "sql", "bound"),
    [
        (
            "named",
            "SELECT * FROM users WHERE id = :id AND name = :name",
            {"id": 7, "name": "ann"},
        ),
        (
            "pyformat",
            "SELECT * FROM users WHERE id = %(id)s AND name = %(name)s",
            {"id": 7, "name": "ann"},
        ),
        ("qmark", "SELECT * FROM users WHERE id = ? AND name = ?", (7, "ann")),
        ("format", "SELECT * FROM users WHERE id = %s AND name = %s", (7, "ann")),
        ("numeric", "SELECT * FROM users WHERE id = :1 AND name = :2", (7, "ann")),
    ],
)
def test_each_paramstyle(paramstyle: str, sql: str, bound: Any) -> None:
    compiled = text(SIMPLE).compile(paramstyle)
    assert compiled.sql == sql
    assert compiled.names == ("id", "name")
    assert compiled.paramstyle == paramstyle
    assert compiled.bind(SIMPLE_PARAMS) == bound
    assert type(compiled.bind(SIMPLE_PARAMS)) is type(bound)


REPEATED = "SELECT :a, :b, :a, :c, :b"


@pytest.mark.parametrize(
    ("paramstyle", "sql", "bound"),
    [
        ("named", "SELECT :a, :b, :a, :c, :b", {"a": 1, "b": 2, "c": 3}),
        ("pyformat", "SELECT %(a)s, %(b)s, %(a)s, %(c)s, %(b)s", {"a": 1, "b": 2, "c": 3}),
        ("qmark", "SELECT ?, ?, ?, ?, ?", (1, 2, 1, 3, 2)),
        ("format", "SELECT %s, %s, %s, %s, %s", (1, 2, 1, 3, 2)),
        ("numeric", "SELECT :1, :2, :1, :3, :2", (1, 2, 3)),
    ],
)
def test_repeated_names(paramstyle: str, sql: str, bound: Any) -> None:
    compiled = text(REPEATED).compile(paramstyle)
    assert compiled.sql == sql
    assert compiled.names == ("a", "b", "a", "c", "b")
    assert compiled.bind({"c": 3, "b": 2, "a": 1}) == bound


def test_numeric_numbers_follow_first_occurrence() -> None:
    compiled = text("SELECT :z, :y, :z, :x").compile("numeric")
    assert compiled.sql == "SELECT :1, :2, :1, :3"
    assert compiled.bind({"x": "x", "y": "y", "z": "z"}) == ("z", "y", "x")


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("WHERE a=:a", ("a",)),
        ("VALUES (:a, :b)", ("a", "b")),
        ("VALUES (:a,:b)", ("a", "b")),
        (":first", ("first",)),
        ("x = :_under_score9", ("_under_score9",)),
        ("a\n:b\t:c", ("b", "c")),
        ("x=:a+:b", ("a", "b")),
        ("x=-:a", ("a",)),
        ("x = :id::int", ("id",)),
        ("x = :ids::text[]", ("ids",)),
        ("x = :a::b::c", ("a",)),
        ("SET @v := :value", ("value",)),
        ("x = $1 AND y = :y", ("y",)),
        ("WHERE a = :a -- note\nAND b = :b", ("a", "b")),
        ("WHERE a = :a -- note\rAND b = :b", ("a", "b")),
        ("/* c */ :a /* d */", ("a",)),
        ("'s':a", ("a",)),
        ('"c":a', ("a",)),
        ("E'\\\\' :a", ("a",)),  # E'\\' is one backslash, so the string ends there
        ("e'x' :a", ("a",)),
        ("$$x$$:a", ("a",)),
        ("SELECT x$y$, :a, z$y$", ("a",)),  # '$' inside identifiers opens no quote
    ],
)
def test_binds_found(sql: str, names: tuple[str, ...]) -> None:
    assert text(sql).compile("named").names == names


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT x::int",
        "SELECT x::text[]",
        "SELECT '1'::int, (a)::bigint, now()::date::text",
        "SELECT arr[1:2], arr[lo:hi]",
        "SELECT ab:cd",
        "SELECT 12:30:00",
        "SELECT ':name'",
        "SELECT '12:30'",
        "SELECT 'it''s :name'",
        "SELECT '' , ':name'",
        "SELECT E'it\\'s :name'",
        "SELECT E'a\\\\\\' :name'",
        "SELECT E'a''\\' :name'",  # '' then \' : both escapes in one E-string
        "SELECT N':name', X'3A', U&':name'",
        'SELECT "col:name" FROM "t"',
        'SELECT "a""b :name"',
        "SELECT `col:name` FROM `t`",
        "SELECT `a``b :name`",
        "SELECT 1 -- where a = :name",
        "SELECT 1 /* :name */",
        "SELECT 1 /* outer /* :inner */ :still_comment */",
        "SELECT 1 /**/",
        "SELECT $$ :name $$",
        "$$:name$$",  # a dollar quote opening the text
        "$t$:name$t$",
        "SELECT $fn$ :name $$ :name $fn$",
        "SELECT $body$ it's :name $body$",
        "SELECT $é$ :name $é$",
        "SELECT ':name",  # unterminated: rest is left to the database to reject
        "SELECT /* :name",
        "SELECT $$ :name",
        "SELECT a := 1",
        "SELECT :1, :2",
        "SELECT 100%, '5%' -- 10%",
    ],
)
def test_left_alone(sql: str) -> None:
    for paramstyle in PARAMSTYLES:
        compiled = text(sql).compile(paramstyle)
        assert compiled.names == ()
        assert compiled.sql == sql  # verbatim, and no % doubling without binds
        assert compiled.bind({"name": 1}) is None


def test_literals_around_binds_are_copied_verbatim() -> None:
    sql = (
        "SELECT x::int, :n::text[], '12:30' AS t, \"col:x\", `b:y`, $$ :no $$, "
        "$f$ :no $f$ -- :no\n, /* :no /* :no */ :no */ :yes, E'it\\'s :no', 'a''b :no'"
    )
    compiled = text(sql).compile("qmark")
    assert compiled.names == ("n", "yes")
    assert compiled.sql == sql.replace(":n::", "?::").replace(":yes", "?")


def test_backslash_colon_escape() -> None:
    stmt = text(r"SELECT '2024-01-01 12\:00' AS t, 12\:30 AS u, \:name, :real, a\::int")
    compiled = stmt.compile("pyformat")
    assert compiled.names == ("real",)
    # Inside a string the text is verbatim; outside, "\:" loses its backslash.
    assert compiled.sql == r"SELECT '2024-01-01 12\:00' AS t, 12:30 AS u, :name, %(real)s, a::int"


def test_backslash_without_colon_is_kept() -> None:
    compiled = text(r"SELECT 'a\b', c \ d, :x").compile("named")
    assert compiled.sql == r"SELECT 'a\b', c \ d, :x"


def test_percent_doubled_when_there_are_binds() -> None:
    sql = "SELECT '100%' /* 5% */, x LIKE 'a%' -- 1%\n, :v % 2, $$%$$, \"p%\", `q%`"
    expected = "SELECT '100%%' /* 5%% */, x LIKE 'a%%' -- 1%%\n, {} %% 2, $$%%$$, \"p%%\", `q%%`"
    assert text(sql).compile("pyformat").sql == expected.format("%(v)s")
    assert text(sql).compile("format").sql == expected.format("%s")
    # Only the %-formatting styles need it.
    assert text(sql).compile("named").sql == sql
    assert text(sql).compile("qmark").sql == sql.replace(":v", "?")
    assert text(sql).compile("numeric").sql == sql.replace(":v", ":1")


def test_percent_not_doubled_without_binds() -> None:
    sql = "SELECT '100%', x % 2 FROM t WHERE y LIKE 'a%'"
    for paramstyle in ("pyformat", "format"):
        compiled = text(sql).compile(paramstyle)
        assert compiled.sql == sql
        assert compiled.bind(None) is None
        assert compiled.bind({}) is None


def test_percent_roundtrip_through_python_formatting() -> None:
    # What psycopg/PyMySQL do to the query when given params, minus quoting.
    compiled = text("SELECT '%d %s %%' || :a, :a || '%(a)s'").compile("pyformat")
    assert compiled.sql % compiled.bind({"a": "A"}) == "SELECT '%d %s %%' || A, A || '%(a)s'"
    compiled = text("SELECT '%d %s %%' || :a, :a || '%(a)s'").compile("format")
    assert compiled.sql % compiled.bind({"a": "A"}) == "SELECT '%d %s %%' || A, A || '%(a)s'"


# --------------------------------------------------------------------------- binding


@pytest.mark.parametrize("paramstyle", PARAMSTYLES)
def test_missing_parameter(paramstyle: str) -> None:
    compiled = text("SELECT * FROM t WHERE id = :id AND x = :x").compile(paramstyle)
    with pytest.raises(ArgumentError, match=r"^A value is required for bind parameter 'id'$"):
        compiled.bind({"x": 1})


@pytest.mark.parametrize("paramstyle", PARAMSTYLES)
def test_every_missing_parameter_is_named(paramstyle: str) -> None:
    compiled = text("SELECT :a, :b, :a, :c").compile(paramstyle)
    with pytest.raises(ArgumentError) as info:
        compiled.bind({"b": 1})
    assert str(info.value) == "A value is required for bind parameters 'a', 'c'"
    with pytest.raises(ArgumentError, match="'a', 'b', 'c'"):
        compiled.bind(None)
    with pytest.raises(ArgumentError, match="'a', 'b', 'c'"):
        compiled.bind({})


def test_missing_parameter_error_is_a_valueerror() -> None:
    with pytest.raises(ValueError):
        text("SELECT :id").compile("qmark").bind(None)
    with pytest.raises(DBPoolError):
        text("SELECT :id").compile("qmark").bind(None)


def test_none_is_a_value() -> None:
    assert text("SELECT :a").compile("qmark").bind({"a": None}) == (None,)
    assert text("SELECT :a").compile("named").bind({"a": None}) == {"a": None}


@pytest.mark.parametrize("paramstyle", PARAMSTYLES)
def test_extra_parameters_ignored(paramstyle: str) -> None:
    compiled = text("SELECT :a").compile(paramstyle)
    bound = compiled.bind({"a": 1, "b": 2, "c": 3})
    assert bound == ({"a": 1} if paramstyle in ("named", "pyformat") else (1,))


def test_bind_accepts_any_mapping() -> None:
    from types import MappingProxyType

    compiled = text("SELECT :a, :b").compile("format")
    assert compiled.bind(MappingProxyType({"a": 1, "b": 2})) == (1, 2)


def test_bind_rejects_a_sequence() -> None:
    compiled = text("SELECT :a").compile("qmark")
    with pytest.raises(ArgumentError, match="mapping"):
        compiled.bind((1,))  # type: ignore[arg-type]


def test_bind_result_is_a_fresh_dict() -> None:
    compiled = text("SELECT :a").compile("named")
    first = compiled.bind({"a": 1})
    first["a"] = 2
    assert compiled.bind({"a": 1}) == {"a": 1}


# --------------------------------------------------------------------------- objects


def test_compile_is_cached_per_paramstyle() -> None:
    stmt = text(SIMPLE)
    compiled = {style: stmt.compile(style) for style in PARAMSTYLES}
    for style in PARAMSTYLES:
        assert stmt.compile(style) is compiled[style]
    assert len({id(c) for c in compiled.values()}) == len(PARAMSTYLES)
    # Another TextClause of the same text shares the (immutable) compiled statement, so
    # text("...") written inline in a loop is not scanned again on every call.
    assert text(SIMPLE).compile("qmark") is compiled["qmark"]


def test_unknown_paramstyle() -> None:
    with pytest.raises(ArgumentError, match="paramstyle 'dollar'"):
        text("SELECT :a").compile("dollar")
    with pytest.raises(ArgumentError):
        CompiledSQL("SELECT 1", (), "NAMED")


def test_text_clause_basics() -> None:
    stmt = text("SELECT :a")
    assert isinstance(stmt, TextClause)
    assert stmt.text == "SELECT :a"
    assert str(stmt) == "SELECT :a"
    assert repr(stmt) == "<TextClause 'SELECT :a'>"


def test_repr_truncates_long_sql() -> None:
    long_sql = "SELECT " + ", ".join(f"col{i}" for i in range(100)) + " FROM t WHERE id = :id"
    shown = repr(text(long_sql))
    assert shown.startswith("<TextClause 'SELECT col0, col1")
    assert shown.endswith("...'>")
    assert len(shown) < 80
    assert "CompiledSQL" in repr(text(long_sql).compile("qmark"))


def test_text_requires_str() -> None:
    with pytest.raises(ArgumentError, match="str"):
        text(b"SELECT 1")  # type: ignore[arg-type]


def test_immutable() -> None:
    stmt = text("SELECT :a")
    compiled = stmt.compile("qmark")
    for obj, attr in ((stmt, "text"), (compiled, "sql"), (compiled, "names")):
        with pytest.raises(AttributeError):
            setattr(obj, attr, "x")
        with pytest.raises(AttributeError):
            delattr(obj, attr)
        assert not hasattr(obj, "__dict__")


def test_pickle_roundtrip() -> None:
    stmt = pickle.loads(pickle.dumps(text("SELECT :a, :a")))
    assert stmt.text == "SELECT :a, :a"
    compiled = pickle.loads(pickle.dumps(stmt.compile("numeric")))
    assert (compiled.sql, compiled.names, compiled.bind({"a": 1})) == (
        "SELECT :1, :1",
        ("a", "a"),
        (1,),
    )


# --------------------------------------------------------------------------- sqlite3


@pytest.fixture
def sqlite_conn() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE "t:x" (id INTEGER PRIMARY KEY, name TEXT, note TEXT)')
    yield conn
    conn.close()


@pytest.mark.parametrize("paramstyle", ["named", "qmark"])
def test_sqlite3_executes_compiled_sql(sqlite_conn: sqlite3.Connection, paramstyle: str) -> None:
    insert = text(
        "INSERT INTO \"t:x\" (id, name, note) -- the ':' in the table name is quoted\n"
        "VALUES (:id, :name, 'at 12:30, :not_a_bind /* nor this */')"
    )
    select = text(
        'SELECT id, name || :suffix, note FROM "t:x" /* :ignored */ '
        "WHERE id = :id OR name = :name OR note LIKE '%:%' ORDER BY id"
    )
    ins = insert.compile(paramstyle)
    assert ins.names == ("id", "name")
    sqlite_conn.execute(ins.sql, ins.bind({"id": 1, "name": "ann", "extra": "ignored"}))
    sqlite_conn.execute(ins.sql, ins.bind({"id": 2, "name": "bob"}))
    sel = select.compile(paramstyle)
    rows = sqlite_conn.execute(sel.sql, sel.bind({"id": 1, "name": "bob", "suffix": "!"}))
    assert rows.fetchall() == [
        (1, "ann!", "at 12:30, :not_a_bind /* nor this */"),
        (2, "bob!", "at 12:30, :not_a_bind /* nor this */"),
    ]


def test_sqlite3_repeated_names_qmark(sqlite_conn: sqlite3.Connection) -> None:
    compiled = text("SELECT :a + :b * :a, :a || ':a'").compile("qmark")
    assert compiled.bind({"a": 2, "b": 3}) == (2, 3, 2, 2)
    row = sqlite_conn.execute(compiled.sql, compiled.bind({"a": 2, "b": 3})).fetchone()
    assert row == (8, "2:a")


def test_sqlite3_no_binds(sqlite_conn: sqlite3.Connection) -> None:
    compiled = text("SELECT '100%', 'x:y'").compile("qmark")
    params = compiled.bind(None)
    assert params is None
    assert sqlite_conn.execute(compiled.sql).fetchone() == ("100%", "x:y")


# --------------------------------------------------------------------------- real servers

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


@pytest.fixture
def pg_conn() -> Iterator[Any]:
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(f"psycopg is not installed: {exc}")
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    yield conn
    conn.close()


@pytest.mark.parametrize("paramstyle", ["pyformat", "format"])
def test_psycopg_percent_literal_and_cast(pg_conn: Any, paramstyle: str) -> None:
    stmt = text(
        "SELECT :n::int + 1 AS n, '100%' AS pct, :s::text || '%' AS s, "
        "'12:30'::time::text AS t, $$50% :no$$ AS dollar -- 5% :no\n"
        ", 'x' LIKE '%' AS matched, :n::int AS again"
    )
    compiled = stmt.compile(paramstyle)
    assert compiled.names == ("n", "s", "n")
    with pg_conn.cursor() as cur:
        cur.execute(compiled.sql, compiled.bind({"n": "41", "s": "50", "extra": 1}))
        assert cur.fetchone() == (42, "100%", "50%", "12:30:00", "50% :no", True, 41)


def test_psycopg_no_binds_keeps_single_percent(pg_conn: Any) -> None:
    compiled = text("SELECT '100%', 7 % 4, '1'::int").compile("pyformat")
    assert compiled.sql == "SELECT '100%', 7 % 4, '1'::int"
    with pg_conn.cursor() as cur:
        cur.execute(compiled.sql, compiled.bind(None))
        assert cur.fetchone() == ("100%", 3, 1)


@pytest.fixture
def mysql_conn() -> Iterator[Any]:
    try:
        import pymysql
    except ImportError as exc:
        _unavailable(f"PyMySQL is not installed: {exc}")
    try:
        conn = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", database="test",
            connect_timeout=3,
        )  # fmt: skip
    except pymysql.Error as exc:
        _unavailable(f"MariaDB/MySQL at 127.0.0.1:3306 is unreachable: {exc}")
    yield conn
    conn.close()


def test_pymysql_percent_literal_and_cast(mysql_conn: Any) -> None:
    # MySQL has no "::" cast, so the "::int" text rides in a string, a backtick
    # identifier and a comment, where it must survive untouched.
    stmt = text(
        "SELECT CAST(:n AS SIGNED) + 1 AS n, '100%' AS pct, CONCAT(:s, '%') AS s, "
        "DATE_FORMAT('2024-01-02', '%Y') AS y, ':n::int' AS `c:n::int%` /* 5% :no */, "
        "'x' LIKE '%' AS matched, :n AS again"
    )
    compiled = stmt.compile("pyformat")
    assert compiled.names == ("n", "s", "n")
    with mysql_conn.cursor() as cur:
        cur.execute(compiled.sql, compiled.bind({"n": 41, "s": "50"}))
        assert cur.fetchone() == (42, "100%", "50%", "2024", ":n::int", 1, 41)
        assert cur.description[4][0] == "c:n::int%"


def test_pymysql_no_binds_keeps_single_percent(mysql_conn: Any) -> None:
    compiled = text("SELECT '100%', DATE_FORMAT('2024-01-02', '%m')").compile("pyformat")
    with mysql_conn.cursor() as cur:
        cur.execute(compiled.sql, compiled.bind(None))
        assert cur.fetchone() == ("100%", "01")


# --------------------------------------------------------------------------- properties

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
# Bodies of quoted text and comments: full of characters that mean something outside.
BODY = st.text(alphabet=":?%'\"`$-/*\\ \nabeEXYZ_019(),=", max_size=12)
PLAIN = st.text(alphabet="abeEXYZ_019 (),=+<>%;\n", max_size=12)


def _quote(body: str, quote: str) -> str:
    return quote + body.replace(quote, quote * 2) + quote


def _e_string(body: str) -> str:
    return "E'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dollar(tag: str, body: str) -> str:
    return f"${tag}${body.replace('$', '')}${tag}$"


def _comment_body(body: str) -> str:
    # Without "*" and "/" a body can neither close nor open a (nested) comment.
    return body.replace("*", "").replace("/", "")


def _same(s: str) -> tuple[str, str]:
    return (s, s)


# (text written in the SQL, text expected in the compiled SQL), never holding a bind.
FRAGMENTS = st.one_of(
    PLAIN.map(_same),
    BODY.map(lambda b: _same(_quote(b, "'"))),
    BODY.map(lambda b: _same(_quote(b, '"'))),
    BODY.map(lambda b: _same(_quote(b, "`"))),
    BODY.map(lambda b: _same(_e_string(b))),
    BODY.map(lambda b: _same("--" + b.replace("\n", " ") + "\n")),
    BODY.map(lambda b: _same("/*" + _comment_body(b) + "*/")),
    st.tuples(BODY, BODY).map(
        lambda bs: _same("/* /*" + _comment_body(bs[0]) + "*/ " + _comment_body(bs[1]) + "*/")
    ),
    st.tuples(st.sampled_from(["", "f", "tag_1"]), BODY).map(lambda tb: _same(_dollar(*tb))),
    st.sampled_from(["x::int", "col::text[]", "'1'::int", "arr[1:2]", "ab:cd", "$1"]).map(_same),
    NAMES.map(lambda n: ("\\:" + n, ":" + n)),
)


@st.composite
def statements(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[str]]:
    """Literal fragments with binds between them: ``len(fragments) == len(names) + 1``."""
    names = draw(st.lists(NAMES, max_size=6))
    if names and draw(st.booleans()):
        names.append(names[0])  # make repeats common
    fragments = [draw(FRAGMENTS) for _ in range(len(names) + 1)]
    return fragments, names


def _assemble(fragments: list[str], marks: list[str]) -> str:
    # Spaces keep neighbours apart: no "e'" E-strings or longer names by accident.
    out = [fragments[0]]
    for mark, fragment in zip(marks, fragments[1:], strict=True):
        out += [" ", mark, " ", fragment]
    return "".join(out)


def _assemble_tight(fragments: list[str], marks: list[str]) -> str:
    out = [fragments[0]]
    for mark, fragment in zip(marks, fragments[1:], strict=True):
        out += [mark, fragment]
    return "".join(out)


@given(statements())
def test_property_binds_found_and_placed(stmt: tuple[list[tuple[str, str]], list[str]]) -> None:
    fragments, names = stmt
    sources = [src for src, _ in fragments]
    outputs = [out for _, out in fragments]
    clause = text(_assemble(sources, [":" + n for n in names]))

    for paramstyle in PARAMSTYLES:
        assert clause.compile(paramstyle).names == tuple(names)

    qmark = clause.compile("qmark").sql
    assert qmark.count("?") - sum(out.count("?") for out in outputs) == len(names)
    assert qmark == _assemble(outputs, ["?"] * len(names))
    assert clause.compile("named").sql == _assemble(outputs, [":" + n for n in names])

    # psycopg/PyMySQL %-format the query with the params; doing the same with
    # marker values must give back the original literals, single % and all.
    values = {n: f"<{n}>" for n in names}
    expected = _assemble(outputs, [values[n] for n in names])
    for paramstyle in ("pyformat", "format"):
        compiled = clause.compile(paramstyle)
        bound = compiled.bind(values)
        assert (compiled.sql if bound is None else compiled.sql % bound) == expected


@given(st.text(max_size=40))
def test_property_arbitrary_text_never_crashes(sql: str) -> None:
    clause = text(sql)
    for paramstyle in PARAMSTYLES:
        compiled = clause.compile(paramstyle)
        assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in compiled.names)
        if ":" not in sql:
            # Nothing to bind and no escape to resolve: the text goes through as is.
            assert compiled.names == ()
            assert compiled.sql == sql


@given(st.text(alphabet=":ab_1 '\"`$-/*\n\\%E", max_size=40))
def test_property_styles_agree(sql: str) -> None:
    # No "?" in the alphabet, so every "?" in the qmark SQL is a placeholder.
    clause = text(sql)
    qmark = clause.compile("qmark")
    values = {n: f"<{n}>" for n in qmark.names}
    pieces = qmark.sql.split("?")
    assert len(pieces) == len(qmark.names) + 1
    reference = _assemble_tight(pieces, [values[n] for n in qmark.names])
    for paramstyle in ("pyformat", "format"):
        compiled = clause.compile(paramstyle)
        bound = compiled.bind(values)
        assert (compiled.sql if bound is None else compiled.sql % bound) == reference
    numeric = clause.compile("numeric")
    order = list(dict.fromkeys(qmark.names))
    assert numeric.bind(values) == (tuple(values[n] for n in order) if order else None)
