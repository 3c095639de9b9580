"""PostgreSQL throughput: `SELECT 1` per checkout, autocommit, pool of 4, at 1/16/64 threads.

Every contender makes exactly one round trip per checkout (execute + fetch on a
cursor); the table's last column proves it, counted on the wire with libpq's
protocol trace. The benchmark process is pinned to CPU 0 so the server has the
other one. The bare LifoQueue of 4 connections is the ideal: no pool logic at all.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from _harness import (
    COMMON_DB_CONTENDERS,
    LIMIT,
    Database,
    DbContender,
    Opened,
    checkout_op,
    db_throughput_main,
    prefill,
    query,
)

HOST, PORT, USER, DBNAME = "127.0.0.1", 5432, "postgres", "test"


def count_round_trips(conns: list[Any]) -> Any:
    """Trace the protocol on each connection; each ReadyForQuery ends one round trip."""
    traced = []
    for conn in conns:
        fd, path = tempfile.mkstemp(prefix="pgtrace-")
        os.unlink(path)  # the open descriptor keeps the file until stop()
        conn.pgconn.trace(fd)
        traced.append((conn, fd))

    def stop() -> int:
        n = 0
        for conn, fd in traced:
            conn.pgconn.untrace()  # flushes the trace
            os.lseek(fd, 0, os.SEEK_SET)
            with open(fd, "rb") as f:
                n += sum(1 for line in f if b"\tReadyForQuery" in line)
        return n

    return stop


def reset(conn: Any) -> None:
    from psycopg.pq import TransactionStatus

    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.rollback()


def postgres() -> Database:
    import psycopg

    return Database(
        name="PostgreSQL",
        url=f"postgresql://{USER}@{HOST}:{PORT}/{DBNAME}",
        sqlalchemy_url=f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{DBNAME}",
        module=psycopg,
        connect_kwargs={
            "host": HOST,
            "port": PORT,
            "user": USER,
            "dbname": DBNAME,
            "autocommit": True,
            "connect_timeout": 5,
        },
        audit=count_round_trips,
        reset=reset,
    )


def open_psycopg_pool(db: Database) -> Opened:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(min_size=LIMIT, max_size=LIMIT, kwargs=db.connect_kwargs, open=True)
    pool.wait()
    raw = prefill(pool.getconn, pool.putconn, lambda c: c)
    return Opened(checkout_op(pool.getconn, query, pool.putconn), raw, pool.close)


CONTENDERS = [
    *COMMON_DB_CONTENDERS[:2],
    DbContender("psycopg_pool", open_psycopg_pool),
    *COMMON_DB_CONTENDERS[2:],
]


def main() -> int:
    return db_throughput_main(
        __doc__,
        f"PostgreSQL at {HOST}:{PORT}",
        postgres,
        CONTENDERS,
        baselines=["bare LifoQueue", "psycopg_pool"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
