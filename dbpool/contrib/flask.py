"""Flask integration: one engine per app, one pooled connection per app context.

``db = DBPool(app)`` (or ``db = DBPool()`` and ``db.init_app(app)`` in an application
factory) makes the app's engine from ``app.config["DATABASE_URL"]`` (else the
``DATABASE_URL`` environment variable) and ``app.config["DBPOOL_SETTINGS"]`` (pool
settings and ``create_engine`` keywords), and keeps it in ``app.extensions["dbpool"]``.
The direct URL for ``engine.direct()`` comes from where the URL came from:
``app.config["DIRECT_URL"]``, or the ``DIRECT_URL`` environment variable along with
``DATABASE_URL``'s (``direct_url`` in ``DBPOOL_SETTINGS`` wins over both).

``db.connection()`` checks a connection out on first use in an app context (each request
has its own) and returns the same one until the context is torn down; teardown rolls back
whatever was not committed and returns it to the pool, after a failing view too.
``db.begin()`` is a transaction on that same connection, so a request never holds more
than one connection of the pool: with more server threads than ``connection_limit``,
requests that each held one connection while waiting for a second could block each
other until ``pool_timeout``.

The app also gets a ``flask dbpool`` command group: ``check`` (``dbpool check`` on the
app's URL and settings) and ``status`` (the pool status and metrics of the app's engine).
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import click
from flask import Flask, current_app, g, has_app_context
from flask.cli import AppGroup

from dbpool import cli
from dbpool.config import SETTINGS, did_you_mean
from dbpool.engine import ENGINE_KEYWORDS, Connection, Engine, create_engine
from dbpool.exc import ArgumentError, ConfigError

__all__ = ["DBPool"]

EXTENSION = "dbpool"  # the app.extensions key holding the app's Engine
_G_CONNECTION = "_dbpool_connection"  # the app context's connection, on flask.g
_KEYS = (*SETTINGS, *ENGINE_KEYWORDS)


class DBPool:
    """dbpool for Flask apps: ``DBPool(app)``, or ``DBPool()`` then ``init_app(app)``.

    One instance may serve several apps (application factories); each app gets its own
    engine, made by [`init_app`][dbpool.contrib.flask.DBPool.init_app] from the app's
    config and disposed when the process exits normally (or when the app is
    garbage-collected, whichever comes first). Needs ``pip install "dbpool[flask]"``;
    the [Flask guide](integrations/flask.md) has the whole story.

    The app's config:

    - ``DATABASE_URL``: the database URL (else the ``DATABASE_URL`` environment
      variable).
    - ``DBPOOL_SETTINGS``: a dict of pool settings and ``create_engine`` keywords, which
      override the URL's.
    - ``DIRECT_URL``: the direct URL for ``engine.direct()`` (else the environment's,
      when the URL came from the environment too).

    Args:
        app: The app to set up now; None to call ``init_app`` later.

    Raises:
        ConfigError: When the app has no database URL, or a bad URL or setting.

    Example:
        ```python
        from flask import Flask
        from dbpool import text
        from dbpool.contrib.flask import DBPool

        app = Flask(__name__)
        app.config["DATABASE_URL"] = "postgresql://app@db:5432/shop?connection_limit=8"
        db = DBPool(app)

        @app.get("/users/<int:id>")
        def user(id):
            row = db.connection().execute(
                text("SELECT name FROM users WHERE id = :id"), {"id": id}
            ).one()
            return {"name": row.name}
        ```
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Make ``app``'s engine (nothing is opened yet) and hook the extension into it.

        It also returns each app context's connection at teardown, adds the
        ``flask dbpool`` commands (``check``, ``status``) and puts ``db`` in
        ``flask shell``.

        Args:
            app: The Flask app.

        Raises:
            ConfigError: When the app has no database URL, or a bad URL or setting.
            RuntimeError: When dbpool is already set up on this app.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError(
                f"dbpool is already set up on Flask app {app.name!r}: call init_app() once "
                "per app (one DBPool instance can serve many apps)"
            )
        app.extensions[EXTENSION] = engine = _make_engine(app)
        # Dispose when the app is garbage-collected (tests making an app each) or, at the
        # latest, at interpreter exit, so the server sees sessions end rather than sockets
        # drop. Exit, not signals: a server's graceful shutdown (gunicorn on SIGTERM)
        # lets requests in flight finish before the process exits, and disposing on the
        # signal would fail those still queued for a connection.
        weakref.finalize(app, engine.dispose)
        app.teardown_appcontext(_return_connection)
        app.cli.add_command(dbpool_cli)
        app.shell_context_processor(lambda: {"db": self})

    @property
    def engine(self) -> Engine:
        """The current app's engine; needs an app context (a request, a ``flask``
        command, or ``with app.app_context():``).

        Raises:
            RuntimeError: Outside an app context (use
                [`get_engine(app)`][dbpool.contrib.flask.DBPool.get_engine] there), or
                when dbpool is not set up on the app.
        """
        if not has_app_context():
            raise RuntimeError(
                "DBPool.engine needs a Flask application context, as in a request or a "
                "`flask` command; elsewhere use `with app.app_context():` or "
                "db.get_engine(app)"
            )
        return self.get_engine(current_app)

    def get_engine(self, app: Flask | None = None) -> Engine:
        """An app's engine; no app context needed when ``app`` is given.

        Args:
            app: The app; None for the current app.

        Returns:
            The engine ``init_app`` made for the app.

        Raises:
            RuntimeError: When dbpool is not set up on the app, or ``app`` is None outside
                an app context.
        """
        if app is None:
            return self.engine
        engine = app.extensions.get(EXTENSION)
        if engine is None:
            raise RuntimeError(
                f"dbpool is not set up on Flask app {app.name!r}: call db.init_app(app) "
                "(or DBPool(app)) when creating the app"
            )
        return engine  # type: ignore[no-any-return]

    def connection(self) -> Connection:
        """The app context's connection: checked out on first use, the same one for the
        rest of the context (a request), rolled back and returned at its teardown.

        Commit as you go (``conn.commit()``): whatever is not committed when the context
        ends is rolled back, also when the view raised.

        Returns:
            The context's [`Connection`][dbpool.Connection].

        Raises:
            RuntimeError: Outside an app context.
            PoolTimeoutError: When no connection became free within ``pool_timeout``.
        """
        engine = self.engine
        conn: Connection | None = g.get(_G_CONNECTION)
        if conn is None or conn.closed:  # a view may close it early; then a fresh one
            conn = engine.connect()
            setattr(g, _G_CONNECTION, conn)
        return conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction on the app context's connection: committed when the block ends,
        rolled back if it raises.

        It starts a transaction of its own on
        [`connection()`][dbpool.contrib.flask.DBPool.connection], so a request never
        holds two connections; none may be open on it: commit or roll back earlier
        statements first, or run them inside the block.

        Yields:
            The context's [`Connection`][dbpool.Connection], in the transaction.

        Raises:
            ArgumentError: When a transaction is already open on the connection.

        Example:
            ```python
            with db.begin() as conn:
                conn.execute(text("UPDATE stock SET n = n - 1 WHERE id = :id"), {"id": 7})
            ```
        """
        conn = self.connection()
        if conn.in_transaction():
            raise ArgumentError(
                "db.begin(): the request's connection already has a transaction open "
                "(statements run on db.connection() begin one); call "
                "db.connection().commit() or .rollback() first, or run those statements "
                "inside db.begin()"
            )
        with conn.begin():
            yield conn

    def __repr__(self) -> str:
        if has_app_context() and EXTENSION in current_app.extensions:
            return f"<DBPool {current_app.extensions[EXTENSION].url}>"
        return "<DBPool>"


def _make_engine(app: Flask) -> Engine:
    url = app.config.get("DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError(
            f"No database URL for Flask app {app.name!r}: set app.config['DATABASE_URL'] "
            "or the DATABASE_URL environment variable, e.g. sqlite:///app.db or "
            "postgresql://user@localhost:5432/app?connection_limit=4"
        )
    settings = _settings(app)
    if settings.get("direct_url") is None:
        # A pair from one place, as create_engine() reads DATABASE_URL and DIRECT_URL: a
        # DIRECT_URL in the environment never attaches itself to a URL from app.config.
        source = app.config if app.config.get("DATABASE_URL") else os.environ
        settings["direct_url"] = source.get("DIRECT_URL") or None
    try:
        return create_engine(url, **settings)
    except ConfigError as exc:
        raise ConfigError(f"Flask app {app.name!r}: {exc}") from exc


def _settings(app: Flask) -> dict[str, Any]:
    settings = app.config.get("DBPOOL_SETTINGS") or {}
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"app.config['DBPOOL_SETTINGS'] of Flask app {app.name!r} must be a dict of "
            f"pool settings and create_engine keywords, got {type(settings).__name__}"
        )
    for name in settings:
        if name not in _KEYS:
            raise ConfigError(
                f"app.config['DBPOOL_SETTINGS'] of Flask app {app.name!r} has an unknown "
                f"key {name!r}; it takes the pool settings ({', '.join(SETTINGS)}) and the "
                f"create_engine keywords ({', '.join(ENGINE_KEYWORDS)})."
                + did_you_mean(str(name), _KEYS)
            )
    return dict(settings)


def _return_connection(exc: BaseException | None) -> None:
    conn: Connection | None = g.pop(_G_CONNECTION, None)
    if conn is not None:
        conn.close()  # rolls back what is uncommitted; a connection that cannot is discarded


# -- flask dbpool ... --------------------------------------------------------------------

dbpool_cli = AppGroup(
    "dbpool", help="Check the app's database and show its connection pool (dbpool)."
)


@dbpool_cli.command("check")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads sharing the pool.")  # fmt: skip
@click.option("--checkouts", type=click.IntRange(min=1), default=25, show_default=True,
              help="Checkouts per thread.")  # fmt: skip
@click.option("--query", default="SELECT 1", show_default=True, metavar="SQL",
              help="The statement each checkout runs.")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True, help="Also show dbpool's log lines on stderr.")
def check_command(threads: int, checkouts: int, query: str, verbose: bool) -> None:
    """Open the app's pool, run a short concurrent probe, print its status.

    As `dbpool check`, on the app's DATABASE_URL and DBPOOL_SETTINGS. Exit status 2 for a
    bad setting, 1 for any other failure; the password is never shown.
    """
    app = current_app
    url = app.extensions[EXTENSION].url  # for hiding the password in error messages
    try:
        with cli._library_logging(verbose=verbose):
            # An engine made as init_app made the app's, with a pool of its own: the
            # probe's connections and counts are not mixed with the app's.
            _check(app, _make_engine(app), threads=threads, checkouts=checkouts, sql=query)
    except ConfigError as exc:
        cli._error(exc, url)
        raise click.exceptions.Exit(2) from None
    except Exception as exc:  # one line, never a traceback, as `dbpool check`
        cli._error(exc, url)
        raise click.exceptions.Exit(1) from None


def _check(app: Flask, engine: Engine, *, threads: int, checkouts: int, sql: str) -> None:
    """``dbpool check`` on an engine made from the app's config: its settings come from
    the URL and from DBPOOL_SETTINGS, which the plain command cannot see."""
    origin = "app.config" if app.config.get("DATABASE_URL") else "the environment"
    overridden = app.config.get("DBPOOL_SETTINGS") or {}
    direct = "DBPOOL_SETTINGS" if overridden.get("direct_url") else f"DIRECT_URL from {origin}"
    cli.check_engine(
        engine,
        f"{engine.url} (Flask app {app.name!r}, DATABASE_URL from {origin})",
        threads=threads,
        checkouts=checkouts,
        sql=sql,
        sources={name: "DBPOOL_SETTINGS" for name in overridden},
        echo=click.echo,
        direct_origin=direct,
    )


@dbpool_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def status_command(as_json: bool) -> None:
    """Show the pool status and metrics of the app's engine in this process
    (with --json: the status and engine.metrics.json(), bucket counts included).

    Each process has its own pool: a command sees its own, not those of running servers
    (serve engine.metrics from a view for those).
    """
    app = current_app
    engine: Engine = app.extensions[EXTENSION]
    status = asdict(engine.status())
    metrics = engine.metrics.json()
    if as_json:
        document = {"app": app.name, "url": str(engine.url), "status": status,
                    "metrics": metrics}  # fmt: skip
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"pool of Flask app {app.name!r}: {engine.url} ({engine.dialect.describe()})")
    click.echo(cli._table([(name, str(value)) for name, value in status.items()], indent="  "))
    click.echo("metrics:")
    rows = [(m["key"], str(m["value"])) for m in (*metrics["counters"], *metrics["gauges"])]
    rows += [
        (m["key"], f"count={m['value']['count']} sum={m['value']['sum']:.6f} s")
        for m in metrics["histograms"]
    ]
    click.echo(cli._table(rows, indent="  "))
