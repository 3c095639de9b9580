"""The package's layering: no module imports upward.

Every module under dbpool/ is parsed with ``ast``; every import counts, including those
inside functions (a lazy import is still a dependency). Imports under
``if TYPE_CHECKING:`` are for annotations only: they count for the rules that say
"never", not for the rules that say "not at run time".

The layers, from the bottom:

1. the pool (`POOL_LAYER`): the hot path (pool.py), its slow paths (pool_*.py, with
   pool_admin.py's mixin of the public slow-path entry points QueuePool inherits), the
   proxy, the janitor, PoolStatus and the little they stand on (errors, settings, events,
   histograms). It knows nothing of engines, dialects, SQL, the CLI or integrations;
2. dialects: they never import the engine;
3. the engine and everything else in dbpool;
4. dbpool.contrib (integrations): they import dbpool, dbpool never imports them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dbpool"

POOL_LAYER = frozenset(
    {
        "dbpool.pool",
        "dbpool.pool_admin",
        "dbpool.pool_close",
        "dbpool.pool_fork",
        "dbpool.pool_open",
        "dbpool.pool_orphans",
        "dbpool.pool_sweep",
        "dbpool.pool_validation",
        "dbpool.proxy",
        "dbpool.janitor",
        "dbpool.status",
        "dbpool.config",
        "dbpool.driver_errors",
        "dbpool.events",
        "dbpool.exc",
        "dbpool.histogram",
    }
)
# The modules of the pool below its hot path: pool.py imports them, never the reverse.
BELOW_HOT_PATH = POOL_LAYER - {"dbpool.pool"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_checking_only: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if MODULES[importer].name != "__init__.py":  # relative to the module's package
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(name: str) -> list[Import]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"), str(MODULES[name]))
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(name, alias.name, node.lineno, type_checking))
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, node)
            for alias in node.names:
                # ``from dbpool import pool_close`` imports the module dbpool.pool_close.
                target = f"{module}.{alias.name}"
                imported = target if target in MODULES else module
                found.append(Import(name, imported, node.lineno, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return [i for i in found if i.imported == "dbpool" or i.imported.startswith("dbpool.")]


ALL_IMPORTS = [i for name in MODULES for i in _imports_of(name)]


def _where(i: Import) -> str:
    kind = " (under TYPE_CHECKING)" if i.type_checking_only else ""
    return f"{i.importer} imports {i.imported} at line {i.line}{kind}"


def test_the_parser_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    imports = {(i.importer, i.imported): i for i in ALL_IMPORTS}
    # engine.py imports the direct module inside a function; proxy.py types its pool.
    assert any(i.importer == "dbpool.engine" for i in ALL_IMPORTS)
    assert imports[("dbpool.proxy", "dbpool.pool")].type_checking_only
    assert not imports[("dbpool.pool", "dbpool.pool_close")].type_checking_only
    assert not imports[("dbpool.pool", "dbpool.pool_admin")].type_checking_only
    assert imports[("dbpool.pool_admin", "dbpool.pool")].type_checking_only


def test_the_pool_layer_exists() -> None:
    assert not POOL_LAYER - MODULES.keys(), POOL_LAYER - MODULES.keys()


@pytest.mark.parametrize("module", sorted(POOL_LAYER))
def test_the_pool_imports_only_the_pool(module: str) -> None:
    """Not the engine, display, CLI, dialects, SQL or contrib: not even for annotations."""
    wrong = [
        _where(i)
        for i in ALL_IMPORTS
        if i.importer == module and i.imported != "dbpool" and i.imported not in POOL_LAYER
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("module", sorted(BELOW_HOT_PATH))
def test_the_slow_paths_do_not_import_the_hot_path_at_run_time(module: str) -> None:
    wrong = [
        _where(i)
        for i in ALL_IMPORTS
        if i.importer == module and i.imported == "dbpool.pool" and not i.type_checking_only
    ]
    assert not wrong, wrong


def test_status_stands_on_nothing() -> None:
    wrong = [_where(i) for i in ALL_IMPORTS if i.importer == "dbpool.status"]
    assert not wrong, wrong


def test_dbpool_never_imports_contrib() -> None:
    wrong = [
        _where(i)
        for i in ALL_IMPORTS
        if i.imported.startswith("dbpool.contrib") and not i.importer.startswith("dbpool.contrib")
    ]
    assert not wrong, wrong


def test_dialects_never_import_the_engine() -> None:
    wrong = [
        _where(i)
        for i in ALL_IMPORTS
        if i.importer.startswith("dbpool.dialects") and i.imported == "dbpool.engine"
    ]
    assert not wrong, wrong


def test_nothing_but_the_package_root_imports_the_cli() -> None:
    """The CLI is the top of the package: only ``__main__`` and contrib use it."""
    allowed = ("dbpool.__main__", "dbpool.cli", "dbpool.contrib")
    wrong = [
        _where(i)
        for i in ALL_IMPORTS
        if i.imported == "dbpool.cli" and not i.importer.startswith(allowed)
    ]
    assert not wrong, wrong
