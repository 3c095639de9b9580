"""Result and Row: what ``Connection.execute`` returns, SQLAlchemy 2.0 style.

Rows are fetched when the statement runs, so a result stays readable after its
connection went back to the pool and the cursor is free for the next statement. (The
drivers dbpool uses buffer whole results client-side anyway.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from dbpool.exc import ArgumentError, ResourceClosedError


class MultipleResultsFound(ArgumentError):
    """`one()` or `one_or_none()` found more than one row."""


class NoResultFound(ArgumentError):
    """`one()` found no row."""


class Row(tuple[Any, ...]):
    """One row: a tuple that also allows `row.name` and `row._mapping["name"]`.

    Unpack it, index it and compare it as a tuple. `row._fields` are the column names;
    a name that is not a column raises `AttributeError`.

    Example:
        ```python
        import dbpool

        engine = dbpool.create_engine("sqlite://")
        with engine.connect() as conn:
            row = conn.execute(dbpool.text("SELECT 1 AS id, 'Ann' AS name")).one()
        print(row, row.name, row._mapping["id"], row._asdict())  # (1, 'Ann') Ann 1 {...}
        engine.dispose()
        ```
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _index: Mapping[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return self[self._index[name]]
        except KeyError:
            raise AttributeError(f"Row has no column {name!r}") from None

    @property
    def _mapping(self) -> RowMapping:
        """The row as a read-only mapping of column name to value."""
        return RowMapping(self)

    def _asdict(self) -> dict[str, Any]:
        """The row as a new dict of column name to value."""
        return dict(zip(self._fields, self, strict=True))

    def __repr__(self) -> str:
        return repr(tuple(self))


class RowMapping(Mapping[str, Any]):
    """A read-only mapping view of one row, by column name."""

    __slots__ = ("_row",)

    def __init__(self, row: Row) -> None:
        self._row = row

    def __getitem__(self, key: str) -> Any:
        try:
            return self._row[self._row._index[key]]
        except KeyError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._row._fields)

    def __len__(self) -> int:
        return len(self._row._fields)

    def __repr__(self) -> str:
        return repr(dict(self))


# Whether a cursor class has ``lastrowid`` (psycopg's and pyodbc's have none): asking
# getattr() with a default on every statement would raise and swallow AttributeError.
_HAS_LASTROWID: dict[type, bool] = {}


def _has_lastrowid(cursor: Any) -> bool:
    has = _HAS_LASTROWID[type(cursor)] = hasattr(cursor, "lastrowid")
    return has


@lru_cache(maxsize=512)
def _row_class(fields: tuple[str, ...]) -> type[Row]:
    index = {name: i for i, name in reversed(list(enumerate(fields)))}
    return type("Row", (Row,), {"__slots__": (), "_fields": fields, "_index": index})


# The rows of every statement that returns none: shared, as nothing ever appends to it.
_NO_ROWS: list[Row] = []


def fetch_result(cursor: Any, keys: tuple[str, ...] | None) -> Result:
    """The [`Result`][dbpool.Result] of the statement just run on ``cursor``; ``keys``
    are its column names, None when it returns no rows (for `Dialect.result()`)."""
    rowcount = cursor.rowcount
    if rowcount is None:  # unknown, as PEP 249 spells it
        rowcount = -1
    has_lastrowid = _HAS_LASTROWID.get(type(cursor))
    if has_lastrowid is None:
        has_lastrowid = _has_lastrowid(cursor)
    if keys is None:
        if not has_lastrowid:
            return no_rows(rowcount)
        return Result(_NO_ROWS, None, rowcount, cursor.lastrowid)
    lastrowid = cursor.lastrowid if has_lastrowid else None
    return Result(cursor.fetchall(), keys, rowcount, lastrowid)


def no_rows(rowcount: int | None) -> Result:
    """The result of a statement that returned no rows and has no ``lastrowid``."""
    if rowcount is None:
        return NO_ROWS_RESULTS[-1]
    if -1 <= rowcount < COMMON_ROWCOUNTS:
        return NO_ROWS_RESULTS[rowcount]
    return Result(_NO_ROWS, None, rowcount)


