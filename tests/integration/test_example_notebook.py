"""examples/notebook.ipynb, executed by nbclient on a real IPython kernel.

The kernel is this interpreter (a kernelspec written to a temporary directory names
``sys.executable``), so it imports dbpool from this tree. After the notebook has run
top to bottom, the test runs the cell that makes the engine again, and counts the
engines and pools alive in the kernel (and, on PostgreSQL, the notebook's connections
on the server): still one. The same re-runs with ``create_engine`` instead show the
count growing, so the count can fail.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbpool import make_url
from tests.integration.examples_support import EXAMPLES, Sessions, postgres_sessions
from tests.servers import need_module
from tests.test_lifecycle import ROOT

NOTEBOOK = EXAMPLES / "notebook.ipynb"
PASSWORD = f"nb-{uuid.uuid4().hex[:12]}"

# Run in the kernel: how many engines are alive in dbpool's registry (Out[...] keeps
# every displayed engine alive, as it does in a real notebook).
COUNT_ENGINES = """
import gc, dbpool.shared
gc.collect()
print("engines:", sum(len(engines) for engines in dbpool.shared._live.values()))
"""
DISPOSE_ALL = """
for engines in dbpool.shared._live.values():
    for engine in list(engines):
        engine.dispose()
"""


@dataclass
class Database:
    url: str
    sessions: Sessions | None  # the server's view, where there is a server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        # A password in a SQLite URL is ignored, but must not be shown either.
        yield Database(f"sqlite://nb:{PASSWORD}@/{tmp_path / 'notebook.db'}", None)
        return
    admin_url = request.getfixturevalue("postgres_url")
    sessions = postgres_sessions(admin_url, f"dbpool-nb-{uuid.uuid4().hex[:10]}", PASSWORD)
    yield Database(sessions.url, sessions)
    sessions.run("DROP TABLE IF EXISTS dbpool_ex_squares")
    sessions.observer.dispose()


class Kernel:
    """The notebook in an nbclient client, on a kernel running this interpreter."""

    def __init__(self, workdir: Path, database_url: str) -> None:
        need_module("nbclient")
        need_module("ipykernel")
        import nbformat
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        self.nbformat = nbformat
        self.nb = nbformat.read(NOTEBOOK, as_version=4)
        spec_dir = workdir / "kernels" / "dbpool-test"
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec = {"argv": argv, "display_name": "dbpool test", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        self.km = AsyncKernelManager(
            kernel_name="dbpool-test",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]),
        )
        self.client = NotebookClient(
            self.nb,
            km=self.km,
            timeout=120,
            startup_timeout=120,
            resources={"metadata": {"path": str(workdir)}},  # the kernel's working directory
        )
        self.env = dict(os.environ, DATABASE_URL=database_url)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        )

    def cell(self, tag: str) -> tuple[int, Any]:
        (found,) = [
            (i, c) for i, c in enumerate(self.nb.cells) if tag in c.metadata.get("tags", [])
        ]
        return found

    def run(self, tag: str) -> Any:
        index, cell = self.cell(tag)
        return self.client.execute_cell(cell, index)

    def run_code(self, source: str) -> str:
        """Run cells that are not in the notebook (appended to it); their stdout."""
        cell = self.nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return stdout(cell)


def stdout(cell: Any) -> str:
    return "".join(o["text"] for o in cell.outputs if o.get("name") == "stdout")


def html(cell: Any) -> str:
    (found,) = [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]
    return str(found)


def pool_id(cell: Any) -> int:
    match = re.fullmatch(r"pool id: (\d+)\n", stdout(cell))
    assert match, stdout(cell)
    return int(match[1])


def test_the_notebook_runs_keeps_one_pool_across_reruns_and_shows_html_tables(
    database: Database, tmp_path: Path
) -> None:
    kernel = Kernel(tmp_path, database.url)
    with kernel.client.setup_kernel(env=kernel.env, cleanup_kc=True):
        for index, cell in enumerate(list(kernel.nb.cells)):
            kernel.client.execute_cell(cell, index)
        first_pool = pool_id(kernel.cell("engine")[1])

        # What the reader sees: the engine, the result and the status as HTML tables.
        engine_html = html(kernel.cell("engine")[1])
        assert engine_html.startswith("<table><caption>Engine ")
        assert ">connection_limit</th><td style='text-align:left'>2<" in engine_html
        result_html = html(kernel.cell("query")[1])
        assert "<thead><tr><th>n</th><th>square</th><th>size</th></tr></thead>" in result_html
        assert result_html.count("<tr><td>") == 20  # the bound, of 50 rows
        assert "<tr><td>3</td><td>9</td><td>&lt;100</td></tr>" in result_html
        assert "… 30 more rows" in result_html
        rows = kernel.cell("rows")[1].outputs[0]["data"]["text/plain"]
        assert rows == "(50, (50, 2500, '>=100'))", "showing the result fetched nothing"
        assert ">opened_total</th>" in html(kernel.cell("status")[1])
        assert kernel.cell("dispose")[1].outputs[0]["data"]["text/plain"] == "0"

        # Re-running the engine cell, and a query after each run: one engine, one pool.
        pools = []
        for _ in range(3):
            kernel.run("engine")
            pools.append(pool_id(kernel.cell("engine")[1]))
            kernel.run("query")
        assert pools == [first_pool] * 3
        assert kernel.run_code(COUNT_ENGINES) == "engines: 1\n"
        if database.sessions is not None:
            assert database.sessions.wait_for(1) == 1, "one connection on the server"

        # The same re-runs with create_engine(): an engine, a pool and a connection each.
        _, cell = kernel.cell("engine")
        cell.source = cell.source.replace("dbpool.shared_engine(", "dbpool.create_engine(")
        for _ in range(2):
            kernel.run("engine")
            pools.append(pool_id(cell))
            kernel.run("query")
        assert len(set(pools)) == 3
        assert kernel.run_code(COUNT_ENGINES) == "engines: 3\n"
        if database.sessions is not None:
            assert database.sessions.wait_for(3) == 3, "the multiplied pools on the server"
        kernel.run_code(DISPOSE_ALL)

    if database.sessions is not None:
        assert database.sessions.wait_for(0) == 0
    outputs = json.dumps([cell.get("outputs", []) for cell in kernel.nb.cells])
    assert PASSWORD not in outputs
    assert make_url(database.url).password == PASSWORD


def test_the_notebook_is_stored_without_outputs() -> None:
    need_module("nbformat")
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    tags = [tag for cell in code for tag in cell.metadata.get("tags", [])]
    assert {"engine", "query", "status"} <= set(tags) and len(tags) == len(set(tags))
