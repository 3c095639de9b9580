"""dbpool's Django backends against the real servers: Django's semantics, pooled.

Django is configured in this process (tests/django_support/inprocess.py) with aliases
on PostgreSQL and MariaDB (database ``dbpool_dj``) and on a SQLite file. Every test
ends by checking that no pool has a connection still checked out.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import wsgiref.util
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.servers import MYSQL_URL, POSTGRES_URL, admin_query, need, need_module

pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured
from django.db import (
    OperationalError,
    close_old_connections,
    connections,
    transaction,
)

from dbpool import PoolTimeoutError
from tests.django_support import inprocess

T = TypeVar("T")
SERVERS = {"postgresql": ("psycopg", POSTGRES_URL), "mysql": ("pymysql", MYSQL_URL)}
_prepared: set[str] = set()


# -- the servers, seen from outside Django ---------------------------------------------


def server_sessions(vendor: str) -> int:
    """Sessions connected to the test database, as the server counts them."""
    if vendor == "postgresql":
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{inprocess.NAME}'"
    else:
        sql = f"SELECT count(*) FROM information_schema.processlist WHERE db = '{inprocess.NAME}'"
    return int(admin_query(vendor, sql)[0][0])


def kill_session(vendor: str, session_id: int) -> None:
    if vendor == "postgresql":
        admin_query(vendor, f"SELECT pg_terminate_backend({session_id})")
    else:
        admin_query(vendor, f"KILL {session_id}")


def session_id(alias: str) -> int:
    sql = "SELECT pg_backend_pid()" if alias.startswith("postgresql") else "SELECT CONNECTION_ID()"
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def django_configured() -> Iterator[None]:
    inprocess.configure()
    yield
    from dbpool.contrib.django import pools

    connections.close_all()
    pools.dispose_all(timeout=5)
    for vendor in sorted(_prepared & set(SERVERS)):
        quote = '"' if vendor == "postgresql" else "`"
        admin_query(vendor, f"DROP DATABASE IF EXISTS {quote}{inprocess.NAME}{quote}")
    _prepared.clear()


def prepare(vendor: str) -> None:
    """A fresh test database with the app's table, once per module run."""
    if vendor in SERVERS:
        module, url = SERVERS[vendor]
        need_module(module)
        need(url)
    if vendor in _prepared:
        return
    from tests.django_support.models import Item

    if vendor == "postgresql":
        admin_query(vendor, f'DROP DATABASE IF EXISTS "{inprocess.NAME}" WITH (FORCE)')
        admin_query(vendor, f'CREATE DATABASE "{inprocess.NAME}"')
    elif vendor == "mysql":
        admin_query(vendor, f"DROP DATABASE IF EXISTS `{inprocess.NAME}`")
        admin_query(vendor, f"CREATE DATABASE `{inprocess.NAME}`")
    with connections[vendor].schema_editor() as editor:
        editor.create_model(Item)
    connections[vendor].close()
    _prepared.add(vendor)


def finish(*aliases: str) -> None:
    """Empty the table, close this thread's connections, check that none is checked out."""
    from dbpool.contrib.django import pools
    from tests.django_support.models import Item

    for alias in aliases:
        Item.objects.using(alias).all().delete()
    for connection in connections.all():
        connection.close()
    busy = {repr(engine): engine.status().busy for engine in pools.engines()}
    assert not any(busy.values()), f"connections left checked out: {busy}"


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    prepare(request.param)
    yield request.param
    finish(request.param)


@pytest.fixture(params=["postgresql", "mysql"])
def server_alias(request: pytest.FixtureRequest) -> Iterator[str]:
    prepare(request.param)
    yield request.param
    finish(request.param)


def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread, which returns its connections at the end (as a request
    does); its result or its exception comes back."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
        finally:
            for connection in connections.all():
                connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


def items(alias: str) -> list[str]:
    from tests.django_support.models import Item

    return sorted(Item.objects.using(alias).values_list("name", flat=True))