class Result:
    """The rows (if any) and row count of one statement, from `Connection.execute()`.

    All rows are fetched when the statement runs, so a result can be read after its
    connection has gone back to the pool (and a large result is held in memory whole).
    Each row is read once: iterating, `fetchone()`, `fetchmany()` and `fetchall()` go on
    from where the last one stopped. Reading rows from a statement that returns none
    raises `ResourceClosedError`. In Jupyter a result displays as a table of the rows
    not read yet.

    Example:
        ```python
        import dbpool
        from dbpool import text

        engine = dbpool.create_engine("sqlite://")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            inserted = conn.execute(text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
            print(inserted.rowcount)  # 2
            result = conn.execute(text("SELECT x FROM t ORDER BY x"))
            print(result.keys(), result.fetchone(), result.all())  # ['x'] (1,) [(2,)]
        engine.dispose()
        ```
    """

    __slots__ = ("_keys", "_lastrowid", "_position", "_rowcount", "_rows")

    def __init__(
        self, rows: list[Any], keys: tuple[str, ...] | None, rowcount: int, lastrowid: Any = None
    ) -> None:
        """``rows`` are the driver's own (each becomes a Row only when it is read), ``keys``
        the column names (None when the statement returns no rows); made by the dialect
        from its cursor (see ``fetch_result()``)."""
        self._rows = rows
        self._keys = keys
        self._rowcount = rowcount
        self._lastrowid = lastrowid
        self._position = 0

    @property
    def rowcount(self) -> int:
        """Rows changed by an `INSERT` / `UPDATE` / `DELETE`, as the driver counts them
        (-1 when unknown)."""
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        """The driver's `cursor.lastrowid`, where it has one (sqlite3, PyMySQL); None
        otherwise."""
        return self._lastrowid

    @property
    def returns_rows(self) -> bool:
        """Whether the statement returned rows (a `SELECT`, or `... RETURNING`)."""
        return self._keys is not None

    def keys(self) -> list[str]:
        """The column names.

        Returns:
            The names in column order; empty for a statement that returns no rows.
        """
        return list(self._keys or ())

    def _check_rows(self) -> tuple[str, ...]:
        keys = self._keys
        if keys is None:
            raise ResourceClosedError("This result object does not return rows.")
        return keys

    def _take(self, count: int | None) -> list[Row]:
        row = _row_class(self._check_rows())
        start = self._position
        end = len(self._rows) if count is None else min(start + count, len(self._rows))
        self._position = end
        return list(map(row, self._rows[start:end]))

    def _first(self) -> Any:
        """The driver's first remaining row (None if none is left); discards the rest."""
        if self._keys is None:
            self._check_rows()  # raises
        rows, start = self._rows, self._position
        self._position = len(rows)
        return rows[start] if start < len(rows) else None

    def __iter__(self) -> Iterator[Row]:
        """Iterate over the rows not read yet."""
        return iter(self._take(None))

    def fetchone(self) -> Row | None:
        """The next row.

        Returns:
            The next [`Row`][dbpool.Row], or None when none is left.

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        rows = self._take(1)
        return rows[0] if rows else None

    def fetchmany(self, size: int = 1) -> list[Row]:
        """Up to `size` more rows.

        Args:
            size: The most rows to return.

        Returns:
            A list of at most `size` rows; empty when none is left.

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        return self._take(size)

    def fetchall(self) -> list[Row]:
        """The remaining rows.

        Returns:
            A list of the rows not read yet.

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        return self._take(None)

    def all(self) -> list[Row]:
        """The remaining rows: the same as [`fetchall()`][dbpool.Result.fetchall].

        Returns:
            A list of the rows not read yet.

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        return self._take(None)

    def first(self) -> Row | None:
        """The first remaining row, discarding the rest.

        Returns:
            The row, or None when none is left.

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        values = self._first()
        return None if values is None else _row_class(self._check_rows())(values)

    def one_or_none(self) -> Row | None:
        """The only remaining row, or None.

        Returns:
            The row, or None when none is left.

        Raises:
            MultipleResultsFound: More than one row is left.
            ResourceClosedError: The statement returns no rows.
        """
        rows = self._take(None)
        if len(rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return rows[0] if rows else None

    def one(self) -> Row:
        """The only remaining row.

        Returns:
            The row.

        Raises:
            NoResultFound: No row is left.
            MultipleResultsFound: More than one row is left.
            ResourceClosedError: The statement returns no rows.
        """
        row = self.one_or_none()
        if row is None:
            raise NoResultFound("No row was found when one was required")
        return row

    def scalar(self) -> Any:
        """The first column of the first remaining row, discarding the rest.

        Returns:
            The value, or None when no row is left.

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        # _first(), inlined: scalar() is the usual way to read one value.
        rows, start = self._rows, self._position
        if self._keys is None:
            self._check_rows()  # raises
        self._position = len(rows)
        return rows[start][0] if start < len(rows) else None

    def scalar_one(self) -> Any:
        """The first column of [`one()`][dbpool.Result.one].

        Returns:
            The value.

        Raises:
            NoResultFound: No row is left.
            MultipleResultsFound: More than one row is left.
            ResourceClosedError: The statement returns no rows.
        """
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        """The first column of [`one_or_none()`][dbpool.Result.one_or_none].

        Returns:
            The value, or None when no row is left.

        Raises:
            MultipleResultsFound: More than one row is left.
            ResourceClosedError: The statement returns no rows.
        """
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self, index: int | str = 0) -> ScalarResult:
        """One column of each remaining row.

        Args:
            index: The column, by position or by name.

        Returns:
            A [`ScalarResult`][dbpool.ScalarResult] of the values.

        Raises:
            ResourceClosedError: The statement returns no rows.
            ValueError: No column has that name.
        """
        self._check_rows()
        column = index if isinstance(index, int) else self.keys().index(index)
        return ScalarResult([row[column] for row in self._take(None)])

    def mappings(self) -> MappingResult:
        """Each remaining row as a read-only mapping of column name to value.

        Returns:
            A [`MappingResult`][dbpool.MappingResult].

        Raises:
            ResourceClosedError: The statement returns no rows.
        """
        return MappingResult([row._mapping for row in self._take(None)])

    def close(self) -> None:
        """Discard the remaining rows."""
        self._position = len(self._rows)

    def __repr__(self) -> str:
        rows = len(self._rows) if self._keys is not None else None
        return f"<Result rows={rows} rowcount={self._rowcount}>"

    def _repr_html_(self) -> str | None:
        """Jupyter's view: a table of the rows not fetched yet (the first
        ``dbpool.display.RESULT_MAX_ROWS`` of them). Showing it fetches nothing, so the
        result can still be iterated afterwards. None (the plain repr) for a statement
        that returns no rows."""
        if self._keys is None:
            return None
        from dbpool.display import result_html

        return result_html(self._keys, self._rows, self._position)


