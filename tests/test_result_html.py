"""``Result._repr_html_``: a query result as Jupyter shows it.

Results come from real SQLite engines. The HTML is read back with the standard library's
parser, so the tests see the table a browser would: its caption, header cells and rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

import dbpool
from dbpool import text
from dbpool.display import RESULT_MAX_CHARS, RESULT_MAX_ROWS

# Rows 1..n of (n, its square, a label), in order.
NUMBERS = """
WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :count)
SELECT n, n * n AS square, 'row ' || n AS label FROM numbers ORDER BY n
"""


class Table(HTMLParser):
    """The caption, header cells and body rows (lists of cell texts) of one HTML table."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.caption = ""
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_caption = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "caption":
            self._in_caption = True
        elif tag == "tr" and self.headers:
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._in_caption = False
        elif tag in ("th", "td") and self._cell is not None:
            text = "".join(self._cell)
            (self.headers if tag == "th" else self.rows[-1]).append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.caption += data
        elif self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dbpool.Engine]:
    eng = dbpool.create_engine(f"sqlite://scott:tiger-secret@/{tmp_path / 'results.db'}")
    yield eng
    eng.dispose()


def numbers(engine: dbpool.Engine, count: int) -> dbpool.Result:
    with engine.connect() as conn:
        return conn.execute(text(NUMBERS), {"count": count})


def html_of(result: dbpool.Result) -> str:
    html = result._repr_html_()
    assert html is not None
    return html


def test_a_small_result_is_a_table_of_every_row_under_its_column_names(
    engine: dbpool.Engine,
) -> None:
    table = Table(html_of(numbers(engine, 3)))

    assert table.headers == ["n", "square", "label"]
    assert table.rows == [["1", "1", "row 1"], ["2", "4", "row 2"], ["3", "9", "row 3"]]
    assert table.caption == "Result: 3 rows"


def test_at_most_the_bound_of_rows_is_shown_with_a_note_of_how_many_more(
    engine: dbpool.Engine,
) -> None:
    assert RESULT_MAX_ROWS == 20
    table = Table(html_of(numbers(engine, 45)))

    *shown, note = table.rows
    assert [row[0] for row in shown] == [str(n) for n in range(1, 21)]
    assert note == ["… 25 more rows"]
    assert table.caption == "Result: 45 rows, showing 20"


@pytest.mark.parametrize(
    ("count", "note"), [(RESULT_MAX_ROWS, None), (RESULT_MAX_ROWS + 1, "… 1 more row")]
)
def test_the_note_appears_only_beyond_the_bound(
    engine: dbpool.Engine, count: int, note: str | None
) -> None:
    table = Table(html_of(numbers(engine, count)))

    rows = [row for row in table.rows if len(row) == 3]
    assert len(rows) == RESULT_MAX_ROWS
    notes = [row[0] for row in table.rows if len(row) == 1]
    assert notes == ([note] if note else [])


def test_showing_a_result_fetches_nothing(engine: dbpool.Engine) -> None:
    result = numbers(engine, 30)

    html_of(result)
    html_of(result)  # Jupyter may render it more than once

    assert [row.n for row in result] == list(range(1, 31))


def test_a_partly_fetched_result_shows_the_rows_still_to_come(engine: dbpool.Engine) -> None:
    result = numbers(engine, 5)
    assert result.fetchmany(2) == [(1, 1, "row 1"), (2, 4, "row 2")]

    table = Table(html_of(result))

    assert [row[0] for row in table.rows] == ["3", "4", "5"]
    assert table.caption == "Result: 3 rows (2 already fetched)"
    assert result.fetchone() == (3, 9, "row 3")


def test_an_empty_result_still_shows_its_columns(engine: dbpool.Engine) -> None:
    with engine.connect() as conn:
        result = conn.execute(text("SELECT 1 AS a, 'x' AS b WHERE 1 = 0"))

    table = Table(html_of(result))

    assert table.headers == ["a", "b"]
    assert table.rows == []
    assert table.caption == "Result: 0 rows"


def test_column_names_and_values_are_escaped(engine: dbpool.Engine) -> None:
    markup = "<script>alert('x')</script> & <b>"
    with engine.connect() as conn:
        result = conn.execute(text('SELECT :v AS "<th>&amp;", 1 AS "a<b"'), {"v": markup})

    html = html_of(result)
    table = Table(html)

    assert "<script>" not in html and "<b>" not in html
    assert table.headers == ["<th>&amp;", "a<b"]
    assert table.rows == [[markup, "1"]]


def test_null_is_shown_apart_from_the_text_null(engine: dbpool.Engine) -> None:
    with engine.connect() as conn:
        result = conn.execute(text("SELECT NULL AS missing, 'NULL' AS word"))

    html = html_of(result)

    assert "<td><i>NULL</i></td><td>NULL</td>" in html


def test_a_long_value_is_cut_short(engine: dbpool.Engine) -> None:
    long_text = "y" * (RESULT_MAX_CHARS * 50)
    with engine.connect() as conn:
        result = conn.execute(text("SELECT :v AS body"), {"v": long_text})

    (cell,) = Table(html_of(result)).rows[0]

    assert len(cell) == RESULT_MAX_CHARS
    assert cell == "y" * (RESULT_MAX_CHARS - 1) + "…"
    assert result.scalar_one() == long_text  # the value itself is whole


def test_duplicate_column_names_each_get_a_header(engine: dbpool.Engine) -> None:
    with engine.connect() as conn:
        result = conn.execute(text("SELECT 1 AS id, 2 AS id"))

    assert Table(html_of(result)).headers == ["id", "id"]


def test_a_statement_without_rows_falls_back_to_the_plain_repr(engine: dbpool.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        result = conn.execute(text("INSERT INTO t VALUES (1), (2)"))

    assert result._repr_html_() is None
    assert repr(result) == "<Result rows=None rowcount=2>"


def test_no_connection_detail_or_password_is_in_the_html(engine: dbpool.Engine) -> None:
    html = html_of(numbers(engine, 25))

    assert "tiger-secret" not in html and "scott" not in html and "sqlite" not in html