def engine(alias: str) -> Any:
    return connections[alias].dbpool_engine


def wrapper_with(alias: str, **changes: Any) -> Any:
    """A DatabaseWrapper of ``alias``'s backend with changed settings (not registered)."""
    base = connections[alias]
    settings = {**base.settings_dict, "OPTIONS": dict(base.settings_dict["OPTIONS"])}
    options = changes.pop("OPTIONS", None)
    if options is not None:
        settings["OPTIONS"].update(options)
    settings.update(changes)
    return type(base)(settings, alias=f"{alias}_copy")


# -- Django's transaction semantics --------------------------------------------------


def test_autocommit_by_default(alias: str) -> None:
    from tests.django_support.models import Item

    connection = connections[alias]
    assert connection.get_autocommit()
    Item.objects.using(alias).create(name="auto")
    # Another thread checks out another connection and sees the row at once.
    assert in_thread(lambda: items(alias)) == ["auto"]


def test_atomic_with_savepoints(alias: str) -> None:
    from tests.django_support.models import Item

    objects = Item.objects.using(alias)
    with transaction.atomic(using=alias):
        objects.create(name="outer")
        with contextlib.suppress(ValueError), transaction.atomic(using=alias):
            objects.create(name="inner")
            raise ValueError("rolls back to the savepoint")
        objects.create(name="after")
    with contextlib.suppress(ValueError), transaction.atomic(using=alias):
        objects.create(name="lost")
        raise ValueError("rolls back the whole transaction")
    assert items(alias) == ["after", "outer"]
    assert in_thread(lambda: items(alias)) == ["after", "outer"]


def test_on_commit_hooks(alias: str) -> None:
    from tests.django_support.models import Item

    ran: list[str] = []
    with transaction.atomic(using=alias):
        Item.objects.using(alias).create(name="x")
        transaction.on_commit(lambda: ran.append("committed"), using=alias)
        assert ran == []
    assert ran == ["committed"]
    with contextlib.suppress(ValueError), transaction.atomic(using=alias):
        transaction.on_commit(lambda: ran.append("rolled back"), using=alias)
        raise ValueError
    transaction.on_commit(lambda: ran.append("autocommit"), using=alias)
    assert ran == ["committed", "autocommit"]


def test_select_for_update_locks_the_row_across_threads(server_alias: str) -> None:
    from tests.django_support.models import Item

    alias = server_alias
    Item.objects.using(alias).create(name="row", qty=0)
    locked, release = threading.Event(), threading.Event()

    def holder() -> None:
        with transaction.atomic(using=alias):
            row = Item.objects.using(alias).select_for_update().get(name="row")
            row.qty = 1
            row.save()
            locked.set()
            assert release.wait(30)

    def waiter() -> int:
        assert locked.wait(30)
        with transaction.atomic(using=alias):
            row = Item.objects.using(alias).select_for_update().get(name="row")
            seen = row.qty
            row.qty += 10
            row.save()
        return seen

    seen: queue.Queue[int] = queue.Queue()
    threads = [
        threading.Thread(target=lambda: in_thread(holder)),
        threading.Thread(target=lambda: seen.put(in_thread(waiter))),
    ]
    for thread in threads:
        thread.start()
    assert locked.wait(30)
    if alias == "postgresql":
        # The server itself says the second session waits for the row lock.
        deadline = time.monotonic() + 20
        sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = "
               f"'{inprocess.NAME}' AND wait_event_type = 'Lock'")  # fmt: skip
        while int(admin_query(alias, sql)[0][0]) == 0:
            assert time.monotonic() < deadline, "the second session never waited"
            time.sleep(0.05)
    else:
        time.sleep(0.5)
        assert seen.empty(), "the second select_for_update did not wait for the lock"
    release.set()
    for thread in threads:
        thread.join(60)
    assert seen.get(timeout=1) == 1  # it read the row after the holder committed
    assert Item.objects.using(alias).get(name="row").qty == 11


# -- connection handling -------------------------------------------------------------


