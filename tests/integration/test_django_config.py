"""``dbpool.contrib.django.config()``: a DATABASES entry from a URL (no server needed)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured

from dbpool import ConfigError
from dbpool.contrib.django import config
from tests.servers import need_module


def test_postgresql_url_gives_a_full_entry() -> None:
    pytest.importorskip("psycopg")
    entry = config(
        "postgresql://app:s%40cret@db.internal:6432/shop"
        "?connection_limit=8&pool_timeout=5&sslmode=require&application_name=web"
    )
    assert entry == {
        "ENGINE": "dbpool.contrib.django.postgresql",
        "NAME": "shop",
        "USER": "app",
        "PASSWORD": "s@cret",
        "HOST": "db.internal",
        "PORT": "6432",
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "connection_limit": 8,
            "pool_timeout": 5.0,
            "sslmode": "require",
            "application_name": "web",
        },
    }


def test_reads_database_url_and_keywords_override(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pymysql")
    monkeypatch.setenv("DATABASE_URL", "mysql://root@127.0.0.1/app?connection_limit=3")
    entry = config(connection_limit=5, max_connection_lifetime=600)
    assert entry["ENGINE"] == "dbpool.contrib.django.mysql"
    assert (entry["NAME"], entry["USER"], entry["PASSWORD"], entry["PORT"]) == ("app", "root",
                                                                               "", "")  # fmt: skip
    assert entry["OPTIONS"] == {"connection_limit": 5, "max_connection_lifetime": 600.0}


def test_no_url_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ImproperlyConfigured, match="set DATABASE_URL"):
        config()


def test_isolation_level_in_each_backends_own_format() -> None:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("pymysql")
    pg = config("postgresql://h/db?isolation_level=repeatable_read")
    assert pg["OPTIONS"]["isolation_level"] == psycopg.IsolationLevel.REPEATABLE_READ
    my = config("mariadb://h/db?isolation_level=SERIALIZABLE")
    assert my["OPTIONS"]["isolation_level"] == "serializable"
    assert (
        "isolation_level" not in config("postgresql://h/db?isolation_level=AUTOCOMMIT")["OPTIONS"]
    )


def test_postgresql_schema_pgbouncer_and_socket() -> None:
    pytest.importorskip("psycopg")
    entry = config("postgresql:///shop?host=/var/run/postgresql&schema=tenant1")
    assert entry["HOST"] == "/var/run/postgresql"
    assert entry["OPTIONS"] == {"schema": "tenant1"}
    assert config("postgresql://h/shop?pgbouncer=1")["OPTIONS"] == {"pgbouncer": True}
    with pytest.raises(ImproperlyConfigured, match="schema cannot be used with pgbouncer"):
        config("postgresql://h/shop?schema=tenant1&pgbouncer=true")


def test_sqlite_file_memory_and_pragmas() -> None:
    assert config("sqlite:///var/app.db")["NAME"] == "var/app.db"
    assert config("sqlite:////abs/app.db")["NAME"] == "/abs/app.db"
    assert config("sqlite://")["NAME"] == ":memory:"
    entry = config("sqlite:///app.db?journal_mode=wal&mode=ro&connection_limit=4")
    assert entry["ENGINE"] == "dbpool.contrib.django.sqlite3"
    assert entry["NAME"] == "file:app.db?mode=ro"
    assert entry["OPTIONS"] == {"connection_limit": 4, "init_command": "PRAGMA journal_mode = WAL"}


def test_pre_ping_off_is_kept_as_false() -> None:
    assert config("sqlite:///a.db", pre_ping=False)["OPTIONS"] == {"pre_ping": False}
    assert config("sqlite:///a.db?pre_ping=2")["OPTIONS"] == {"pre_ping": 2.0}


@pytest.mark.parametrize(
    ("url", "settings", "message"),
    [
        ("sqlite:///a.db?conection_limit=3", {}, 'Did you mean "connection_limit"?'),
        ("sqlite:///a.db", {"conection_limit": 3}, 'Did you mean "connection_limit"?'),
        ("sqlite:///a.db?connection_limit=0", {}, "connection_limit must be an integer >= 1"),
        ("sqlite:///a.db", {"pool_timeout": -1}, "pool_timeout must be a number of seconds"),
        ("postgresql://h/db?sslmod=require", {}, "Unknown query parameter 'sslmod'"),
        ("mssql://h/db", {}, "no Django backend for mssql"),
        ("oracle://h/db", {}, "Unknown database 'oracle'"),
    ],
)
def test_bad_settings_raise_improperly_configured(
    url: str, settings: dict[str, Any], message: str
) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ImproperlyConfigured, match=message) as caught:
        config(url, **settings)
    assert isinstance(caught.value.__cause__, ConfigError)
    assert str(caught.value) == str(caught.value.__cause__)


def test_bad_url_error_hides_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        config("postgresql://app:hunter2secret@db:notaport/shop")
    assert "hunter2secret" not in str(caught.value)


def test_pool_registry_evicts_idle_pools_per_server(tmp_path: Any) -> None:
    import dbpool
    from dbpool.contrib.django import pools

    made: list[Any] = []

    def make() -> Any:
        # A file each: dbpool's own "too many engines for one database" count stays out
        # of it (the registry's grouping is the server tuple given below).
        made.append(dbpool.create_engine(f"sqlite:///{tmp_path / f'r{len(made)}.db'}"))
        return made[-1]

    limit = pools.MAX_POOLS_PER_DATABASE
    database = ("sqlite", "registry-test")
    try:
        busy = pools.engine_for(("busy",), database, ("sqlite", "a", "", "r"), make)
        held = busy.connect()  # a pool in use is never evicted
        for n in range(limit + 2):
            pools.engine_for(("a", n), database, ("sqlite", "a", "", "r"), make)
        for n in range(limit - 1):  # another server with the same database name
            pools.engine_for(("b", n), database, ("sqlite", "b", "", "r"), make)
        alive = pools.engines()
        on_a = [e for e in made[: limit + 3] if e in alive]
        assert len(on_a) == limit and busy in on_a
        assert all(e in alive for e in made[limit + 3 :])  # b's pools were not touched
        held.close()
    finally:
        pools.dispose_database(*database)
        for engine in made:
            engine.dispose()
    assert not set(pools.engines()) & set(made)


def test_mysql_backend_makes_mysqldb_and_pymysql_one_set_of_modules() -> None:
    # Django imports MySQLdb.constants, .converters and (through them) .err; without
    # aliasing, those are second copies and pymysql.err is rebound to the copy, so the
    # errors the driver raises fail isinstance checks against pymysql.err's classes.
    need_module("pymysql")
    import pymysql

    importlib.import_module("dbpool.contrib.django.mysql.base")  # before Django's backend
    mysql_base = importlib.import_module("django.db.backends.mysql.base")

    for name in ("err", "constants", "constants.CLIENT", "constants.FIELD_TYPE", "converters"):
        assert sys.modules[f"MySQLdb.{name}"] is sys.modules[f"pymysql.{name}"], name
    assert pymysql.err is sys.modules["pymysql.err"]
    assert mysql_base.Database.OperationalError is sys.modules["pymysql.err"].OperationalError
