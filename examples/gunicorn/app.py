"""A small WSGI app on dbpool: one bank transfer per request (pgbench's TPC-B-like
transaction), served by gunicorn with gunicorn.conf.py next to this file.

    pgbench -i -s 1 bank   # the pgbench_* tables
    DATABASE_URL="postgresql://app@db:5432/bank?connection_limit=8" \
        gunicorn -c gunicorn.conf.py app:application
    curl localhost:8000/transfer   # {"balance": ...}
    curl localhost:8000/worker     # this worker's pid, CPUs and pool status

tests/integration/test_gunicorn_deployment.py serves it with that configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Callable, Iterable
from typing import Any

import dbpool

engine = dbpool.create_engine()  # DATABASE_URL; nothing is opened until the first request
SCALE = int(os.environ.get("TPCB_SCALE", "1"))  # pgbench -s: 1 branch, 10 tellers per unit

UPDATE_ACCOUNT = dbpool.text(
    "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid"
)
SELECT_BALANCE = dbpool.text("SELECT abalance FROM pgbench_accounts WHERE aid = :aid")
UPDATE_TELLER = dbpool.text(
    "UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid"
)
UPDATE_BRANCH = dbpool.text(
    "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid"
)
INSERT_HISTORY = dbpool.text(
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
    " VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP)"
)


def transfer() -> int:
    """One TPC-B-like transaction; the account's new balance."""
    ids = {
        "aid": random.randint(1, 100_000 * SCALE),
        "tid": random.randint(1, 10 * SCALE),
        "bid": random.randint(1, SCALE),
        "delta": random.randint(-5000, 5000),
    }
    with engine.begin() as conn:
        conn.execute(UPDATE_ACCOUNT, ids)
        balance: int = conn.execute(SELECT_BALANCE, ids).scalar_one()
        conn.execute(UPDATE_TELLER, ids)
        conn.execute(UPDATE_BRANCH, ids)
        conn.execute(INSERT_HISTORY, ids)
    return balance


def worker() -> dict[str, Any]:
    """Where this request ran: the worker process, its CPUs, its pool."""
    return {
        "pid": os.getpid(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "pool": dataclasses.asdict(engine.status()),
    }


ROUTES: dict[str, Callable[[], object]] = {
    "/transfer": lambda: {"balance": transfer()},
    "/worker": worker,
}


def application(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    route = ROUTES.get(environ.get("PATH_INFO", ""))
    if route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = json.dumps(route()).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]
