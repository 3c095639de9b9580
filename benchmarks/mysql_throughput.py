"""MariaDB/MySQL throughput: `SELECT 1` per checkout, autocommit, pool of 4, at 1/16/64 threads.

The same benchmark as postgres_throughput.py, over PyMySQL. Round trips are
counted by wrapping each connection's command sender (every COM_QUERY, COM_PING,
ROLLBACK ... goes through it). The benchmark process is pinned to CPU 0 so the
server has the other one. The bare LifoQueue of 4 connections is the ideal.
"""

from __future__ import annotations

from typing import Any

from _harness import COMMON_DB_CONTENDERS, Database, db_throughput_main

HOST, PORT, USER, DBNAME = "127.0.0.1", 3306, "root", "test"


def count_round_trips(conns: list[Any]) -> Any:
    """Count the commands each PyMySQL connection sends; each is one round trip."""
    count = [0]
    for conn in conns:

        def counting(command: int, sql: Any, _send: Any = conn._execute_command) -> Any:
            count[0] += 1
            return _send(command, sql)

        conn._execute_command = counting

    def stop() -> int:
        for conn in conns:
            del conn._execute_command  # back to the class's method
        return count[0]

    return stop


def reset(conn: Any) -> None:
    from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

    if conn.server_status & SERVER_STATUS_IN_TRANS:
        conn.rollback()


def mariadb() -> Database:
    import pymysql

    return Database(
        name="MariaDB",
        url=f"mysql://{USER}@{HOST}:{PORT}/{DBNAME}",
        sqlalchemy_url=f"mysql+pymysql://{USER}@{HOST}:{PORT}/{DBNAME}",
        module=pymysql,
        connect_kwargs={
            "host": HOST,
            "port": PORT,
            "user": USER,
            "password": "",
            "database": DBNAME,
            "autocommit": True,
            "connect_timeout": 5,
        },
        audit=count_round_trips,
        reset=reset,
    )


def main() -> int:
    return db_throughput_main(
        __doc__,
        f"MariaDB at {HOST}:{PORT}",
        mariadb,
        COMMON_DB_CONTENDERS,
        baselines=["bare LifoQueue"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
