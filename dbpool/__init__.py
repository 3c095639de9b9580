"""dbpool: a fast, strictly fair, thread-safe database connection pool.

A SQLAlchemy-style engine API (``create_engine``, ``connect``, ``begin``, ``text``)
configured the way Prisma configures its pool: settings in the database URL.
"""

import logging

from dbpool import metrics
from dbpool.config import EngineConfig
from dbpool.engine import Connection, Engine, Transaction, create_engine
from dbpool.events import Events
from dbpool.exc import (
    ArgumentError,
    ConfigError,
    ConnectError,
    DatabaseError,
    DataError,
    DBAPIError,
    DBPoolError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PoolDisposedError,
    PoolTimeoutError,
    ProgrammingError,
    ResourceClosedError,
    TooManyConnectionsError,
    Warning,
)
from dbpool.metrics import Metrics
from dbpool.pool import PoolStatus, QueuePool
from dbpool.proxy import PooledConnection
from dbpool.result import (
    MappingResult,
    MultipleResultsFound,
    NoResultFound,
    Result,
    Row,
    ScalarResult,
)
from dbpool.shared import shared_engine
from dbpool.sql import TextClause, text
from dbpool.url import URL, make_url

__version__ = "0.1.0"

# A library logs but never decides where logs go: without this, Python's last-resort
# handler would print dbpool's warnings (a P2024 timeout, say) to stderr unasked.
logging.getLogger("dbpool").addHandler(logging.NullHandler())

__all__ = [
    "URL",
    "ArgumentError",
    "ConfigError",
    "ConnectError",
    "Connection",
    "DBAPIError",
    "DBPoolError",
    "DataError",
    "DatabaseError",
    "Engine",
    "EngineConfig",
    "Error",
    "Events",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "MappingResult",
    "Metrics",
    "MultipleResultsFound",
    "NoResultFound",
    "NotSupportedError",
    "OperationalError",
    "PoolDisposedError",
    "PoolStatus",
    "PoolTimeoutError",
    "PooledConnection",
    "ProgrammingError",
    "QueuePool",
    "ResourceClosedError",
    "Result",
    "Row",
    "ScalarResult",
    "TextClause",
    "TooManyConnectionsError",
    "Transaction",
    "Warning",
    "create_engine",
    "make_url",
    "metrics",
    "shared_engine",
    "text",
]
