"""Connection budgets: how many connections the server can give, and to each instance.

Many instances of one application share one database server. The server refuses
connections past its limit, so the sum of every instance's ``connection_limit`` must
stay below what the server has left once everybody else (other applications, admin
sessions, migrations) is counted. The dialects ask the server (``server_connections``)
and return a ``ServerUsage``; this module does the arithmetic for ``dbpool budget``
(``plan()``, ``probe()``) and for the warning at pool start (``add_startup_check()``).

The seeds' rule for the size of each instance's pool: the default size (physical cores
* 2 + 1) divided by the number of instances, at least 1, so that N instances together
open about as many connections as one would by default. Here it is also capped at the
instance's share of what the server has left.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dbpool.exc import ConfigError

if TYPE_CHECKING:
    from dbpool.dialects.base import Dialect
    from dbpool.events import Events
    from dbpool.url import URL

logger = logging.getLogger("dbpool")

# Headroom kept free for admin sessions and migrations: a tenth of the limit, at least 3.
HEADROOM_FRACTION = 0.10
HEADROOM_MINIMUM = 3


@dataclass(frozen=True)
class Holder:
    """Connections one user holds under one application name (None: none is known)."""

    user: str
    application_name: str | None
    connections: int


@dataclass(frozen=True)
class ServerUsage:
    """The server's connection limits and who holds connections, not counting the
    connection that asked."""

    max_connections: int  # the server's setting
    reserved: int  # slots ordinary users cannot have (PostgreSQL's reserved connections)
    reserved_by: str  # which settings reserve them, for people ("" when none)
    user: str  # the user the probe connected as
    # A limit on this user's connections (PostgreSQL's role CONNECTION LIMIT, MySQL's
    # max_user_connections), None when there is none.
    user_limit: int | None
    user_limit_by: str
    database_limit: int | None  # PostgreSQL's CONNECTION LIMIT on the database
    holders: tuple[Holder, ...]
    # Connections of other users the probe could not see one by one (MySQL without the
    # PROCESS privilege shows only your own), counted from the server's total.
    hidden: int = 0
    others_same_database: int = 0  # of the holders, those on this database (PostgreSQL)
    # Whether application names are known (MySQL needs performance_schema for them).
    names_visible: bool = True
    dialect_name: str = ""  # "postgresql" or "mysql", for the advice

    @property
    def limit(self) -> int:
        """Connections the server gives ordinary users: max_connections - reserved."""
        return max(0, self.max_connections - self.reserved)

    @property
    def others(self) -> int:
        return sum(holder.connections for holder in self.holders) + self.hidden

    @property
    def others_same_user(self) -> int:
        return sum(h.connections for h in self.holders if h.user == self.user)

    def available(self, headroom: int = 0) -> int:
        """What the server can still give this application: its limit minus what others
        hold (minus ``headroom``), and no more than the user's or the database's own
        limit leaves."""
        free = self.limit - self.others - headroom
        if self.user_limit is not None:
            free = min(free, self.user_limit - self.others_same_user)
        if self.database_limit is not None:
            free = min(free, self.database_limit - self.others_same_database)
        return max(0, free)

    def binding_limit(self, headroom: int = 0) -> str:
        """Which limit ``available()`` comes from: "server", "user" or "database"."""
        candidates = [("server", self.limit - self.others - headroom)]
        if self.user_limit is not None:
            candidates.append(("user", self.user_limit - self.others_same_user))
        if self.database_limit is not None:
            candidates.append(("database", self.database_limit - self.others_same_database))
        return min(candidates, key=lambda item: item[1])[0]


def default_headroom(limit: int) -> int:
    """Connections kept free by default: 10 % of the server's limit, at least 3."""
    return max(HEADROOM_MINIMUM, math.ceil(limit * HEADROOM_FRACTION))


