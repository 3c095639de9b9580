"""MkDocs hooks: the repository's files outside docs/ in the documentation site.

The Markdown under docs/ is written to read on GitHub too, so it links to files outside
docs/ (``../README.md``, ``../../examples/flask_app.py``) by their path in the
repository. On the site those paths lead nowhere; these hooks make them real pages:

* Markdown files listed in ``MOUNTED`` are pages of the site, read from where they are
  (no copy that can go stale): the repository's README is the home page, CHANGELOG.md
  the changelog, benchmarks/README.md the benchmarks page.
* Any other repository file a page links to becomes a page under ``repository/`` that
  shows the file (a notebook as its cells).
* Links are rewritten to those pages. A link to a file that does not exist is left as
  it is, so ``mkdocs build --strict`` fails on it like on any broken link.

docs/README.md, the table of contents for readers browsing docs/ on GitHub, is left out
of the site: the navigation does its job there, and the README is the home page.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent

# Repository path -> the page it is on the site.
MOUNTED = {
    "README.md": "index.md",
    "CHANGELOG.md": "changelog.md",
    "benchmarks/README.md": "benchmarks.md",
}
SHOWN_UNDER = "repository"  # pages that show other repository files

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
# The target of an inline link or image: ](target) or ](target "title").
_LINK = re.compile(r"(\]\()(?P<target>[^)\s]+)(?=(?:\s+\"[^\"]*\")?\))")
_LANGUAGES = {
    ".py": "python",
    ".ini": "ini",
    ".cfg": "ini",
    ".toml": "toml",
    ".sh": "sh",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".json": "json",
    ".sql": "sql",
}

# Site page (src_uri) -> the file it is made from, for resolving its relative links.
_origins: dict[str, Path] = {}
# A file outside docs/ -> the site page made for it.
_pages: dict[Path, str] = {}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Mount the repository's Markdown pages and make a page for every file they need."""
    _origins.clear()
    _pages.clear()
    docs = Path(config.docs_dir).resolve()
    readme = files.get_file_from_path("README.md")
    if readme is not None:
        files.remove(readme)
    for file in files.documentation_pages():
        _origins[file.src_uri] = docs / file.src_uri
    for path, page in MOUNTED.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / path)))
        _origins[page] = ROOT / path
        _pages[ROOT / path] = page
    for origin in list(_origins.values()):
        for target in _targets(origin):
            if target.is_relative_to(docs) or target in _pages or not target.is_file():
                continue
            if target.is_relative_to(ROOT):
                shown = target.relative_to(ROOT).as_posix()
                page = f"{SHOWN_UNDER}/{shown}.md"
                files.append(File.generated(config, page, content=_show(shown)))
                _pages[target] = page
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Point links to repository files at the pages that show them on the site."""
    if page.file.src_uri == MOUNTED["README.md"]:
        # The home page's benchmark tables need the width of the table of contents, and
        # its few sections are in view anyway (README.md itself cannot carry front matter).
        page.meta.setdefault("hide", []).append("toc")
    origin = _origins.get(page.file.src_uri)
    if origin is None:
        return markdown
    docs = Path(config.docs_dir).resolve()
    here = posixpath.dirname(page.file.src_uri) or "."

    def rewrite(match: re.Match[str]) -> str:
        path, hash_, anchor = match["target"].partition("#")
        target = _resolve(origin, path)
        if target is None:
            return match[0]
        if target.is_relative_to(docs):
            site = target.relative_to(docs).as_posix()
        elif target in _pages:
            site = _pages[target]
        else:
            return match[0]  # no such file: the build reports the broken link
        return match[1] + posixpath.relpath(site, here) + hash_ + anchor

    return _outside_code(markdown, lambda line: _LINK.sub(rewrite, line))


def _resolve(origin: Path, path: str) -> Path | None:
    """The file a relative link in ``origin`` names; None for a URL, an anchor in the
    same page or an absolute path."""
    if not path or ":" in path or path.startswith("/"):
        return None
    return Path(os.path.normpath(origin.parent / unquote(path)))


def _targets(origin: Path) -> set[Path]:
    """The files the Markdown file ``origin`` links to."""
    found: set[Path] = set()

    def collect(line: str) -> str:
        for match in _LINK.finditer(line):
            target = _resolve(origin, match["target"].partition("#")[0])
            if target is not None:
                found.add(target)
        return line

    _outside_code(origin.read_text(encoding="utf-8"), collect)
    return found


def _outside_code(markdown: str, edit: Callable[[str], str]) -> str:
    """``markdown`` with ``edit`` applied to each line outside fenced code blocks."""
    lines = markdown.split("\n")
    fence: str | None = None
    for i, line in enumerate(lines):
        opening = _FENCE.match(line)
        if fence is None:
            if opening:
                fence = opening[1]
            else:
                lines[i] = edit(line)
        elif (
            opening
            and opening[1].startswith(fence[0] * len(fence))
            and not line.strip(fence[0] + " \t")
        ):
            fence = None
    return "\n".join(lines)


def _show(path: str) -> str:
    """A page showing the repository file ``path``."""
    source = ROOT / path
    heading = f"# {posixpath.basename(path)}\n\n`{path}` in the dbpool repository.\n\n"
    if source.suffix == ".ipynb":
        return heading + _notebook(source)
    return heading + _code(source.read_text(encoding="utf-8"), _LANGUAGES.get(source.suffix, ""))


def _code(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}\n"


def _notebook(source: Path) -> str:
    """A notebook's cells: Markdown as it is (headings one level down), code as code."""
    notebook = json.loads(source.read_text(encoding="utf-8"))
    parts = []
    for cell in notebook.get("cells", []):
        text = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            parts.append(re.sub(r"(?m)^#", "##", text) + "\n")
        elif cell.get("cell_type") == "code":
            parts.append(_code(text, "python"))
    return "\n".join(parts)
