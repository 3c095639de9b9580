"""Engines a test makes and must not leave open: ``engine_for`` makes one into the list
the ``engines`` fixture (tests/conftest.py) gives the test, which disposes of them all when
the test ends."""

from __future__ import annotations

from typing import Any

from dbpool import URL, Engine, create_engine


def engine_for(engines: list[Engine], url: str | URL, **settings: Any) -> Engine:
    engine = create_engine(url, **settings)
    engines.append(engine)
    return engine
