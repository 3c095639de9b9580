"""Every ```python block in README.md and docs/**/*.md runs, each on its own.

Each block runs in a fresh Python process with an empty temporary working directory,
so blocks are self-contained: they may create files, set environment variables and
dispose engines without affecting each other or the test run. ``DATABASE_URL`` is
removed from the environment, except for a block whose first line is
``# needs: postgresql`` or ``# needs: mysql``: it runs only when that test server is
reachable (see tests/servers.py) and then gets ``DATABASE_URL`` set to the server's URL.
``# needs: odbc`` runs a block only where pyodbc imports (it also needs the unixODBC
system library); it needs no server. Like the servers, a missing one skips the block,
or fails it under ``DBPOOL_REQUIRE_DATABASES=1``.
Blocks fenced as ```python-norun are not collected.

Tracebacks point at the Markdown file's own line numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import MYSQL_URL, POSTGRES_URL, need, need_module

ROOT = Path(__file__).resolve().parent.parent
# need -> (driver module, server URL or None for none)
NEEDS: dict[str, tuple[str, str | None]] = {
    "postgresql": ("psycopg", POSTGRES_URL),
    "mysql": ("pymysql", MYSQL_URL),
    "odbc": ("pyodbc", None),
}

_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*python\s*$")
_NEEDS = re.compile(r"^#\s*needs:\s*(?P<names>.+?)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # the first line of code, 1-based
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def needs(self) -> list[str]:
        first = self.code.lstrip("\n").partition("\n")[0]
        match = _NEEDS.match(first.strip())
        return [n.strip() for n in match["names"].split(",")] if match else []


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one Markdown file (fences of other languages are skipped)."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)(.*)$", lines[i])
        if fence is None:
            i += 1
            continue
        opening = _OPEN.match(lines[i])
        marker = fence[1]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(marker):
            end += 1
        if opening is not None:
            indent = len(opening["indent"])
            code = "\n".join(line[indent:] for line in lines[i + 1 : end])
            blocks.append(Block(path, i + 2, code + "\n"))
        i = end + 1
    return blocks


BLOCKS = [block for path in markdown_files() for block in python_blocks(path)]


def test_the_docs_have_python_blocks() -> None:
    assert any(block.path.name == "README.md" for block in BLOCKS)
    assert len({block.path for block in BLOCKS}) >= 3


def test_the_api_reference_covers_every_public_name() -> None:
    """docs/api.md has a generated entry (``::: dbpool.Name``) for every public name."""
    import dbpool

    reference = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"(?m)^::: dbpool\.(\w+)\s*$", reference))
    missing = [name for name in dbpool.__all__ if name not in entries]
    assert not missing, f"docs/api.md has no '::: dbpool.NAME' entry for: {', '.join(missing)}"


def test_the_cli_page_covers_every_option() -> None:
    """docs/cli.md has a section for each ``dbpool`` subcommand naming all its options."""
    import argparse

    from dbpool.cli import _parser

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = {
        part.partition("\n")[0].strip("` "): part for part in re.split(r"(?m)^## ", page)[1:]
    }
    commands = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name, command in commands.choices.items():
        section = sections.get(f"dbpool {name}")
        assert section is not None, f"docs/cli.md has no '## `dbpool {name}`' section"
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            spellings = action.option_strings or [action.metavar or action.dest]
            assert any(f"`{spelling}" in section for spelling in spellings), (
                f"docs/cli.md does not describe {'/'.join(spellings)} of dbpool {name}"
            )


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_doc_block_runs(block: Block, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name in block.needs:
        if name not in NEEDS:
            pytest.fail(f"{block.id}: unknown '# needs: {name}'; known: {', '.join(NEEDS)}")
        module, url = NEEDS[name]
        need_module(module)
        if url is not None:
            need(url)
            env["DATABASE_URL"] = url
    # Padding with blank lines makes tracebacks give the Markdown file's line numbers.
    script = tmp_path / f"{block.path.name}.py"
    script.write_text("\n" * (block.line - 1) + block.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the ```python block at {block.id} failed (exit {proc.returncode}):\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )
