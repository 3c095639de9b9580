from __future__ import annotations

import pytest

from tests.servers import MYSQL_URL, POSTGRES_URL, need, need_module


@pytest.fixture
def postgres_url() -> str:
    need_module("psycopg")
    need(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def mysql_url() -> str:
    need_module("pymysql")
    need(MYSQL_URL)
    return MYSQL_URL