def parse_headroom(value: str) -> float | int:
    """Parse ``--headroom``.

    Args:
        value: A number of connections (``5``) or a share of the limit (``15%``).

    Returns:
        The connections (``int``), or the share as a fraction below 1 (``float``).

    Raises:
        ConfigError: For anything else.
    """
    text = value.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if 0 <= share < 100:
                return share / 100
        elif text.isdigit():
            return int(text)
    except ValueError:
        pass
    raise ConfigError(
        f"headroom must be a number of connections >= 0 or a percentage below 100% "
        f"(e.g. 5 or 10%), got {value!r}"
    )


@dataclass(frozen=True)
class Plan:
    """``dbpool budget``'s answer for ``instances`` instances of one application."""

    instances: int
    limit: int  # the server's limit for ordinary users
    others: int  # connections others hold now
    headroom: int  # kept free for admin sessions and migrations
    budget: int  # what is left for this application, all instances together
    binding: str  # which limit the budget comes from: "server", "user" or "database"
    share: int  # budget // instances
    default_limit: int  # the default connection_limit (the seeds' rule starts from it)
    seeds: int  # default_limit // instances, at least 1
    recommended: int  # the seeds' rule capped at the share, at least 1
    connection_limit: int  # the URL's current setting (explicit or the default)
    explicit: bool  # whether the URL (or a keyword) gives connection_limit
    total: int  # connection_limit * instances
    fits: bool  # total <= budget
    usage: ServerUsage = field(repr=False)


