"""SQL Server through pyodbc and Microsoft's ODBC driver (``mssql://``, ``mssql+pyodbc://``).

The ODBC machinery (quoting, ``odbc_connect``, ``dsn``, login timeout, reset, ping,
errors) is odbc.py's; this module adds what is SQL Server's own:

* ``SERVER=host,port`` in SQL Server's syntax; a named instance ``host\\instance`` (the
  backslash may be written ``%5C``) works with or without a port. No host means
  ``localhost``. The driver defaults to "ODBC Driver 18 for SQL Server".
* The query may carry the driver's common keys (:data:`MSSQL_KEYS`), matched without
  regard to case; ``true``/``false``/``1``/``0`` become the driver's ``yes``/``no``.
  Anything else is refused, so a misspelt ``TrustServerCertificate`` fails at once.
* A URL with no user name logs in with integrated security (``Trusted_Connection=yes``,
  Kerberos on Linux) unless it gives ``Authentication`` or ``Trusted_Connection``.
* ``isolation_level`` is ``SET TRANSACTION ISOLATION LEVEL ...`` on each new connection,
  which lasts for the session in SQL Server. (``SNAPSHOT`` is not offered: the pool
  settings do not accept it.)
* Disconnects also include SQL Server's network errors: native errors 64, 233, 10053,
  10054 and its messages for a broken connection.
"""

from __future__ import annotations

import re
from typing import Any

from dbpool.dialects.odbc import Attributes, ODBCDialect
from dbpool.url import URL

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"

# The keys of Microsoft's ODBC driver a URL query may set, as Microsoft spells them.
MSSQL_KEYS = (
    "APP",
    "ApplicationIntent",
    "Authentication",
    "ColumnEncryption",
    "ConnectRetryCount",
    "ConnectRetryInterval",
    "Encrypt",
    "Failover_Partner",
    "HostNameInCertificate",
    "IpAddressPreference",
    "KeepAlive",
    "KeepAliveInterval",
    "Language",
    "LongAsMax",
    "MARS_Connection",
    "MultiSubnetFailover",
    "ServerCertificate",
    "ServerSPN",
    "TransparentNetworkIPResolution",
    "Trusted_Connection",
    "TrustServerCertificate",
    "WSID",
)
# Keys whose value is yes/no (Encrypt also takes strict, mandatory, optional).
_YES_NO_KEYS = frozenset(
    {"Encrypt", "LongAsMax", "MARS_Connection", "MultiSubnetFailover", "Trusted_Connection",
     "TrustServerCertificate"}
)  # fmt: skip
_YES, _NO = ("true", "1", "yes"), ("false", "0", "no")
# The URL parser leaves the host as written, so "host%5Cinstance" arrives encoded.
_ESCAPED_BACKSLASH = re.compile("%5c", re.IGNORECASE)

# "... (10054) (SQLExecDirectW)": the native error pyodbc puts before the ODBC function.
_NATIVE_ERROR = re.compile(r"\((-?\d+)\) \(SQL\w+\)\s*$")
_DISCONNECT_NATIVE_ERRORS = frozenset(
    {
        64,  # the specified network name is no longer available
        233,  # no process is on the other end of the pipe
        10053,  # the connection was aborted by the software in the host
        10054,  # the connection was forcibly closed by the remote host
    }
)


def isolation_statement(level: str) -> str:
    """The statement that sets ``level`` for a SQL Server session."""
    return f"SET TRANSACTION ISOLATION LEVEL {level}"


class MSSQLDialect(ODBCDialect):
    name = "mssql"
    extra = "mssql"
    default_odbc_driver = DEFAULT_DRIVER
    passthrough_keys = {key.lower(): key for key in MSSQL_KEYS}
    disconnect_messages = (
        *ODBCDialect.disconnect_messages,
        "connection is broken",
        "physical connection is not usable",
        "forcibly closed",
        "transport-level error",
        "no process is on the other end of the pipe",
    )
    missing_driver_hint = (
        "Is Microsoft's ODBC driver installed? On Linux it is the msodbcsql18 package from "
        "Microsoft's repository; or name another with driver=."
    )

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        if url.host is not None:
            url = url.set(host=_ESCAPED_BACKSLASH.sub(r"\\", url.host))
        super().__init__(url, *args, **kwargs)

    def _attribute_value(self, key: str, value: str) -> str:
        if key in _YES_NO_KEYS:
            lowered = value.strip().lower()
            if lowered in _YES:
                return "yes"
            if lowered in _NO:
                return "no"
        return value

    def server_attributes(self, dsn: str | None) -> Attributes:
        host, port = self.url.host, self.url.port
        if host is None:
            if dsn is not None and port is None:
                return []  # the data source says where the server is
            host = "localhost"
        return [("SERVER", host if port is None else f"{host},{port}")]

    def default_attributes(self, driver_name: str, given: set[str]) -> Attributes:
        attributes = super().default_attributes(driver_name, given)
        if (
            self.url.username is None
            and "dsn" not in self.driver_params
            and "authentication" not in given
        ):
            attributes.append(("Trusted_Connection", "yes"))
        return attributes

    def set_isolation(self, conn: Any, level: str) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute(isolation_statement(level))
        finally:
            cursor.close()

    def is_disconnect(self, error: BaseException) -> bool:
        if super().is_disconnect(error):
            return True
        if not isinstance(error, self.dbapi.Error) or not error.args:
            return False
        found = _NATIVE_ERROR.search(str(error.args[-1]))
        return found is not None and int(found.group(1)) in _DISCONNECT_NATIVE_ERRORS
