"""A serverless function (AWS Lambda's ``handler(event, context)``) that counts page views.

Prisma's advice for functions, in dbpool:

* The engine is made at module level, outside the handler. The platform imports this
  module once per function instance (the cold start) and then calls ``handler`` for
  every invocation that instance serves, so all of them share the engine and its open
  connection.
* ``connection_limit=1``: an instance serves one invocation at a time, so one connection
  is all it can use, and the database sees at most one connection per instance.
* The handler does not dispose the engine: the next invocation would pay for a new
  connection. ``pre_ping`` (on by default) replaces a connection that went stale while
  the instance was frozen.
* ``pool_timeout`` is well below the function's own timeout, so a stuck checkout ends as
  a ``PoolTimeoutError`` the handler reports, not as a killed invocation.

Create the table once at deploy time (``python serverless_handler.py migrate``), not in
the handler. ``python serverless_handler.py`` runs a few local invocations.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import dbpool
from dbpool import text

logger = logging.getLogger(__name__)

# Module level: once per instance. Reads DATABASE_URL (with PgBouncer in front:
# postgresql://...:6432/app?pgbouncer=true).
engine = dbpool.create_engine(connection_limit=1, pool_timeout=5, connect_timeout=5)


def migrate() -> None:
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE IF NOT EXISTS dbpool_ex_page_views (page VARCHAR(200) NOT NULL)")
        )


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    page = str(event.get("page", "/"))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO dbpool_ex_page_views (page) VALUES (:page)"), {"page": page}
            )
            views = conn.execute(
                text("SELECT COUNT(*) FROM dbpool_ex_page_views WHERE page = :page"),
                {"page": page},
            ).scalar_one()
    except (dbpool.PoolTimeoutError, dbpool.ConnectError) as exc:
        # The instance's connection stayed busy for pool_timeout (P2024), or the database
        # could not be reached or is full. dbpool's messages name the host, never the
        # password: fine for the log, not for the caller.
        logger.warning("page view not counted: %s", exc)
        return {"statusCode": 503, "body": json.dumps({"error": "database busy, try again"})}
    return {"statusCode": 200, "body": json.dumps({"page": page, "views": int(views)})}


if __name__ == "__main__":
    migrate()
    if sys.argv[1:] != ["migrate"]:
        for _ in range(3):  # three warm invocations: one connection, opened once
            print(handler({"page": "/home"}, None))
        print(engine.status())
