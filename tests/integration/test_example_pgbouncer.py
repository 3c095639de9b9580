"""examples/pgbouncer/: PgBouncer runs with that very pgbouncer.ini and userlist.txt, only
the addresses, port, file paths, user names and the user's secret replaced, and dbpool
works through it as docs/scaling.md says: transactions and bind parameters over a few
server connections, SCRAM logins checked against the user list, the application name
passed on, session-level statements refused, and ``options`` refused at login rather
than dropped."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Iterator

import pytest

import dbpool
from dbpool import Engine, text
from tests import pgbouncer
from tests.engines import engine_for
from tests.integration.examples_support import EXAMPLES
from tests.integration.targets import with_query
from tests.servers import POSTGRES_URL, REQUIRE_DATABASES, need, need_module
from tests.threads import run_threads

EXAMPLE = EXAMPLES / "pgbouncer"
DATABASE = "shop"  # the name the example gives the database on PgBouncer


def ini_value(ini: str, key: str) -> str:
    """A ``key = value`` setting of the example (commented-out ones do not count)."""
    found = re.findall(rf"^{re.escape(key)} = (.*)$", ini, re.MULTILINE)
    assert len(found) == 1, f"{key} is set {len(found)} times in the example"
    return str(found[0]).strip()


def substitute(ini: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
        line = f"{key} = {value}"
        ini, count = pattern.subn(line.replace("\\", "\\\\"), ini)  # taken literally
        assert count == 1, f"{key} is set {count} times in the example"
    return ini


def scram_secret(password: str) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL would store for ``password`` (RFC 5802/7677),
    which is what the example's userlist.txt asks for."""
    salt, iterations = os.urandom(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
        f"{b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def example_config(settings: pgbouncer.Settings) -> str:
    directory = settings.directory
    userlist = (EXAMPLE / "userlist.txt").read_text()
    placeholder = re.compile(r'^"app" "SCRAM-SHA-256\$4096:<salt>\$<stored key>:<server key>"$',
                             re.MULTILINE)  # fmt: skip
    line = f'"{settings.user}" "{scram_secret(settings.password)}"'
    userlist, count = placeholder.subn(lambda _: line, userlist)
    assert count == 1, "the example user list's placeholder line changed"
    auth_file = directory / "example-userlist.txt"
    auth_file.write_text(userlist)
    auth_file.chmod(0o644)  # PgBouncer may run as another user (tests/pgbouncer.py)
    upstream = f"host={settings.upstream_host} port={settings.upstream_port} dbname=test"
    return substitute(
        (EXAMPLE / "pgbouncer.ini").read_text(),
        {
            DATABASE: upstream,
            "listen_addr": "127.0.0.1",
            "listen_port": str(settings.port),
            "unix_socket_dir": "",
            "auth_file": str(auth_file),
            "admin_users": settings.user,
            "stats_users": settings.user,
            "logfile": str(directory / "pgbouncer.log"),
            "pidfile": str(directory / "pgbouncer.pid"),
        },
    )


@pytest.fixture(scope="module")
def example_bouncer() -> Iterator[pgbouncer.PgBouncer]:
    need_module("psycopg")
    need(POSTGRES_URL)
    try:
        bouncer = pgbouncer.start(POSTGRES_URL, config=example_config)
    except pgbouncer.PgBouncerUnavailable as exc:
        if REQUIRE_DATABASES:
            pytest.fail(f"{exc} and DBPOOL_REQUIRE_DATABASES=1")
        pytest.skip(str(exc))
    yield bouncer
    bouncer.stop()


def shop_url(bouncer: pgbouncer.PgBouncer, password: str | None = None) -> str:
    secret = bouncer.password if password is None else password
    return f"postgresql://{bouncer.user}:{secret}@127.0.0.1:{bouncer.port}/{DATABASE}"


def test_example_settings_are_the_ones_in_effect(example_bouncer: pgbouncer.PgBouncer) -> None:
    psycopg = pytest.importorskip("psycopg")
    ini = (EXAMPLE / "pgbouncer.ini").read_text()
    with psycopg.connect(example_bouncer.admin_url, autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:  # fmt: skip
        config = {row[0]: row[1] for row in admin.execute("SHOW CONFIG").fetchall()}
    checked = "pool_mode default_pool_size reserve_pool_size max_client_conn query_wait_timeout"
    for key in [*checked.split(), "server_reset_query", "ignore_startup_parameters"]:
        assert config[key] == ini_value(ini, key), key


def test_dbpool_through_the_example(
    example_bouncer: pgbouncer.PgBouncer, engines: list[Engine]
) -> None:
    ini = (EXAMPLE / "pgbouncer.ini").read_text()
    servers_at_most = int(ini_value(ini, "default_pool_size")) + int(
        ini_value(ini, "reserve_pool_size")
    )
    engine = engine_for(engines, with_query(shop_url(example_bouncer), pgbouncer="true"),
                        connection_limit=6, pool_timeout=30)  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS dbpool_bouncer_ex (n int)"))
        conn.execute(text("TRUNCATE dbpool_bouncer_ex"))
    backends: set[int] = set()
    lock = threading.Lock()

    def work(number: int) -> None:
        for i in range(10):
            with engine.begin() as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                conn.execute(text("INSERT INTO dbpool_bouncer_ex (n) VALUES (:n)"),
                             [{"n": number}, {"n": i}])  # fmt: skip
            with lock:
                backends.add(pid)

    try:
        run_threads(12, work)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dbpool_bouncer_ex")).scalar() == 240
            # PgBouncer passes dbpool's application name on to the server.
            name = conn.execute(text("SHOW application_name")).scalar()
            assert name == engine.dialect.application_name
            with pytest.raises(dbpool.NotSupportedError, match="SET search_path"):
                conn.execute(text("SET search_path = public"))
            conn.rollback()
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS dbpool_bouncer_ex"))
    assert 1 <= len(backends) <= min(servers_at_most, engine.config.connection_limit)


def test_wrong_password_is_refused(example_bouncer: pgbouncer.PgBouncer) -> None:
    engine = dbpool.create_engine(shop_url(example_bouncer, "not-the-password"))
    with pytest.raises(dbpool.ConnectError) as caught:
        engine.open()
    assert "not-the-password" not in str(caught.value)
    assert "SASL authentication failed" in str(caught.value)  # checked by PgBouncer
    engine.dispose()


def test_options_are_refused_at_login_not_dropped(example_bouncer: pgbouncer.PgBouncer) -> None:
    # ignore_startup_parameters leaves "options" out on purpose: a search_path given there
    # would otherwise be dropped without a word.
    url = with_query(shop_url(example_bouncer), options="-c search_path=shop")
    engine = dbpool.create_engine(url)
    with pytest.raises(dbpool.ConnectError, match="unsupported startup parameter: options"):
        engine.open()
    engine.dispose()
