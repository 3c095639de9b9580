"""What the three dbpool backends share: obtaining and releasing connections through a pool.

Django's ``connect()`` stays as it is; only two of its steps change. Opening
(``get_new_connection``) checks a connection out of the process-wide pool for these
settings, and closing (``_close``) returns it, clean: no open transaction, autocommit
on. Django's per-connection setup (``init_connection_state``: time zone, role,
isolation level, ``SQL_AUTO_IS_NULL``) runs in the pool's creator, once per physical
connection, on a private wrapper that is never pooled itself.

Connections for Django's "no database" alias (creating and dropping test databases)
and for in-memory SQLite databases are opened directly, as by the stock backends: the
first would pin a pool to the server's maintenance database, the second lives only as
long as its connection.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper
from django.db.utils import ProgrammingError

from dbpool.config import EngineConfig
from dbpool.contrib.django import pools
from dbpool.contrib.django.errors import PoolDisposed, PoolTimeout
from dbpool.contrib.django.options import (
    POOL_SETTINGS,
    improperly_configured,
    resolve,
    split_pool_settings,
)
from dbpool.engine import Engine, create_engine
from dbpool.exc import ConfigError, PoolDisposedError, PoolTimeoutError, ResourceClosedError
from dbpool.proxy import PooledConnection
from dbpool.timeouts import Timeouts
from dbpool.url import URL

logger = logging.getLogger("dbpool.django")

if TYPE_CHECKING:
    _Base = BaseDatabaseWrapper
else:
    _Base = object


class PooledDatabaseWrapper(_Base):
    """Mixed into a subclass of Django's own ``DatabaseWrapper`` (it must come first)."""

    # The dbpool dialect whose ping and reset the pool uses.
    dbpool_dialect: ClassVar[str] = ""

    # Django's, missing from django-stubs.
    health_check_enabled: bool
    health_check_done: bool

    _dbpool_proxy: PooledConnection | None = None
    _dbpool_discard = False  # the checked-out connection must not go back to the pool
    _dbpool_direct = False  # a private wrapper that opens physical connections
    _dbpool_set_up = False  # the connection just checked out needs no setup
    _dbpool_timeouts: Timeouts | None = None  # the engine's, on a creator's wrapper
    _dbpool_settings: dict[str, Any]
    # (OPTIONS, CONN_HEALTH_CHECKS, pool settings, resolved config) of the last checkout.
    _dbpool_resolved: tuple[dict[str, Any], bool, dict[str, Any], EngineConfig] | None = None
    # (pools generation, connect parameters, setup key, pool settings, engine).
    _dbpool_engine_cache: (
        tuple[int, dict[str, Any], tuple[Any, ...], dict[str, Any], weakref.ref[Engine]] | None
    ) = None

    def __init__(self, settings_dict: dict[str, Any], alias: str = DEFAULT_DB_ALIAS) -> None:
        super().__init__(settings_dict, alias)
        # Checked once, on the settings the wrapper is made from (DATABASES), as Django's
        # own pool does. Code that later changes CONN_MAX_AGE on a live wrapper (Django's
        # own test suite does) gets Django's behaviour: the connection stays checked out
        # until Django closes it.
        max_age = settings_dict.get("CONN_MAX_AGE", 0)
        if max_age != 0 and self.dbpool_pooled():
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}] sets CONN_MAX_AGE = {max_age!r}, but the dbpool "
                "backend is a connection pool: connections go back to the pool when Django "
                "closes them at the end of each request, and persistent connections would "
                "each hold a pool slot for the life of their thread. Set CONN_MAX_AGE to 0 "
                "(the default); to keep idle connections open longer, raise the pool "
                "setting max_idle_connection_lifetime in OPTIONS."
            )

    # -- hooks for each backend ---------------------------------------------------------

    def dbpool_pooled(self) -> bool:
        """Whether this wrapper's connections come from a pool."""
        return not self._dbpool_direct and self.alias != NO_DB_ALIAS

    def _dbpool_url(self, conn_params: Mapping[str, Any]) -> URL:
        """The URL of the dbpool dialect (used for ping, reset and messages only)."""
        raise NotImplementedError

    def _dbpool_driver_params(self, params: dict[str, Any], config: EngineConfig) -> None:
        """Turn the pool settings the driver must know (``connect_timeout``...) into
        driver parameters, in place."""

    def _dbpool_setup_key(self) -> tuple[Any, ...]:
        """Inputs of the per-connection setup that are not in the connect parameters."""
        return ()

    def _dbpool_on_checkout(self, connection: Any) -> None:
        """Per-checkout state: the wrapper's, and session state a previous user may have
        changed where that can be checked without a round trip."""

    def _dbpool_restore(self, connection: Any) -> None:
        """Make a connection clean for the pool: no open transaction, autocommit on."""
        raise NotImplementedError

    def _dbpool_open_direct(self, conn_params: dict[str, Any]) -> Any:
        """Open a physical connection as Django's own backend does."""
        return super().get_new_connection(conn_params)

    # -- connection parameters ----------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        # Django asks at every checkout: the pool settings are parsed again only when
        # OPTIONS changed (a dict comparison costs next to nothing).
        options = self.settings_dict["OPTIONS"]
        health_checks = self.settings_dict["CONN_HEALTH_CHECKS"]
        resolved = self._dbpool_resolved
        if resolved is not None and resolved[0] == options and resolved[1] == health_checks:
            settings, config = resolved[2], resolved[3]
        else:
            try:
                settings = split_pool_settings(options, alias=self.alias)
                if "pre_ping" not in settings and health_checks:
                    settings["pre_ping"] = 0  # Django checks every reuse; so does the pool
                config = resolve(settings, self._dbpool_default_limit())
            except ConfigError as exc:
                raise improperly_configured(exc) from exc
            self._dbpool_resolved = (dict(options), health_checks, settings, config)
        params: dict[str, Any] = super().get_connection_params()
        for name in POOL_SETTINGS:
            if name in options:
                params.pop(name, None)
        self._dbpool_settings = settings
        self._dbpool_driver_params(params, config)
        return params

    def _dbpool_default_limit(self) -> int | None:
        from dbpool import dialects

        return dialects.load(self.dbpool_dialect).default_connection_limit

    # -- opening and closing ------------------------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self.dbpool_pooled():
            return self._dbpool_open_direct(conn_params)
        engine = self._dbpool_engine(conn_params)
        try:
            proxy = engine.pool.connect()
        except PoolTimeoutError as exc:
            raise PoolTimeout(
                str(exc),
                connection_limit=exc.connection_limit,
                pool_timeout=exc.pool_timeout,
                waited=exc.waited,
            ) from exc
        except PoolDisposedError as exc:
            raise PoolDisposed(str(exc)) from exc
        connection = proxy.driver_connection
        try:
            self._dbpool_on_checkout(connection)
        except BaseException:
            proxy.invalidate()
            raise
        self._dbpool_proxy = proxy
        self._dbpool_discard = False
        self._dbpool_set_up = True
        return connection

    def connect(self) -> None:
        # Django 5.0+ has this guard in ensure_connection(); 4.2 needs it too, because
        # closing returns the connection to the pool (Django 4.2 kept the dead one, so
        # the next query failed). Without it the rest of an atomic block whose connection
        # was closed would run on a fresh connection, in autocommit. It sits here, before
        # connect() resets the atomic state, so that code patching ensure_connection()
        # (Django's own test suite does) still sees Django's method.
        if self.in_atomic_block and self.closed_in_transaction:
            raise ProgrammingError("Cannot open a new connection in an atomic block.")
        super().connect()

    def is_usable(self) -> bool:
        # After _close() the connection is back in the pool (Django 4.2's PostgreSQL
        # backend does not expect None here).
        return self.connection is not None and bool(super().is_usable())

    def init_connection_state(self) -> None:
        # Skipped once, in the connect() that checked the connection out: the pool's
        # creator set it up when it was opened. Called again (by hand), it runs.
        if self._dbpool_set_up:
            self._dbpool_set_up = False
            return
        super().init_connection_state()

    # Django's two health checks, as in Django 4.2 and 5.2, except that a connection found
    # unusable leaves the pool instead of going back to wait there for its next user.

    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        if not self.is_usable():
            self._dbpool_discard = True
            self.close()
        self.health_check_done = True

    def close_if_unusable_or_obsolete(self) -> None:
        if self.connection is not None:
            self.health_check_done = False
            if self.get_autocommit() != self.settings_dict["AUTOCOMMIT"]:
                self.close()
                return
            if self.errors_occurred:
                if self.is_usable():
                    self.errors_occurred = False
                    self.health_check_done = True
                else:
                    self._dbpool_discard = True
                    self.close()
                    return
            if self.close_at is not None and time.monotonic() >= self.close_at:
                self.close()
                return

    def _close(self) -> None:
        proxy = self._dbpool_proxy
        if proxy is None:
            super()._close()  # type: ignore[misc]
            return
        self._dbpool_proxy = None
        connection, self.connection = self.connection, None
        try:
            proxy.driver_connection  # noqa: B018
        except ResourceClosedError:
            # Checked out by the parent before a fork (a test runner worker, a preloaded
            # server): its socket is the parent's, so not a byte is sent on it.
            proxy.close()
            return
        discard = self._dbpool_discard
        if not discard:
            try:
                self._dbpool_restore(connection)
            except Exception:
                logger.debug("a returned connection could not be reset; discarding it",
                             exc_info=True)  # fmt: skip
                discard = True
        if discard:
            proxy.invalidate()
        else:
            proxy.close()

    # -- the pool -----------------------------------------------------------------------

    @property
    def dbpool_engine(self) -> Engine:
        """The dbpool engine (and pool) that this alias's current settings check out of;
        ``.status()`` and ``.metrics`` describe it."""
        if not self.dbpool_pooled():
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}] has no pool: connections to an in-memory SQLite "
                "database (and Django's internal no-database connections) are not pooled"
            )
        return self._dbpool_engine(self.get_connection_params())

    def _dbpool_engine(self, conn_params: Mapping[str, Any]) -> Engine:
        settings = self._dbpool_settings
        setup = self._dbpool_setup_key()
        generation = pools.generation()
        cached = self._dbpool_engine_cache
        if (
            cached is not None
            and cached[0] == generation
            and cached[1] == conn_params
            and cached[2] == setup
            and cached[3] is settings
        ):
            engine = cached[4]()
            if engine is not None:
                return engine
        key = (
            type(self).__module__,
            pools.freeze(conn_params),
            pools.freeze(settings),
            pools.freeze(setup),
        )
        engine = pools.engine_for(key, self._dbpool_database(), self._dbpool_server(), partial(
            self._dbpool_make_engine, conn_params, settings))  # fmt: skip
        # Weakly: a pool evicted from the registry must not live on in idle wrappers.
        self._dbpool_engine_cache = (
            generation, dict(conn_params), setup, settings, weakref.ref(engine),
        )  # fmt: skip
        return engine

    def _dbpool_database(self) -> tuple[str, str]:
        return (self.vendor, str(self.settings_dict["NAME"]))

    def _dbpool_server(self) -> tuple[str, ...]:
        settings = self.settings_dict
        return (self.vendor, str(settings["HOST"]), str(settings["PORT"]), str(settings["NAME"]))

    def _dbpool_make_engine(
        self, conn_params: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> Engine:
        # A snapshot: the test runner later changes NAME in place, which makes a new key.
        snapshot = {
            **self.settings_dict,
            "OPTIONS": dict(self.settings_dict["OPTIONS"]),
            "CONN_MAX_AGE": 0,  # the creator's wrapper keeps nothing
        }
        # The creator needs the engine's timeouts; it must not hold the engine itself (a
        # cycle through the pool would keep an evicted engine alive until the next GC).
        timeouts: list[Timeouts] = []
        creator: Callable[[], Any] = partial(
            _open_physical, type(self), snapshot, self.alias, timeouts
        )
        try:
            engine = create_engine(
                self._dbpool_url(conn_params),
                creator=creator,
                # Tells the pools apart in metrics; aliases with the same settings share one.
                metrics_labels={"alias": self.alias},
                **settings,
            )
        except ConfigError as exc:
            raise improperly_configured(exc) from exc
        timeouts.append(engine.dialect.timeouts)
        return engine

    def close_pool(self) -> None:
        """Dispose of every pool on this alias's database (Django 5.1+ calls this before
        cloning or dropping a test database, and when the time zone setting changes)."""
        if self.dbpool_pooled():
            pools.dispose_database(*self._dbpool_database())
        django_close_pool = getattr(super(), "close_pool", None)
        if django_close_pool is not None:  # Django 5.1+ PostgreSQL: its own pool, if any
            django_close_pool()


def _open_physical(
    wrapper_class: type[PooledDatabaseWrapper],
    settings_dict: dict[str, Any],
    alias: str,
    timeouts: list[Timeouts],
) -> Any:
    """The pool's creator: open one connection and run Django's setup on it, once.

    A private wrapper does it, so nothing of the checking-out wrapper's state is touched
    and the setup runs exactly as Django runs it on a new connection (minus the
    ``connection_created`` signal, which Django sends at every checkout).
    """
    wrapper = wrapper_class(settings_dict, alias)
    wrapper._dbpool_direct = True
    wrapper._dbpool_timeouts = timeouts[0] if timeouts else None
    connection = wrapper.get_new_connection(wrapper.get_connection_params())
    wrapper.connection = connection
    try:
        wrapper.set_autocommit(True)
        wrapper.init_connection_state()
    except BaseException:
        connection.close()
        raise
    finally:
        wrapper.connection = None
    return connection