@pytest.mark.parametrize("max_age", [60, None])
def test_conn_max_age_is_rejected(alias: str, max_age: int | None) -> None:
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE") as caught:
        wrapper_with(alias, CONN_MAX_AGE=max_age)
    assert "max_idle_connection_lifetime" in str(caught.value)


def test_conn_max_age_changed_on_a_live_wrapper_keeps_djangos_meaning(alias: str) -> None:
    # Django's own test suite patches settings_dict at run time: the connection then
    # stays checked out across "requests", as a persistent connection would.
    connection = connections[alias]
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = None
    try:
        items(alias)
        held = connection.connection
        connection.close_if_unusable_or_obsolete()
        assert connection.connection is held
        assert engine(alias).status().busy == 1
    finally:
        connection.settings_dict["CONN_MAX_AGE"] = 0
        connection.close()
    assert engine(alias).status().busy == 0


def test_conn_health_checks_are_served_by_pre_ping(server_alias: str) -> None:
    vendor = server_alias
    alias = f"{vendor}_health"
    assert engine(alias).config.pre_ping == 0  # every checkout is validated
    assert engine(vendor).config.pre_ping == 0.5  # dbpool's default otherwise
    first = session_id(alias)
    connections[alias].close()
    kill_session(vendor, first)
    opened = engine(alias).status().opened_total
    # Reused at once: only a ping at every checkout can notice the dead connection.
    second = session_id(alias)
    assert second != first
    assert engine(alias).status().opened_total == opened + 1


def test_request_signals_return_connections(alias: str) -> None:
    from django.core.signals import request_finished, request_started

    from tests.django_support.models import Item

    def request() -> tuple[Any, Any]:
        request_started.send(sender=None)
        Item.objects.using(alias).count()
        during = engine(alias).status()
        request_finished.send(sender=None)
        return during, engine(alias).status()

    during, after = in_thread(request)
    assert (during.busy, after.busy) == (1, 0), (during, after)

    def old_connections() -> tuple[Any, Any]:
        Item.objects.using(alias).count()
        during = engine(alias).status()
        close_old_connections()
        return during, engine(alias).status()

    during, after = in_thread(old_connections)
    assert (during.busy, after.busy) == (1, 0), (during, after)


def test_connection_closed_from_another_thread(alias: str) -> None:
    handed: queue.Queue[Any] = queue.Queue()
    closed = threading.Event()

    def owner() -> list[str]:
        connection = connections[alias]
        connection.inc_thread_sharing()
        items(alias)
        handed.put(connection)
        assert closed.wait(30)
        result = items(alias)  # checks a connection out again
        connection.dec_thread_sharing()
        return result

    thread_result: queue.Queue[Any] = queue.Queue()
    thread = threading.Thread(target=lambda: thread_result.put(in_thread(owner)))
    thread.start()
    connection = handed.get(timeout=30)
    assert engine(alias).status().busy == 1
    connection.close()  # from this thread, not the owner's
    assert connection.connection is None
    assert engine(alias).status().busy == 0
    closed.set()
    thread.join(60)
    assert thread_result.get(timeout=1) == []
    assert engine(alias).status().busy == 0


def test_connection_killed_by_the_server_is_replaced(server_alias: str) -> None:
    vendor = alias = server_alias
    doomed = session_id(alias)
    kill_session(vendor, doomed)  # while checked out: the next statement fails
    with pytest.raises(OperationalError):
        items(alias)
    assert connections[alias].errors_occurred
    open_before = engine(alias).status().open
    close_old_connections()  # at the end of the request: unusable, so discarded
    assert connections[alias].connection is None
    status = engine(alias).status()
    assert (status.busy, status.open) == (0, open_before - 1)
    assert session_id(alias) != doomed
    # An idle connection killed by the server: pre-ping replaces it at checkout.
    idle = session_id(alias)
    connections[alias].close()
    kill_session(vendor, idle)
    time.sleep(0.6)  # idle past the 0.5 s pre-ping window
    assert session_id(alias) != idle


