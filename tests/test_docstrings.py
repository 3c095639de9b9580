"""The docstrings of the public API are complete: they are the API reference.

docs/api.md renders them with mkdocstrings (``::: dbpool.Engine`` ...). For every object
it names, and the members it shows, this checks with griffe (what mkdocstrings reads
them with) that each has a docstring; that a function or method documents each of its
parameters in ``Args:`` and, when it returns a value, says what in ``Returns:`` (or
``Yields:``); and that a class documents its public attributes (in ``Attributes:`` or a
docstring of their own) and the parameters of its constructor, unless docs/api.md hides
the constructor (``merge_init_into_class: false``: the engine makes those objects).

An entry with ``inherited_members: true`` shows, and so is checked for, the members its
class inherits as well (`QueuePool` gets its slow-path entry points from the mixin in
dbpool/pool_admin.py). If such an entry also lists its members, the list only fixes
their order: it must name every public member, so that none silently drops out.

Without griffe (the ``docs`` extra) the test skips; under DBPOOL_REQUIRE_DATABASES=1 it
fails instead.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.servers import REQUIRE_DATABASES

ROOT = Path(__file__).resolve().parent.parent
# One ``::: path`` line of docs/api.md and the indented options under it.
_DIRECTIVE = re.compile(r"(?m)^::: (?P<path>[\w.]+)[ \t]*\n(?P<options>(?:(?:[ \t]+.*)?\n)*)")


def _entries() -> list[tuple[str, dict[str, Any]]]:
    import yaml

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    entries = []
    for match in _DIRECTIVE.finditer(page):
        options = yaml.safe_load(textwrap.dedent(match["options"])) or {}
        entries.append((match["path"], options.get("options") or {}))
    return entries


def _griffe() -> Any:
    try:
        import griffe
    except ImportError:
        reason = "griffe is not installed (pip install -e '.[docs]')"
        if REQUIRE_DATABASES:
            pytest.fail(f"{reason} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(reason)
    return griffe


def _sections(obj: Any, *kinds: str) -> list[Any]:
    if obj.docstring is None:
        return []
    return [section for section in obj.docstring.parsed if section.kind.value in kinds]


def _documented(obj: Any, *kinds: str) -> set[str]:
    return {item.name.lstrip("*") for s in _sections(obj, *kinds) for item in s.value}


def _check_function(function: Any, problems: list[str]) -> None:
    if function.docstring is None:
        problems.append(f"{function.path}: no docstring")
        return
    parameters = {p.name for p in function.parameters if p.name not in ("self", "cls")}
    missing = parameters - _documented(function, "parameters", "other parameters")
    if missing:
        problems.append(f"{function.path}: Args does not describe {', '.join(sorted(missing))}")
    returns = str(function.returns) if function.returns is not None else "None"
    if returns not in ("None", "NoReturn") and not _sections(function, "returns", "yields"):
        problems.append(f"{function.path}: no Returns (or Yields) section for -> {returns}")


def _check_class(cls: Any, options: dict[str, Any], problems: list[str]) -> None:
    if cls.docstring is None:
        problems.append(f"{cls.path}: no docstring")
    attributes = _documented(cls, "attributes")
    init = cls.members.get("__init__")
    if init is not None and options.get("merge_init_into_class", True):
        parameters = {p.name for p in init.parameters if p.name not in ("self", "cls")}
        documented = _documented(cls, "parameters", "other parameters") | attributes
        if init.docstring is not None:
            documented |= _documented(init, "parameters", "other parameters")
        missing = parameters - documented
        if missing:
            problems.append(
                f"{cls.path}: the constructor's {', '.join(sorted(missing))} are not in Args"
            )
    shown = options.get("members")
    inherited = options.get("inherited_members", False)
    members = cls.all_members if inherited else cls.members
    if inherited and shown:
        # What mkdocstrings would render without the list: an attribute without a
        # docstring of its own is not (the class's Attributes section describes it).
        rendered = {
            name
            for name, member in members.items()
            if not name.startswith("_") and (member.is_function or member.docstring is not None)
        }
        left_out = ", ".join(sorted(rendered - set(shown)))
        if left_out:
            problems.append(f"{cls.path}: the members list leaves out {left_out}")
    for name, member in members.items():
        # An inherited member is an alias too, of the base class's member: check that.
        imported = member.is_alias and not member.inherited
        if name.startswith("_") or imported or (shown and name not in shown):
            continue
        if member.is_function:
            _check_function(member, problems)
        elif member.is_attribute and member.docstring is None and name not in attributes:
            problems.append(f"{member.path}: not documented (a docstring, or in Attributes)")


def _check(obj: Any, options: dict[str, Any], problems: list[str]) -> None:
    obj = obj.final_target if obj.is_alias else obj
    if obj.is_function:
        _check_function(obj, problems)
    elif obj.is_class:
        _check_class(obj, options, problems)
    elif obj.is_module:
        if obj.docstring is None:
            problems.append(f"{obj.path}: no module docstring")
        # Without a list, what mkdocstrings shows: the public functions and classes (a
        # module's constants show only when they have a docstring).
        names = options.get("members") or [
            name
            for name, member in obj.members.items()
            if not name.startswith("_")
            and not member.is_alias
            and (member.is_function or member.is_class)
        ]
        for name in names:
            _check(obj.members[name], {}, problems)
    elif obj.docstring is None:
        problems.append(f"{obj.path}: no docstring")


def test_every_entry_of_the_api_reference_is_fully_documented() -> None:
    griffe = _griffe()
    import dbpool

    packages: dict[str, Any] = {}
    problems: list[str] = []
    entries = _entries()
    assert {path for path, _ in entries} >= {f"dbpool.{name}" for name in dbpool.__all__}
    for path, options in entries:
        top = path.partition(".")[0]
        if top not in packages:
            packages[top] = griffe.load(top, search_paths=[str(ROOT)], docstring_parser="google")
        _check(packages[top][path.partition(".")[2]], options, problems)
    assert not problems, "incomplete docstrings:\n" + "\n".join(problems)


def test_inherited_members_are_checked_when_the_entry_shows_them() -> None:
    griffe = _griffe()
    code = textwrap.dedent(
        '''
        class Admin:
            def dispose(self, timeout: float) -> int:
                """Close everything (no Args, no Returns)."""
                return 0

        class Pool(Admin):
            """A pool."""

            def connect(self) -> None:
                """Check out a connection."""
        '''
    )
    with griffe.temporary_visited_package(
        "dbpool_docstrings_probe", {"__init__.py": code}, docstring_parser="google"
    ) as package:
        pool = package["Pool"]
        own: list[str] = []
        _check_class(pool, {}, own)
        assert own == []
        shown: list[str] = []
        _check_class(pool, {"inherited_members": True}, shown)
        assert shown == [
            "dbpool_docstrings_probe.Pool.dispose: Args does not describe timeout",
            "dbpool_docstrings_probe.Pool.dispose: no Returns (or Yields) section for -> int",
        ]
        listed: list[str] = []
        _check_class(pool, {"inherited_members": True, "members": ["connect"]}, listed)
        assert listed == ["dbpool_docstrings_probe.Pool: the members list leaves out dispose"]
