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
    """``one()`` found more than one row."""


class NoResultFound(ArgumentError):
    """``one()`` found no row."""


class Row(tuple[Any, ...]):
    """A tuple that also allows ``row.name`` and ``row._mapping["name"]``."""

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
        return RowMapping(self)

    def _asdict(self) -> dict[str, Any]:
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


@lru_cache(maxsize=512)
def _row_class(fields: tuple[str, ...]) -> type[Row]:
    index = {name: i for i, name in reversed(list(enumerate(fields)))}
    return type("Row", (Row,), {"__slots__": (), "_fields": fields, "_index": index})


class Result:
    """The rows (if any) and row count of one statement."""

    __slots__ = ("_keys", "_position", "_rows", "lastrowid", "rowcount")

    def __init__(self, cursor: Any, keys: tuple[str, ...] | None) -> None:
        """Fetch everything from ``cursor``; ``keys`` are its column names, None when the
        statement returns no rows."""
        rowcount = cursor.rowcount
        self.rowcount: int = -1 if rowcount is None else rowcount
        self.lastrowid: Any = getattr(cursor, "lastrowid", None)
        self._keys = keys
        self._rows: list[Row] = (
            [] if keys is None else list(map(_row_class(keys), cursor.fetchall()))
        )
        self._position = 0

    @property
    def returns_rows(self) -> bool:
        return self._keys is not None

    def keys(self) -> list[str]:
        return list(self._keys or ())

    def _check_rows(self) -> None:
        if self._keys is None:
            raise ResourceClosedError("This result object does not return rows.")

    def _take(self, count: int | None) -> list[Row]:
        self._check_rows()
        start = self._position
        end = len(self._rows) if count is None else min(start + count, len(self._rows))
        self._position = end
        return self._rows[start:end]

    def __iter__(self) -> Iterator[Row]:
        return iter(self._take(None))

    def fetchone(self) -> Row | None:
        rows = self._take(1)
        return rows[0] if rows else None

    def fetchmany(self, size: int = 1) -> list[Row]:
        return self._take(size)

    def fetchall(self) -> list[Row]:
        return self._take(None)

    all = fetchall

    def first(self) -> Row | None:
        rows = self._take(None)
        return rows[0] if rows else None

    def one_or_none(self) -> Row | None:
        rows = self._take(None)
        if len(rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return rows[0] if rows else None

    def one(self) -> Row:
        row = self.one_or_none()
        if row is None:
            raise NoResultFound("No row was found when one was required")
        return row

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self, index: int | str = 0) -> ScalarResult:
        self._check_rows()
        column = index if isinstance(index, int) else self.keys().index(index)
        return ScalarResult([row[column] for row in self._take(None)])

    def mappings(self) -> MappingResult:
        return MappingResult([row._mapping for row in self._take(None)])

    def close(self) -> None:
        self._position = len(self._rows)

    def __repr__(self) -> str:
        rows = len(self._rows) if self._keys is not None else None
        return f"<Result rows={rows} rowcount={self.rowcount}>"

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
    """The shared shape of ``scalars()`` and ``mappings()``: a list with Result's verbs."""

    __slots__ = ("_values",)

    def __init__(self, values: Sequence[Any]) -> None:
        self._values = list(values)

    def __iter__(self) -> Iterator[Any]:
        values, self._values = self._values, []
        return iter(values)

    def all(self) -> list[Any]:
        values, self._values = self._values, []
        return values

    fetchall = all

    def first(self) -> Any:
        values = self.all()
        return values[0] if values else None

    def one_or_none(self) -> Any:
        values = self.all()
        if len(values) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return values[0] if values else None

    def one(self) -> Any:
        values = self.all()
        if len(values) != 1:
            if values:
                raise MultipleResultsFound("Multiple rows were found when one was required")
            raise NoResultFound("No row was found when one was required")
        return values[0]


class ScalarResult(_ValuesResult):
    """The first (or chosen) column of each row."""


class MappingResult(_ValuesResult):
    """Each row as a read-only mapping by column name."""