def test_returned_connection_is_reset(alias: str) -> None:
    from tests.django_support.models import Item

    connection = connections[alias]
    connection.set_autocommit(False)
    Item.objects.using(alias).create(name="never committed")
    connection.close()  # returned with a transaction open and autocommit off
    with transaction.atomic(using=alias):
        Item.objects.using(alias).create(name="closed inside atomic")
        connection.close()
    assert engine(alias).status().busy == 0
    with engine(alias).pool.connect() as pooled:
        raw = pooled.driver_connection
        if alias == "postgresql":
            assert (raw.info.transaction_status, raw.autocommit) == (0, True)
        elif alias == "mysql":
            assert raw.get_autocommit() and not raw.server_status & 1
        else:
            assert (raw.in_transaction, raw.isolation_level) == (False, None)
    assert items(alias) == []


@pytest.mark.parametrize("vendor", ["postgresql", "mysql", "sqlite"])
def test_django_setup_runs_once_per_physical_connection(
    vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db.backends.signals import connection_created

    prepare(vendor)
    alias = f"{vendor}_setup"
    connections[alias].close_pool()
    django_class = type(connections[alias]).__mro__[2]  # Django's own DatabaseWrapper
    runs: list[str] = []
    original = django_class.init_connection_state

    def counting(self: Any) -> None:
        runs.append(self.alias)
        original(self)

    monkeypatch.setattr(django_class, "init_connection_state", counting)
    created: list[Any] = []

    def on_created(sender: Any, connection: Any, **kwargs: Any) -> None:
        created.append(connection)

    connection_created.connect(on_created)
    try:
        for _ in range(5):
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                if vendor == "postgresql":
                    cursor.execute("SELECT current_setting('TimeZone'), "
                                   "current_setting('transaction_isolation')")  # fmt: skip
                    assert cursor.fetchone() == ("Asia/Tokyo", "repeatable read")
                elif vendor == "mysql":
                    cursor.execute("SELECT @dbpool_init_runs")
                    assert cursor.fetchone() == (1,)
                    cursor.execute("SHOW VARIABLES WHERE variable_name IN "
                                   "('transaction_isolation', 'tx_isolation')")  # fmt: skip
                    assert cursor.fetchone()[1] == "REPEATABLE-READ"
                else:  # the init_command fails if it runs twice on one connection
                    cursor.execute("SELECT count(*) FROM temp.dbpool_init_runs")
                    assert cursor.fetchone() == (0,)
            connections[alias].close()
    finally:
        connection_created.disconnect(on_created)
    assert engine(alias).status().opened_total == 1
    assert runs == [alias]  # once, for the one physical connection
    assert len(created) == 5  # Django's signal still marks every checkout
    finish()


def test_same_settings_share_one_pool() -> None:
    prepare("postgresql")
    shared = engine("postgresql")
    assert engine("default") is shared
    assert engine("postgresql_same") is shared
    assert in_thread(lambda: engine("postgresql_same")) is shared  # process-wide
    assert engine("postgresql_small") is not shared
    assert engine("postgresql_small").config.connection_limit == 2
    assert engine("postgresql_health") is not shared
    assert engine("mysql") is not shared
    finish()


def test_pool_timeout_is_also_djangos_operational_error(alias: str) -> None:
    options = {"connection_limit": 1, "pool_timeout": 0.2}
    holder, waiter = wrapper_with(alias, OPTIONS=options), wrapper_with(alias, OPTIONS=options)
    holder.ensure_connection()
    try:
        with pytest.raises(OperationalError) as caught:
            waiter.ensure_connection()
        assert isinstance(caught.value, PoolTimeoutError)
        assert caught.value.code == "P2024"
        assert "connection limit: 1" in str(caught.value)
    finally:
        holder.close()
    waiter.ensure_connection()
    waiter.close()


def test_in_memory_sqlite_is_not_pooled() -> None:
    wrapper = wrapper_with("sqlite", NAME=":memory:")
    assert not wrapper.dbpool_pooled()
    with pytest.raises(ImproperlyConfigured, match="not pooled"):
        wrapper.dbpool_engine  # noqa: B018
    with wrapper.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (x INTEGER)")
    wrapper.close()  # Django keeps an in-memory database's connection open
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kept")
    wrapper.connection.close()


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"conection_limit": 3}, 'Did you mean "connection_limit"?'),
        ({"connection_limit": 0}, "connection_limit must be an integer >= 1, got 0"),
        ({"pool_timeout": "soon"}, "pool_timeout must be a number of seconds >= 0"),
        ({"pre_ping": "often"}, "pre_ping must be true, false or a window in seconds"),
    ],
)
def test_bad_pool_settings_in_options(alias: str, options: dict[str, Any], message: str) -> None:
    wrapper = wrapper_with(alias, OPTIONS=options)
    with pytest.raises(ImproperlyConfigured, match=message):
        wrapper.ensure_connection()


