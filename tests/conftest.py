from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings as _hypothesis_settings

from tests import pgbouncer
from tests.fakedb import FakeDB, MakePool
from tests.servers import MYSQL_URL, POSTGRES_URL, REQUIRE_DATABASES, need, need_module

if TYPE_CHECKING:
    from dbpool import Engine, QueuePool


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """The engines a test makes with ``tests.engines.engine_for``, disposed when it ends."""
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def db() -> FakeDB:
    """The fake DB-API driver (tests/fakedb.py) that ``make_pool`` builds pools on."""
    return FakeDB()


@pytest.fixture
def pool_defaults() -> dict[str, Any]:
    """The settings ``make_pool`` gives a pool unless told otherwise; a module may override."""
    return {"connection_limit": 2, "pool_timeout": 5}


@pytest.fixture
def make_pool(db: FakeDB, pool_defaults: dict[str, Any]) -> Iterator[MakePool]:
    """Build pools on the fake driver; every one is disposed at the end of the test."""
    from dbpool import QueuePool

    made: list[QueuePool] = []

    def make(**settings: Any) -> QueuePool:
        pool = QueuePool(db.connect, **{**pool_defaults, **settings})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.dispose()


@pytest.fixture
def postgres_url() -> str:
    need_module("psycopg")
    need(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def mysql_url() -> str:
    need_module("pymysql")
    need(MYSQL_URL)
    return MYSQL_URL


@pytest.fixture(scope="session")
def pgbouncer_url() -> Iterator[str]:
    """PgBouncer in transaction mode (pool size 2) in front of the test PostgreSQL server,
    started once per session (tests/pgbouncer.py); the URL has no ``pgbouncer=true``."""
    need_module("psycopg")
    need(POSTGRES_URL)
    external = os.environ.get("DBPOOL_TEST_PGBOUNCER_URL")
    if external:
        need(external)
        yield external
        return
    try:
        bouncer = pgbouncer.start(POSTGRES_URL)
    except pgbouncer.PgBouncerUnavailable as exc:
        if REQUIRE_DATABASES:
            pytest.fail(f"{exc} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(str(exc))
    yield bouncer.url
    bouncer.stop()


def _private_pgbouncer(pool_mode: str, pool_size: int) -> Iterator[str]:
    need_module("psycopg")
    need(POSTGRES_URL)
    try:
        bouncer = pgbouncer.start(POSTGRES_URL, pool_mode=pool_mode, pool_size=pool_size)
    except pgbouncer.PgBouncerUnavailable as exc:
        if REQUIRE_DATABASES:
            pytest.fail(f"{exc} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(str(exc))
    yield bouncer.url
    bouncer.stop()


@pytest.fixture(scope="session")
def pgbouncer_statement_url() -> Iterator[str]:
    """PgBouncer in statement mode (pool size 2), started once per session; no
    ``pgbouncer=true`` in the URL. Always a private instance (DBPOOL_TEST_PGBOUNCER_URL
    is a transaction-mode one)."""
    yield from _private_pgbouncer("statement", pgbouncer.POOL_SIZE)


@pytest.fixture(scope="session")
def pgbouncer_session_url() -> Iterator[str]:
    """PgBouncer in session mode (pool size 4: each client holds a server connection
    while it is connected), started once per session; a private instance."""
    yield from _private_pgbouncer("session", 4)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """(host, port) of a loopback TCP server that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    yield "127.0.0.1", listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for sock in accepted:
        sock.close()
    listener.close()


@pytest.fixture
def mysql_user(mysql_url: str) -> Iterator[tuple[str, str]]:
    """(user, password) of a throwaway MySQL/MariaDB user with rights on the test
    database, dropped afterwards."""
    import pymysql

    from dbpool import make_url

    admin = make_url(mysql_url)
    user, password = f"dbpool_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    conn = pymysql.connect(
        host=admin.host, port=admin.port or 3306, user=admin.username,
        password=admin.password or "", autocommit=True,
    )  # fmt: skip
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cursor.execute(f"GRANT ALL ON `{admin.database}`.* TO %s@'%%'", (user,))
        yield user, password
    finally:
        with conn.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        conn.close()


# CI runs hypothesis derandomized, so a red build is reproducible and never a coin toss;
# developers keep random exploration.
_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")
