"""A cron job: import a CSV file of sensor readings, all or nothing.

    DATABASE_URL=postgresql://app@db:5432/plant python cron_batch.py readings-2026-11-30.csv

Each line of the file is ``sensor,value`` (an integer). The job loads the lines into
``dbpool_ex_readings`` as it reads them and records the file in ``dbpool_ex_imports``,
all in one transaction: if any line is bad, or the database fails halfway, nothing of
the file is kept and the job exits with status 1 and says why on stderr. A file that
was imported before is skipped, so re-running the job after a failure is safe. Then
it prints the file's per-sensor totals.

The engine is a context manager: however the job ends, its connections are closed
before the process exits, so the database never sees a script vanish mid-session.
Works with any DATABASE_URL dbpool supports (sqlite:///readings.db, postgresql://,
mysql://).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import dbpool
from dbpool import text

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS dbpool_ex_imports (
        name VARCHAR(200) PRIMARY KEY,
        readings INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dbpool_ex_readings (
        import_name VARCHAR(200) NOT NULL,
        sensor VARCHAR(100) NOT NULL,
        value INTEGER NOT NULL
    )""",
)
INSERT_READINGS = text(
    "INSERT INTO dbpool_ex_readings (import_name, sensor, value) VALUES (:name, :sensor, :value)"
)
CHUNK = 500  # rows per executemany: a big file is never held in memory whole


class BadInput(Exception):
    """A line of the file that is not ``sensor,value``."""


def readings(path: Path) -> Iterator[tuple[str, int]]:
    with path.open(newline="", encoding="utf-8") as file:
        for number, line in enumerate(csv.reader(file), start=1):
            if not line:
                continue
            if len(line) != 2:
                raise BadInput(f"line {number}: expected 'sensor,value', got {','.join(line)!r}")
            sensor, value = line
            try:
                yield sensor.strip(), int(value)
            except ValueError:
                raise BadInput(f"line {number}: {value!r} is not an integer") from None


def import_file(engine: dbpool.Engine, path: Path) -> int | None:
    """Load ``path`` in one transaction; the number of readings, or None if it was
    imported before."""
    with engine.begin() as conn:
        for statement in SCHEMA:
            conn.execute(text(statement))
    with engine.begin() as conn:  # commits at the end, rolls back on any exception
        done = conn.execute(
            text("SELECT readings FROM dbpool_ex_imports WHERE name = :name"), {"name": path.name}
        ).first()
        if done is not None:
            return None
        count = 0
        chunk: list[dict[str, object]] = []
        for sensor, value in readings(path):
            chunk.append({"name": path.name, "sensor": sensor, "value": value})
            if len(chunk) == CHUNK:
                conn.execute(INSERT_READINGS, chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            conn.execute(INSERT_READINGS, chunk)
            count += len(chunk)
        # A concurrent run of the same file fails here on the primary key, and rolls back.
        conn.execute(
            text("INSERT INTO dbpool_ex_imports (name, readings) VALUES (:name, :count)"),
            {"name": path.name, "count": count},
        )
    return count


def print_totals(engine: dbpool.Engine, path: Path) -> None:
    with engine.connect() as conn:
        totals = conn.execute(
            text(
                "SELECT sensor, COUNT(*) AS readings, SUM(value) AS total "
                "FROM dbpool_ex_readings WHERE import_name = :name "
                "GROUP BY sensor ORDER BY sensor"
            ),
            {"name": path.name},
        )
        for row in totals:
            print(f"{row.sensor}: total {row.total} over {row.readings} readings")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: cron_batch.py CSV_FILE", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        # Reads DATABASE_URL; disposed at the end of the block, also when it raises.
        with dbpool.create_engine() as engine:
            count = import_file(engine, path)
            if count is None:
                print(f"{path.name}: imported before, nothing to do")
            else:
                print(f"{path.name}: imported {count} readings")
            print_totals(engine, path)
    except (BadInput, OSError, dbpool.DBPoolError) as exc:
        # dbpool's errors never include the password, so they are safe to print.
        print(f"cron_batch: {path.name} was not imported: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
