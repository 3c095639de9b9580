"""Textual SQL with ``:name`` bind parameters, translated to each DB-API paramstyle.

Application code writes one spelling for every database::

    stmt = text("SELECT * FROM users WHERE id = :id AND org = :org")
    compiled = stmt.compile("pyformat")  # cached on ``stmt``
    cursor.execute(compiled.sql, compiled.bind({"id": 7, "org": 3}))

and each driver gets its own placeholders (PEP 249 ``paramstyle``):

==========  ===============  ====================================
paramstyle  placeholder      ``bind()`` returns
==========  ===============  ====================================
named       ``:id``          dict (sqlite3)
pyformat    ``%(id)s``       dict (psycopg, PyMySQL)
qmark       ``?``            tuple in occurrence order (pyodbc)
format      ``%s``           tuple in occurrence order
numeric     ``:1``           tuple in number order
==========  ===============  ====================================

Scanner rules (one pass, no SQL parsing beyond what finding binds needs):

* A bind is ``:`` followed by ``[A-Za-z_][A-Za-z0-9_]*`` whose colon is not
  preceded by ``:`` or by a word character ``[A-Za-z0-9_]``.  So ``= :id``,
  ``(:a, :b)``, ``=:id`` and ``:id::int`` bind, while the PostgreSQL casts
  ``x::int`` / ``x::text[]``, slices ``a[1:n]`` and ``ab:cd`` are left alone.
  Names are ASCII; a non-ASCII letter ends the name.
* ``\\:`` outside quoted text is an escaped colon: the backslash is dropped and
  the colon never starts a bind (as in SQLAlchemy).
* These are copied verbatim and never searched for binds: ``'...'`` strings
  with ``''`` escapes, ``E'...'`` strings which also take backslash escapes,
  ``"..."`` identifiers, MySQL ```...``` identifiers, ``-- line comments``,
  ``/* block comments */`` (nested, as in standard SQL, PostgreSQL and SQL
  Server) and PostgreSQL dollar quotes ``$$...$$`` / ``$tag$...$tag$``.  An
  unterminated one runs to the end of the text; the database then reports
  the syntax error instead of us guessing.
* For ``pyformat`` and ``format``, when the statement has binds, every ``%``
  anywhere (strings and comments included) is doubled, because psycopg and
  PyMySQL %-format the whole query when parameters are given.  With no binds
  ``bind()`` returns ``None``, drivers leave ``%`` alone, and so do we.

Known limits: quoting is dialect-neutral, so a MySQL string using a
backslash-escaped quote (``'it\\'s'``) is not understood (write ``'it''s'``);
MySQL ``# comments`` are not recognised; and with ``named`` an escaped
``\\:name`` reaches the driver as ``:name``, which sqlite3 reads as its own
placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NoReturn

from dbpool.exc import ArgumentError

__all__ = ["PARAMSTYLES", "CompiledSQL", "TextClause", "text"]

#: The PEP 249 paramstyles ``TextClause.compile()`` accepts.
PARAMSTYLES: tuple[str, ...] = ("named", "pyformat", "qmark", "format", "numeric")

_DICT_STYLES = frozenset({"named", "pyformat"})
_PERCENT_STYLES = frozenset({"pyformat", "format"})

# Where anything other than plain copying may start; everything between
# matches is copied as one slice, which keeps long statements cheap to scan.
_SPECIAL = re.compile(r"""['"`:\\$]|--|/\*""")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NEWLINE = re.compile(r"[\r\n]")
_BLOCK_TOKEN = re.compile(r"/\*|\*/")
# PostgreSQL tags follow identifier rules (letters may be non-ASCII), minus '$'.
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")

_REPR_LIMIT = 60
# Statements compiled, shared by every TextClause of the same text: code that writes
# ``conn.execute(text("..."), ...)`` in a loop makes a new TextClause each time.
_COMPILED_CACHE_SIZE = 1024
_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


def _end_of_quoted(sql: str, pos: int, quote: str, backslash: bool) -> int:
    """Index just past the quote closing the quoted text whose body starts at ``pos``."""
    while True:
        end = sql.find(quote, pos)
        if end < 0:
            return len(sql)
        if backslash:
            # A run of backslashes pairs up from its start, so an odd run escapes the quote.
            run = end
            while run > pos and sql[run - 1] == "\\":
                run -= 1
            if (end - run) % 2:
                pos = end + 1
                continue
        if sql.startswith(quote, end + 1):
            pos = end + 2
            continue
        return end + 1


def _end_of_block_comment(sql: str, pos: int) -> int:
    """Index just past the ``*/`` closing the comment whose body starts at ``pos``."""
    depth = 1
    while depth:
        m = _BLOCK_TOKEN.search(sql, pos)
        if m is None:
            return len(sql)
        depth += 1 if m.group() == "/*" else -1
        pos = m.end()
    return pos


def _end_of_literal(sql: str, pos: int, token: str) -> int | None:
    """Index just past the string literal, quoted identifier, comment or dollar-quoted
    body that ``token`` (found at ``pos``) opens; None when a ``$`` opens nothing."""
    if token == "'":
        # E'...' (any case) takes C-style backslash escapes; the E must be a
        # word of its own, or "name'" would be misread.
        e_string = pos > 0 and sql[pos - 1] in "eE" and (pos < 2 or sql[pos - 2] not in _WORD)
        return _end_of_quoted(sql, pos + 1, "'", e_string)
    if token == '"' or token == "`":
        return _end_of_quoted(sql, pos + 1, token, False)
    if token == "--":
        nl = _NEWLINE.search(sql, pos + 2)
        return len(sql) if nl is None else nl.end()
    if token == "/*":
        return _end_of_block_comment(sql, pos + 2)
    # "$": after an identifier character '$' belongs to the identifier (PostgreSQL
    # allows it there), and "$1" is a positional parameter.
    in_word = pos > 0 and (sql[pos - 1].isalnum() or sql[pos - 1] in "_$")
    tag = None if in_word else _DOLLAR_TAG.match(sql, pos)
    if tag is None:
        return None
    end = sql.find(tag.group(), tag.end())
    return len(sql) if end < 0 else end + len(tag.group())


def _parse(sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ``sql`` into literal fragments and the bind names between them.

    ``fragments`` always has ``len(names) + 1`` items, with ``\\:`` escapes
    already resolved, so compiling is just joining with placeholders.
    """
    fragments: list[str] = []
    names: list[str] = []
    pending: list[str] = []  # pieces of the current fragment, split only by escapes
    start = 0  # first character not yet copied into ``pending``
    pos = 0
    while True:
        m = _SPECIAL.search(sql, pos)
        if m is None:
            break
        pos = m.start()
        token = m.group()
        if token == ":":
            prev = sql[pos - 1] if pos else ""
            ident = None if prev == ":" or prev in _WORD else _IDENT.match(sql, pos + 1)
            if ident is None:
                pos += 1
                continue
            pending.append(sql[start:pos])
            fragments.append("".join(pending))
            pending = []
            names.append(ident.group())
            pos = start = ident.end()
        elif token == "\\":
            if sql.startswith(":", pos + 1):
                pending.append(sql[start:pos])
                start = pos + 1  # drop the backslash, keep the colon as text
                pos += 2
            else:
                pos += 1
        else:
            end = _end_of_literal(sql, pos, token)
            pos = pos + 1 if end is None else end
    pending.append(sql[start:])
    fragments.append("".join(pending))
    return tuple(fragments), tuple(names)


def code_only(sql: str) -> str:
    """``sql`` with what is not code blanked out, for guards that look for statement kinds.

    String literals (``'...'``, ``E'...'``, dollar-quoted bodies) and comments each become
    one space, so a keyword inside them is never seen and a ``;`` inside them never ends a
    statement; a ``"quoted"`` identifier keeps its name when that is a plain word (quoted
    or not, ``"TimeZone"`` names the same setting) and otherwise becomes ``_``. The same
    scanner rules as for finding binds (see the module docs).
    """
    out: list[str] = []
    start = pos = 0
    while True:
        m = _SPECIAL.search(sql, pos)
        if m is None:
            break
        pos = m.start()
        token = m.group()
        if token == ":" or token == "\\":
            pos += 1
            continue
        end = _end_of_literal(sql, pos, token)
        if end is None:
            pos += 1
            continue
        out.append(sql[start:pos])
        if token == '"' or token == "`":
            name = sql[pos + 1 : end - 1]
            out.append(name if name.isidentifier() else "_")
        else:
            out.append(" ")
        start = pos = end
    out.append(sql[start:])
    return "".join(out)


def _check_paramstyle(paramstyle: str) -> None:
    if paramstyle not in PARAMSTYLES:
        raise ArgumentError(
            f"Unknown DB-API paramstyle {paramstyle!r}; expected one of "
            + ", ".join(repr(s) for s in PARAMSTYLES)
        )


def _shorten(sql: str) -> str:
    return sql if len(sql) <= _REPR_LIMIT else sql[: _REPR_LIMIT - 3] + "..."


class CompiledSQL:
    """A statement translated for one paramstyle; immutable and shareable across threads.

    Made by [`TextClause.compile()`][dbpool.TextClause.compile].

    Attributes:
        sql: What to pass to the driver's `cursor.execute`, with `bind()`'s result.
        names: The bind names in order of occurrence, repeats included.
        paramstyle: The PEP 249 paramstyle it was translated for.
    """

    __slots__ = ("_as_dict", "_get", "_key_set", "_keys", "_take", "names", "paramstyle", "sql")

    sql: str
    names: tuple[str, ...]
    paramstyle: str
    _keys: tuple[str, ...]
    _key_set: frozenset[str]
    _get: Any  # itemgetter(*keys): the values in one C call, or None without binds
    _take: Any  # a dict of binds to a positional style's tuple, for the engine; else None
    _as_dict: bool

    def __init__(self, sql: str, names: Iterable[str], paramstyle: str) -> None:
        _check_paramstyle(paramstyle)
        names = tuple(names)
        # qmark/format need a value per placeholder; the others name or number
        # each distinct parameter once, numbered in order of first occurrence.
        keys = names if paramstyle in ("qmark", "format") else tuple(dict.fromkeys(names))
        setattr_ = object.__setattr__
        setattr_(self, "sql", sql)
        setattr_(self, "names", names)
        setattr_(self, "paramstyle", paramstyle)
        setattr_(self, "_keys", keys)
        setattr_(self, "_key_set", frozenset(keys))
        get = itemgetter(*keys) if keys else None
        setattr_(self, "_get", get)
        as_dict = paramstyle in _DICT_STYLES
        setattr_(self, "_as_dict", as_dict)
        # The engine's fast lane for the tuple styles: itemgetter of several keys already
        # gives the tuple, in C (a missing bind raises KeyError, and bind() then explains).
        take: Callable[[Any], Any] | None = None
        if keys and not as_dict:
            take = get if len(keys) > 1 else _one_value_tuple(keys[0])
        setattr_(self, "_take", take)

    def bind(self, params: Mapping[str, Any] | None) -> Any:
        """The parameters for `cursor.execute(self.sql, ...)`.

        Args:
            params: The bind values by name; keys the statement does not use are ignored.

        Returns:
            A dict of just the needed keys for `named` and `pyformat`, else a tuple in
            placeholder order; None when the statement has no binds.

        Raises:
            ArgumentError: A bind parameter has no value in `params`, or `params` is not
                a mapping.
        """
        keys = self._keys
        if not keys:
            return None
        if params is None:
            params = _NO_PARAMS
        try:
            values = self._get(params)
        except (KeyError, TypeError):
            # Work out what went wrong only on failure, to keep the happy path short.
            error = self._bind_error(params)
            if error is None:
                raise
            raise error from None
        if len(keys) == 1:  # itemgetter of one key gives the value, not a tuple
            values = (values,)
        if self._as_dict:
            return dict(zip(keys, values, strict=True))
        return values

    def _bind_shared(self, params: Mapping[str, Any] | None) -> Any:
        """`bind()`, except that a dict holding exactly this statement's named binds is
        returned as it is instead of copied: for the engine, which hands it straight to
        the driver (which neither keeps nor changes it)."""
        if self._as_dict and type(params) is dict and params.keys() == self._key_set:
            return params if self._keys else None
        return self.bind(params)

    def _bind_error(self, params: Any) -> ArgumentError | None:
        if not isinstance(params, Mapping):
            return ArgumentError(
                f"Bind parameters must be a mapping of name to value, not {type(params).__name__}"
            )
        missing = [k for k in dict.fromkeys(self.names) if k not in params]
        if not missing:
            return None  # the mapping itself failed; let its own error through
        if len(missing) == 1:
            return ArgumentError(f"A value is required for bind parameter {missing[0]!r}")
        return ArgumentError(
            "A value is required for bind parameters " + ", ".join(repr(k) for k in missing)
        )

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (CompiledSQL, (self.sql, self.names, self.paramstyle))

    def __repr__(self) -> str:
        return f"<CompiledSQL {self.paramstyle} {_shorten(self.sql)!r} names={self.names!r}>"


def _one_value_tuple(key: str) -> Callable[[Mapping[str, Any]], tuple[Any]]:
    # itemgetter of one key gives the value itself, not a 1-tuple.
    get = itemgetter(key)

    def take(params: Mapping[str, Any]) -> tuple[Any]:
        return (get(params),)

    return take


@lru_cache(maxsize=_COMPILED_CACHE_SIZE)
def _compile(sql: str, paramstyle: str) -> CompiledSQL:
    """``sql`` translated for ``paramstyle``; cached by text, for every TextClause."""
    _check_paramstyle(paramstyle)
    fragments, names = _parse(sql)
    if not names:
        return CompiledSQL(fragments[0], (), paramstyle)
    if paramstyle in _PERCENT_STYLES:
        fragments = tuple(f.replace("%", "%%") for f in fragments)
    if paramstyle == "named":
        marks = [":" + name for name in names]
    elif paramstyle == "pyformat":
        marks = [f"%({name})s" for name in names]
    elif paramstyle == "qmark":
        marks = ["?"] * len(names)
    elif paramstyle == "format":
        marks = ["%s"] * len(names)
    else:  # numeric
        numbers: dict[str, int] = {}
        for name in names:
            numbers.setdefault(name, len(numbers) + 1)
        marks = [f":{numbers[name]}" for name in names]
    parts = [fragments[0]]
    for mark, fragment in zip(marks, fragments[1:], strict=True):
        parts.append(mark)
        parts.append(fragment)
    return CompiledSQL("".join(parts), names, paramstyle)


class TextClause:
    """A textual SQL statement with `:name` binds; make it with [`text()`][dbpool.text].

    Immutable and safe to share between threads. Each statement text is scanned once
    per paramstyle and the result cached (on the instance, and in a module-wide cache
    of the most recent 1024 texts), so `text("...")` written inline costs little after
    the first call, and a module-level constant costs nothing more.

    Args:
        sql: The statement.

    Raises:
        ArgumentError: `sql` is not a `str`.

    Attributes:
        text: The SQL as written.

    Example:
        ```python
        import dbpool

        statement = dbpool.text("SELECT * FROM users WHERE id = :id AND note <> ':id'")
        print(statement.compile("qmark").sql)  # SELECT * FROM users WHERE id = ? AND note <> ':id'
        print(statement.compile("pyformat").bind({"id": 7, "other": 1}))  # {'id': 7}
        ```
    """

    __slots__ = ("_cache", "text")

    text: str
    _cache: dict[str, CompiledSQL]

    def __init__(self, sql: str) -> None:
        if not isinstance(sql, str):
            raise ArgumentError(f"SQL text must be a str, not {type(sql).__name__}")
        object.__setattr__(self, "text", sql)
        object.__setattr__(self, "_cache", {})

    def compile(self, paramstyle: str) -> CompiledSQL:
        """This statement translated for one PEP 249 paramstyle (cached).

        Args:
            paramstyle: One of `named`, `pyformat`, `qmark`, `format`, `numeric`.

        Returns:
            The `CompiledSQL`: its `sql`, the bind `names` in order, and `bind(params)`,
            which turns a dict into what the driver takes.

        Raises:
            ArgumentError: `paramstyle` is not one of those.
        """
        compiled = self._cache.get(paramstyle)
        if compiled is not None:
            return compiled
        return self._compile(paramstyle)

    def _compile(self, paramstyle: str) -> CompiledSQL:
        compiled = _compile(self.text, paramstyle)
        # Concurrent first compiles may race; setdefault keeps one shared winner.
        return self._cache.setdefault(paramstyle, compiled)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<TextClause {_shorten(self.text)!r}>"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (TextClause, (self.text,))


def text(sql: str) -> TextClause:
    """Textual SQL with `:name` bind parameters, for `Connection.execute()`.

    Each bind is translated to the driver's placeholder style (`:name`, `%(name)s`,
    `?`, ...). A bind is a colon followed by a name, not preceded by another colon or a
    word character. Quoted strings and identifiers, comments, PostgreSQL dollar quotes,
    `::casts` and array slices are left alone; write `\\:` for a literal colon that
    would otherwise start a bind. For the `pyformat` and `format` styles every `%` is
    doubled when the statement has binds.

    Args:
        sql: The statement.

    Returns:
        A [`TextClause`][dbpool.TextClause].

    Raises:
        ArgumentError: `sql` is not a `str`.

    Example:
        ```python
        import dbpool

        engine = dbpool.create_engine("sqlite://")
        with engine.connect() as conn:
            query = dbpool.text("SELECT :a + :b AS total, 'time: 12:30' AS note")
            print(conn.execute(query, {"a": 1, "b": 2}).one())  # (3, 'time: 12:30')
        engine.dispose()
        ```
    """
    if type(sql) is not str:
        return TextClause(sql)  # a str subclass, or the ArgumentError for a non-str
    return _shared_text(sql)


@lru_cache(maxsize=_COMPILED_CACHE_SIZE)
def _shared_text(sql: str) -> TextClause:
    # A TextClause cannot be changed, so text() written inline, called again and again with
    # the same SQL, hands out one object whose compiled forms are already cached on it.
    return TextClause(sql)