def plan(
    usage: ServerUsage,
    *,
    instances: int,
    connection_limit: int,
    explicit: bool,
    default_limit: int,
    headroom: float | int | None = None,
) -> Plan:
    """The arithmetic of ``dbpool budget``.

    Args:
        usage: The server's limits and who holds connections.
        instances: Instances of the application, a pool each.
        connection_limit: The URL's ``connection_limit`` (or the default).
        explicit: Whether the URL gives ``connection_limit``.
        default_limit: The default ``connection_limit``, where the seeds' rule starts.
        headroom: Connections kept free (``int``), a share of the limit (``float`` below
            1), or None for the default (10 % of the limit, at least 3).

    Returns:
        The budget, the share per instance, the recommendation and whether it fits.

    Raises:
        ConfigError: When ``instances`` is below 1.
    """
    if instances < 1:
        raise ConfigError(f"instances must be an integer >= 1, got {instances!r}")
    limit = usage.limit
    if headroom is None:
        kept = default_headroom(limit)
    elif isinstance(headroom, float):
        kept = math.ceil(limit * headroom)
    else:
        kept = headroom
    budget = usage.available(kept)
    share = budget // instances
    seeds = max(1, default_limit // instances)
    total = connection_limit * instances
    return Plan(
        instances=instances,
        limit=limit,
        others=usage.others,
        headroom=kept,
        budget=budget,
        binding=usage.binding_limit(kept),
        share=share,
        default_limit=default_limit,
        seeds=seeds,
        recommended=max(1, min(seeds, share)),
        connection_limit=connection_limit,
        explicit=explicit,
        total=total,
        fits=total <= budget,
        usage=usage,
    )


def probe(
    url: URL,
    *,
    instances: int,
    headroom: float | int | None = None,
    on_connect: Callable[[str], None] | None = None,
) -> Plan:
    """Ask the server for its connection budget: ``dbpool budget``.

    Connects once with the URL's dialect (no pool), asks the server, closes, and plans.

    Args:
        url: The database URL.
        instances: Instances of the application, a pool each.
        headroom: As for ``plan``.
        on_connect: Called with where it connects, just before (a progress line).

    Returns:
        The plan.

    Raises:
        ConfigError: For a database without a server budget (SQLite), or a URL through
            PgBouncer.
        ConnectError: When the server cannot be reached.
    """
    from dbpool.config import default_connection_limit
    from dbpool.engine import create_engine

    engine = create_engine(url, budget_check=False)
    dialect = engine.dialect
    if not dialect.supports_budget:
        raise ConfigError(
            f"{dialect.name} has no server connection limit to budget: dbpool budget "
            "needs a PostgreSQL or MySQL/MariaDB URL"
        )
    if engine.config.pgbouncer:
        raise ConfigError(
            "the URL has pgbouncer=true: its connections go to PgBouncer, which is limited "
            "by its max_client_conn, not by the server; run dbpool budget on the direct URL "
            "to see the server's budget for PgBouncer's pool and everything else"
        )
    if on_connect is not None:
        on_connect(f"{dialect.name} at {dialect.describe()}")
    conn = dialect.connect()
    try:
        usage = dialect.server_connections(conn)
    finally:
        dialect.close(conn)
        dialect.release_resources()
    default_limit = dialect.default_connection_limit or default_connection_limit()
    return plan(
        usage,
        instances=instances,
        connection_limit=engine.config.connection_limit,
        explicit="connection_limit" in url.query,
        default_limit=default_limit,
        headroom=headroom,
    )


def as_json(result: Plan, url: URL) -> dict[str, Any]:
    """The plan as one JSON document: ``dbpool budget --json``.

    Args:
        result: The plan.
        url: The URL it was made for; shown with the password hidden.

    Returns:
        Plain data for ``json.dumps``.
    """
    usage = result.usage
    return {
        "url": str(url),
        "database": usage.dialect_name,
        "server": {
            "max_connections": usage.max_connections,
            "reserved": usage.reserved,
            "reserved_by": usage.reserved_by,
            "limit": usage.limit,
            "user": usage.user,
            "user_limit": usage.user_limit,
            "database_limit": usage.database_limit,
        },
        "holders": [asdict(holder) for holder in usage.holders],
        "hidden": usage.hidden,
        "application_names_visible": usage.names_visible,
        "others": result.others,
        "headroom": result.headroom,
        "budget": result.budget,
        "binding_limit": result.binding,
        "instances": result.instances,
        "share_per_instance": result.share,
        "default_connection_limit": result.default_limit,
        "seeds_rule": result.seeds,
        "recommended_connection_limit": result.recommended,
        "connection_limit": result.connection_limit,
        "connection_limit_explicit": result.explicit,
        "total": result.total,
        "fits": result.fits,
    }


# -- the check at pool start ---------------------------------------------------------------


def add_startup_check(events: Events, dialect: Dialect, connection_limit: int) -> None:
    """Check the budget on the pool's first new connection, once per engine."""
    events.on("connect", _StartupCheck(events, dialect, connection_limit))


class _StartupCheck:
    """A one-shot "connect" listener: it removes itself before it asks, so later
    connections (and the hot path) never pay for it."""

    def __init__(self, events: Events, dialect: Dialect, connection_limit: int) -> None:
        self._events = events
        self._dialect = dialect
        self._limit = connection_limit
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, conn: Any) -> None:
        with self._lock:  # two connections may open at once: one of them asks
            if self._done:
                return
            self._done = True
        self._events.remove("connect", self)
        dialect = self._dialect
        try:
            usage = dialect.server_connections(conn)
        except Exception as exc:  # never fails the checkout: the check is advice
            logger.debug("connection budget check skipped: %s", exc)
            return
        dialect.server_limit = usage.limit
        available = usage.available()
        if self._limit > available:
            logger.warning(startup_warning(dialect, usage, self._limit, available))


def startup_warning(dialect: Dialect, usage: ServerUsage, limit: int, available: int) -> str:
    binding = usage.binding_limit()
    if binding == "user":
        whose = (
            f"user {usage.user}'s limit {usage.user_limit} ({usage.user_limit_by}) minus "
            f"{usage.others_same_user} held by {usage.user}"
        )
    elif binding == "database":
        whose = (
            f"the database's CONNECTION LIMIT {usage.database_limit} minus "
            f"{usage.others_same_database} held on it"
        )
    else:
        total = f" = {usage.limit}" if usage.reserved else ""
        whose = (
            f"the server's limit, {_limit_words(usage)}{total}, minus {usage.others} held "
            "by others"
        )
    return (
        f"connection_limit={limit} is more than {dialect.name} at {dialect.describe()} can "
        f"still give: {available} ({whose}). Under load this pool will get too many "
        "connections errors (P2037). Lower connection_limit, run fewer instances, or put "
        f"{_pooler(usage)} in front of the database; `dbpool budget URL --instances N` "
        "shows the numbers (budget_check=false turns this check off)."
    )