def test_djangos_own_pool_option_hands_the_alias_to_django() -> None:
    import django

    if django.VERSION < (5, 1):
        pytest.skip("Django's own pool (OPTIONS['pool']) is new in Django 5.1")
    pytest.importorskip("psycopg_pool")
    prepare("postgresql")
    wrapper = wrapper_with("postgresql", OPTIONS={"pool": {"min_size": 0, "max_size": 2}})
    assert not wrapper.dbpool_pooled()
    assert wrapper.pool is not None  # psycopg_pool's, as with Django's stock backend
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
        wrapper.close()
    finally:
        wrapper.close_pool()
    finish()


def test_pool_settings_in_options_apply(alias: str) -> None:
    wrapper = wrapper_with(
        alias, OPTIONS={"connection_limit": 3, "max_idle_connection_lifetime": 7}
    )
    config = wrapper.dbpool_engine.config
    assert (config.connection_limit, config.max_idle_connection_lifetime) == (3, 7.0)
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    wrapper.close()
    # The pool settings never reach the driver: it would reject them.
    assert "connection_limit" not in wrapper.get_connection_params()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_password_never_shown(server_alias: str, caplog: pytest.LogCaptureFixture) -> None:
    password = "Sup3r-s3cret-dbpool-pw"
    wrapper = wrapper_with(server_alias, PASSWORD=password, PORT=str(_free_port()),
                           OPTIONS={"pool_timeout": 0.5, "connect_timeout": 1})  # fmt: skip
    with caplog.at_level("DEBUG"), pytest.raises(OperationalError) as caught:
        wrapper.ensure_connection()
    chain, error = [], caught.value
    while error is not None:
        chain.append(f"{type(error).__name__}: {error!s} {error!r}")
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    shown = "\n".join([*chain, repr(wrapper), repr(wrapper.dbpool_engine),
                       str(wrapper.dbpool_engine.url), caplog.text])  # fmt: skip
    assert password not in shown
    bad = wrapper_with(server_alias, PASSWORD=password, OPTIONS={"connection_limit": "x"})
    with pytest.raises(ImproperlyConfigured) as config_error:
        bad.ensure_connection()
    assert password not in str(config_error.value)


# -- under load, through Django's WSGI handler ---------------------------------------


def wsgi_get(path: str, query: str) -> tuple[str, bytes]:
    """One request through Django's own WSGI handler, signals and all."""
    from django.core.handlers.wsgi import WSGIHandler

    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query}
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []
    response = WSGIHandler()(environ, lambda s, headers, exc_info=None: status.append(s))
    try:
        body = b"".join(response)
    finally:
        response.close()  # sends request_finished, which returns the connection
    return status[0], body


