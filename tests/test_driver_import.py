"""A driver that cannot be imported: not installed, or installed without its system library.

On a machine without unixODBC, pyodbc is installed but ``import pyodbc`` fails with
"libodbc.so.2: cannot open shared object file". The message must send the user to
the system package, not to pip; the doc blocks and tests that need pyodbc skip. Both
cases are simulated here, so they are proven on machines with and without unixODBC.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import dbpool
from tests import servers
from tests.test_docs import BLOCKS

LIBODBC_MISSING = "libodbc.so.2: cannot open shared object file: No such file or directory"


class _BrokenExtension(importlib.abc.MetaPathFinder):
    """Fails the import of one module as a C extension does when a library it links is
    missing: ImportError (not ModuleNotFoundError) with the loader's message."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.name:
            raise ImportError(LIBODBC_MISSING, name=fullname, path=f"/site-packages/{fullname}.so")


@pytest.fixture
def pyodbc_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # import raises ModuleNotFoundError


@pytest.fixture
def libodbc_missing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delitem(sys.modules, "pyodbc", raising=False)
    finder = _BrokenExtension("pyodbc")
    sys.meta_path.insert(0, finder)
    yield
    sys.meta_path.remove(finder)


URLS = {"mssql": "mssql://sa:pw@db.example.com/shop", "odbc": "odbc://u:pw@h/db?driver=X"}


@pytest.mark.parametrize("dialect", ["mssql", "odbc"])
def test_pyodbc_not_installed_says_which_extra_to_install(
    pyodbc_not_installed: None, dialect: str
) -> None:
    with pytest.raises(dbpool.ConfigError) as caught:
        dbpool.create_engine(URLS[dialect])
    message = str(caught.value)
    assert f"The {dialect} dialect needs the pyodbc driver, which is not installed" in message
    assert f'pip install "dbpool[{dialect}]"' in message
    assert "unixodbc" not in message.lower()


@pytest.mark.parametrize("dialect", ["mssql", "odbc"])
def test_pyodbc_without_libodbc_says_to_install_the_system_library(
    libodbc_missing: None, dialect: str
) -> None:
    with pytest.raises(dbpool.ConfigError) as caught:
        dbpool.create_engine(URLS[dialect])
    message = str(caught.value)
    assert "pyodbc driver, which is installed but cannot be imported" in message
    assert LIBODBC_MISSING in message  # the import error itself
    assert "apt-get install unixodbc" in message
    assert "pip install" not in message
    assert "pw" not in message.replace("pyodbc", "")  # no password from the URL
    assert isinstance(caught.value.__cause__, ImportError)


def test_other_drivers_name_the_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(dbpool.ConfigError, match=r'not installed: pip install "dbpool\[mysql\]"'):
        dbpool.create_engine("mysql://root@127.0.0.1/test")


def test_a_module_the_driver_needs_is_not_the_driver_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # psycopg installed, but something it imports is not: not "pip install dbpool[...]".
    from dbpool.dialects.postgresql import PostgreSQLDialect

    error = ModuleNotFoundError("No module named 'psycopg_c'", name="psycopg_c")
    message = str(PostgreSQLDialect.driver_import_error(error))
    assert "installed but cannot be imported: No module named 'psycopg_c'" in message


# -- tests and doc blocks that need pyodbc skip, or fail when databases are required -----


def test_need_module_skips_with_the_import_error(
    libodbc_missing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "REQUIRE_DATABASES", False)
    with pytest.raises(pytest.skip.Exception, match=r"pyodbc cannot be imported.*libodbc\.so\.2"):
        servers.need_module("pyodbc")


def test_need_module_fails_when_databases_are_required(
    libodbc_missing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "REQUIRE_DATABASES", True)
    with pytest.raises(pytest.fail.Exception, match="DBPOOL_REQUIRE_DATABASES=1"):
        servers.need_module("pyodbc")


def test_need_module_says_not_installed(
    pyodbc_not_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "REQUIRE_DATABASES", False)
    with pytest.raises(pytest.skip.Exception, match="driver pyodbc is not installed"):
        servers.need_module("pyodbc")


def test_every_doc_block_that_builds_an_odbc_engine_needs_odbc() -> None:
    odbc_blocks = [b for b in BLOCKS if "mssql://" in b.code or "odbc://" in b.code]
    assert len(odbc_blocks) >= 3
    assert all("odbc" in b.needs for b in odbc_blocks), [b.id for b in odbc_blocks]


def test_a_doc_block_that_needs_odbc_skips_without_libodbc(
    libodbc_missing: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_docs import test_doc_block_runs

    monkeypatch.setattr(servers, "REQUIRE_DATABASES", False)

    block = next(b for b in BLOCKS if "odbc" in b.needs)
    with pytest.raises(pytest.skip.Exception, match=r"libodbc\.so\.2"):
        test_doc_block_runs(block, tmp_path)
    monkeypatch.setattr(servers, "REQUIRE_DATABASES", True)  # CI: a missing library fails
    with pytest.raises(pytest.fail.Exception, match="DBPOOL_REQUIRE_DATABASES=1"):
        test_doc_block_runs(block, tmp_path)