def _limit_words(usage: ServerUsage) -> str:
    if usage.reserved:
        return f"max_connections {usage.max_connections} - {usage.reserved} {usage.reserved_by}"
    return f"max_connections {usage.max_connections}"


# -- the table -------------------------------------------------------------------------------


def report(result: Plan, table: Callable[..., str]) -> str:
    """The plan as text, with ``table`` (cli._table) laying out the columns."""
    usage = result.usage
    lines = []
    if usage.holders or usage.hidden:
        rows = [
            (h.user, _name(h.application_name, usage.names_visible), str(h.connections))
            for h in sorted(usage.holders, key=lambda h: (-h.connections, h.user,
                                                           h.application_name or ""))
        ]  # fmt: skip
        if usage.hidden:
            rows.append(("(other users)", "(needs the PROCESS privilege)", str(usage.hidden)))
        lines.append("connections held now, not counting this probe's own:")
        lines.append(table(rows, header=("user", "application_name", "connections"),
                           indent="  "))  # fmt: skip
        if not usage.names_visible:
            lines.append("  (application names are shown with performance_schema=ON)")
    else:
        lines.append("connections held now: none, besides this probe's own")
    lines.append("")
    rows = [
        ("server limit", str(result.limit), _limit_words(usage)),
        ("in use by others", str(result.others), "listed above" if result.others else ""),
        ("headroom", str(result.headroom), "kept free for admin and migrations (--headroom)"),
        ("budget for this application", str(result.budget), _budget_words(result)),
        ("instances", str(result.instances), ""),
        ("share per instance", str(result.share), f"{result.budget} // {result.instances}"),
        ("seeds' rule", str(result.seeds),
         f"default connection_limit {result.default_limit} // {result.instances}, at least 1"),
        ("recommended connection_limit", str(result.recommended),
         "the seeds' rule, at most the share"),
    ]  # fmt: skip
    lines.append(table(rows, header=("", "connections", "")))
    lines.append("")
    source = "" if result.explicit else " (the default)"
    verdict = (
        f"<= budget {result.budget}: fits"
        if result.fits
        else f"> budget {result.budget}: does NOT fit"
    )
    lines.append(
        f"connection_limit={result.connection_limit}{source} x {result.instances} "
        f"instances = {result.total} {verdict}"
    )
    pooler = _pooler(usage)
    if result.share == 0:
        lines.append(
            "The server has not even one connection to spare per instance: put "
            f"{pooler} in front of it, or free connections elsewhere."
        )
    elif not result.fits:
        lines.append(
            f"Set connection_limit={result.recommended} in the URL, run fewer instances, "
            f"or put {pooler} in front of the database."
        )
    return "\n".join(lines)


def _budget_words(result: Plan) -> str:
    usage = result.usage
    if result.binding == "user":
        return (
            f"user {usage.user}'s limit {usage.user_limit} ({usage.user_limit_by}) "
            f"- {usage.others_same_user} held by {usage.user}"
        )
    if result.binding == "database":
        return (
            f"the database's CONNECTION LIMIT {usage.database_limit} "
            f"- {usage.others_same_database} held on it"
        )
    return f"{result.limit} - {result.others} - {result.headroom}"


def _pooler(usage: ServerUsage) -> str:
    if usage.dialect_name == "postgresql":
        return "PgBouncer"
    return "a pooling proxy (such as ProxySQL)"


def _name(name: str | None, visible: bool) -> str:
    if not visible:
        return "(unknown)"
    return name if name else "(none)"