class _ValuesResult:
    """The shared shape of `scalars()` and `mappings()`: a list with Result's verbs."""

    __slots__ = ("_values",)

    def __init__(self, values: Sequence[Any]) -> None:
        self._values = list(values)

    def __iter__(self) -> Iterator[Any]:
        """Iterate over the values not read yet."""
        values, self._values = self._values, []
        return iter(values)

    def all(self) -> list[Any]:
        """The remaining values.

        Returns:
            A list of the values not read yet.
        """
        values, self._values = self._values, []
        return values

    def fetchall(self) -> list[Any]:
        """The remaining values: the same as `all()`.

        Returns:
            A list of the values not read yet.
        """
        return self.all()

    def first(self) -> Any:
        """The first remaining value, discarding the rest.

        Returns:
            The value, or None when none is left.
        """
        values = self.all()
        return values[0] if values else None

    def one_or_none(self) -> Any:
        """The only remaining value, or None.

        Returns:
            The value, or None when none is left.

        Raises:
            MultipleResultsFound: More than one value is left.
        """
        values = self.all()
        if len(values) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return values[0] if values else None

    def one(self) -> Any:
        """The only remaining value.

        Returns:
            The value.

        Raises:
            NoResultFound: No value is left.
            MultipleResultsFound: More than one value is left.
        """
        values = self.all()
        if len(values) != 1:
            if values:
                raise MultipleResultsFound("Multiple rows were found when one was required")
            raise NoResultFound("No row was found when one was required")
        return values[0]


class ScalarResult(_ValuesResult):
    """One column of each row, from [`Result.scalars()`][dbpool.Result.scalars].

    Iterate over it, or call `all()` (also `fetchall()`), `first()`, `one()` or
    `one_or_none()`; each value is read once.

    Example:
        ```python
        import dbpool

        engine = dbpool.create_engine("sqlite://")
        with engine.connect() as conn:
            ids = conn.execute(dbpool.text("SELECT 1 AS id UNION ALL SELECT 2")).scalars()
            print(ids.all())  # [1, 2]
        engine.dispose()
        ```
    """


class MappingResult(_ValuesResult):
    """Each row as a read-only mapping by column name, from
    [`Result.mappings()`][dbpool.Result.mappings].

    Iterate over it, or call `all()` (also `fetchall()`), `first()`, `one()` or
    `one_or_none()`; each mapping is read once.

    Example:
        ```python
        import dbpool

        engine = dbpool.create_engine("sqlite://")
        with engine.connect() as conn:
            row = conn.execute(dbpool.text("SELECT 1 AS id, 'Ann' AS name")).mappings().one()
            print(row["name"], dict(row))  # Ann {'id': 1, 'name': 'Ann'}
        engine.dispose()
        ```
    """


# The results of statements that return no rows, for the common row counts: a Result
# cannot be changed, so one object can stand for every "UPDATE ... (1 row)" there will be,
# and making a new one would cost a third of the engine's work per statement. A tuple
# indexed by the count (-1, unknown, is the last entry) is cheaper to read than a dict.
COMMON_ROWCOUNTS = 64
NO_ROWS_RESULTS: tuple[Result, ...] = tuple(
    Result(_NO_ROWS, None, n) for n in (*range(COMMON_ROWCOUNTS), -1)
)