@pytest.mark.parametrize("vendor", ["postgresql", "mysql"])
def test_many_threads_stay_within_the_limit_on_the_server(vendor: str) -> None:
    from dbpool.contrib.django import pools

    prepare(vendor)
    pools.dispose_all(timeout=5)  # only this alias's pool on the database from now on
    limit = engine(vendor).config.connection_limit
    assert limit == 4
    most, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most[0] = max(most[0], server_sessions(vendor))
            time.sleep(0.02)

    statuses: queue.Queue[str] = queue.Queue()

    def client() -> None:
        for _ in range(5):
            statuses.put(wsgi_get("/two-queries", f"db={vendor}")[0])

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=client) for _ in range(32)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(120)
    stop.set()
    watcher.join(10)
    results = [statuses.get_nowait() for _ in range(statuses.qsize())]
    assert results == ["200 OK"] * 160
    assert 1 <= most[0] <= limit
    status = engine(vendor).status()
    assert status.busy == 0 and status.open <= limit and status.timeouts_total == 0
    assert server_sessions(vendor) <= limit
    finish(vendor)


@pytest.mark.parametrize("vendor", ["postgresql", "mysql", "sqlite"])
def test_a_failing_view_leaves_no_open_transaction(vendor: str) -> None:
    prepare(vendor)
    logger = __import__("logging").getLogger("django.request")
    level, logger.level = logger.level, 100  # the 500 is expected: keep the log quiet
    try:
        status, _ = in_thread(lambda: wsgi_get("/fail", f"db={vendor}&name=failed"))
    finally:
        logger.level = level
    assert status.startswith("500")
    assert engine(vendor).status().busy == 0
    assert items(vendor) == []
    finish(vendor)


# -- connections that are never returned ---------------------------------------------


def test_a_thread_that_never_closes_its_connection(alias: str) -> None:
    import gc

    from tests.django_support.models import Item

    def forgetful() -> None:
        Item.objects.using(alias).count()  # and the thread ends without closing

    with pytest.warns(ResourceWarning, match="garbage-collected without being closed"):
        thread = threading.Thread(target=forgetful)
        thread.start()
        thread.join(30)
        gc.collect()
    assert engine(alias).status().busy == 0  # its slot was reclaimed


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_never_touches_the_parents_connection() -> None:
    import os

    from tests.django_support.models import Item

    prepare("postgresql")
    with transaction.atomic(using="postgresql"):
        Item.objects.using("postgresql").create(name="parent")
        pid = os.fork()
        if pid == 0:  # the child: closing must send nothing on the parent's socket
            code = 1
            try:
                connections["postgresql"].close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        Item.objects.using("postgresql").create(name="after fork")
    assert items("postgresql") == ["after fork", "parent"]
    finish("postgresql")


def test_schema_setting_sets_the_search_path() -> None:
    prepare("postgresql")
    wrapper = wrapper_with("postgresql", OPTIONS={"schema": "Tenant One"})
    with wrapper.cursor() as cursor:
        cursor.execute("SHOW search_path")
        assert cursor.fetchone() == ('"Tenant One"',)
    wrapper.close()
    finish()


def test_djangos_own_options_keep_working_on_postgresql() -> None:
    prepare("postgresql")
    role = "dbpool_dj_role"
    admin_query("postgresql", f"DROP ROLE IF EXISTS {role}")
    admin_query("postgresql", f"CREATE ROLE {role} NOLOGIN")
    try:
        wrapper = wrapper_with(
            "postgresql", OPTIONS={"assume_role": role, "application_name": "dbpool-dj-test"}
        )
        for _ in range(3):  # SET ROLE runs on the new connection, then it stays set
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT current_user, current_setting('application_name')")
                assert cursor.fetchone() == (role, "dbpool-dj-test")
            wrapper.close()
        assert wrapper.dbpool_engine.status().opened_total == 1
        wrapper.dbpool_engine.dispose()
    finally:
        admin_query("postgresql", f"DROP ROLE IF EXISTS {role}")
    finish()


def test_metrics_tell_the_pools_apart() -> None:
    prepare("postgresql")
    assert engine("postgresql").metrics.labels["alias"] in ("default", "postgresql")
    assert engine("postgresql_small").metrics.labels == {"alias": "postgresql_small"}
    finish()


def test_a_time_zone_changed_by_a_previous_user_is_set_back() -> None:
    prepare("postgresql")
    first = session_id("postgresql")
    with connections["postgresql"].cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Asia/Tokyo'")
    connections["postgresql"].close()
    assert session_id("postgresql") == first  # the same physical connection, reused
    with connections["postgresql"].cursor() as cursor:
        cursor.execute("SHOW TIME ZONE")
        assert cursor.fetchone() == ("UTC",)  # USE_TZ = True: Django's connections use UTC
    finish()


def test_init_connection_state_called_by_hand_runs(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = connections[alias]
    connection.ensure_connection()
    django_class = type(connection).__mro__[2]
    runs: list[str] = []
    monkeypatch.setattr(django_class, "init_connection_state", lambda self: runs.append("x"))
    connection.init_connection_state()
    assert runs == ["x"]


def test_pool_timeout_survives_pickling() -> None:
    import pickle

    from dbpool.contrib.django import PoolTimeout

    error = PoolTimeout("timed out", connection_limit=2, pool_timeout=1.5, waited=1.6)
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, OperationalError) and isinstance(copy, PoolTimeoutError)
    assert (str(copy), copy.connection_limit, copy.pool_timeout, copy.waited) == (
        "timed out", 2, 1.5, 1.6,
    )  # fmt: skip


def test_pools_for_settings_no_longer_used_are_evicted(alias: str) -> None:
    from dbpool.contrib.django import pools

    held = wrapper_with(alias, OPTIONS={"connection_limit": 5})
    held.ensure_connection()  # in use: never evicted
    try:
        for limit in range(6, 9 + pools.MAX_POOLS_PER_DATABASE):  # settings keep changing
            wrapper = wrapper_with(alias, OPTIONS={"connection_limit": limit})
            wrapper.ensure_connection()
            wrapper.close()
        ours = engine(alias)
        engines = [e for e in pools.engines() if (e.dialect.name, e.url.database) == (
            ours.dialect.name, ours.url.database)]  # fmt: skip
        assert len(engines) <= pools.MAX_POOLS_PER_DATABASE
        assert held.dbpool_engine in engines
    finally:
        held.close()


def test_closing_inside_atomic_breaks_the_rest_of_the_block(alias: str) -> None:
    from django.db import Error

    from tests.django_support.models import Item

    with pytest.raises(Error), transaction.atomic(using=alias):
        Item.objects.using(alias).create(name="before close")
        connections[alias].close()  # returned to the pool, rolled back
        Item.objects.using(alias).create(name="after close")  # must not autocommit
    assert engine(alias).status().busy == 0
    assert items(alias) == []


def test_is_usable_after_the_connection_went_back(alias: str) -> None:
    connection = connections[alias]
    connection.ensure_connection()
    connection._close()
    assert connection.is_usable() is False
    connection.close()


@pytest.mark.parametrize("vendor", ["postgresql", "mysql"])
def test_socket_timeout_bounds_a_statement(vendor: str) -> None:
    prepare(vendor)
    wrapper = wrapper_with(vendor, OPTIONS={"socket_timeout": 0.5})
    sleep = "SELECT pg_sleep(6)" if vendor == "postgresql" else "SELECT SLEEP(6)"
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")  # well within the bound
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        with wrapper.cursor() as cursor:
            cursor.execute(sleep)
    assert time.monotonic() - started < 5  # cut off, not waited out
    if vendor == "postgresql":
        assert "socket_timeout=0.5" in str(caught.value)
    engine_ = wrapper.dbpool_engine
    opened = engine_.status().opened_total
    wrapper.close_if_unusable_or_obsolete()  # end of request: the spent one is discarded
    assert wrapper.connection is None
    assert engine_.status().busy == 0
    with wrapper.cursor() as cursor:  # a fresh connection serves the next request
        cursor.execute("SELECT 1")
    assert engine_.status().opened_total == opened + 1
    wrapper.close()
    finish()
