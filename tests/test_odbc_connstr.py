"""ODBC connection strings and the SQL Server dialect's own parts, without a server.

SQL Server cannot run here, so everything SQL Server-specific is proven by these unit
tests: URL -> connection string, quoting, ``odbc_connect``, ``dsn``, defaults, named
instances, the login timeout, isolation statements and disconnect detection. The
pyodbc machinery itself is proven end to end in tests/integration/test_odbc.py.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dbpool
from dbpool import ConfigError, ConnectError, Engine, make_url
from dbpool.config import ISOLATION_LEVELS
from dbpool.dialects.mssql import DEFAULT_DRIVER, MSSQL_KEYS, MSSQLDialect, isolation_statement
from dbpool.dialects.odbc import (
    ODBCDialect,
    build_connection_string,
    parse_connection_string,
    quote_value,
)
from tests.servers import need_module

SECRET = "Sup3r;S}cr{t=+%"  # every character the quoting must handle, and psqlODBC's '+%'
ENCODED = quote(SECRET, safe="")
MSSQL = f"mssql://sa:{ENCODED}@db.example.com:1433/shop"
DRIVER18 = "DRIVER={ODBC Driver 18 for SQL Server}"


@pytest.fixture
def pyodbc() -> Any:
    need_module("pyodbc")
    import pyodbc as module

    return module


@pytest.fixture
def engines(pyodbc: Any) -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def make(engines: list[Engine]) -> Any:
    def make(url: str, **settings: Any) -> Engine:
        engine = dbpool.create_engine(url, **settings)
        engines.append(engine)
        return engine

    return make


def connstr(make: Any, url: str, **settings: Any) -> str:
    dialect = make(url, **settings).dialect
    assert isinstance(dialect, ODBCDialect)
    return dialect.connection_string


# -- quoting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "plain"),
        ("", ""),
        ("with inner space", "with inner space"),
        ("a+b%20c", "a+b%20c"),  # nothing special to ODBC itself
        ("a;b", "{a;b}"),
        ("a=b", "{a=b}"),
        ("{a", "{{a}"),
        ("a{b", "{a{b}"),
        ("a}b", "{a}}b}"),
        ("}", "{}}}"),
        ("}}", "{}}}}}"),
        ("{x}", "{{x}}}"),
        (" lead", "{ lead}"),
        ("trail ", "{trail }"),
        ("\ttab", "{\ttab}"),
    ],
)
def test_quote_value(value: str, quoted: str) -> None:
    assert quote_value(value) == quoted
    assert parse_connection_string(f"K={quoted}") == [("K", value)]


def test_driver_and_password_are_always_braced() -> None:
    # psqlODBC percent-decodes a bare password ('+' -> ' '); braced it is taken verbatim.
    built = build_connection_string(
        [("DRIVER", "X"), ("PWD", "a+b"), ("pwd", ""), ("UID", "a+b"), ("Other", "v")]
    )
    assert built == "DRIVER={X};PWD={a+b};pwd={};UID=a+b;Other=v"


def test_parse_connection_string_forms() -> None:
    assert parse_connection_string("A=1;B={x;y}}z};C=;D") == [
        ("A", "1"),
        ("B", "x;y}z"),
        ("C", ""),
    ]
    assert parse_connection_string(" Key = v ;;DSN=n;") == [("Key", " v "), ("DSN", "n")]
    assert parse_connection_string("P={unterminated;rest") == [("P", "unterminated;rest")]
    assert parse_connection_string("") == []


_keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_keys, st.text()), max_size=6))
def test_quoting_round_trips_any_value(pairs: list[tuple[str, str]]) -> None:
    assert parse_connection_string(build_connection_string(pairs)) == pairs


# -- SQL Server: the connection string -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "mssql://sa:pw@db.example.com:1433/shop",
            f"{DRIVER18};SERVER=db.example.com,1433;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
        (
            "mssql+pyodbc://sa:pw@db.example.com/shop",
            f"{DRIVER18};SERVER=db.example.com;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
        (
            MSSQL,
            f"{DRIVER18};SERVER=db.example.com,1433;DATABASE=shop;UID=sa;"
            "PWD={Sup3r;S}}cr{t=+%}",
        ),
        (  # named instance, resolved by the SQL Server Browser
            "mssql://sa:pw@host\\SQLEXPRESS/shop",
            f"{DRIVER18};SERVER=host\\SQLEXPRESS;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
        (
            "mssql://sa:pw@host%5CSQLEXPRESS/shop",
            f"{DRIVER18};SERVER=host\\SQLEXPRESS;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
        (
            "mssql://sa:pw@host%5cinst:1435/shop",
            f"{DRIVER18};SERVER=host\\inst,1435;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
        (  # no host: the local server; no user: integrated security
            "mssql:///shop",
            f"{DRIVER18};SERVER=localhost;DATABASE=shop;Trusted_Connection=yes",
        ),
        ("mssql://", f"{DRIVER18};SERVER=localhost;Trusted_Connection=yes"),
        (  # an empty password is a real one
            "mssql://sa:@h/d",
            f"{DRIVER18};SERVER=h;DATABASE=d;UID=sa;PWD={{}}",
        ),
        (  # a user name without password (the driver may prompt or use other auth)
            "mssql://sa@h",
            f"{DRIVER18};SERVER=h;UID=sa",
        ),
        (
            "mssql://d%3Bom%7Bain%5Cus=er:pw@h/my%20db",
            f"{DRIVER18};SERVER=h;DATABASE=my db;UID={{d;om{{ain\\us=er}};PWD={{pw}}",
        ),
        (
            "mssql://sa:pw@h/%20padded%20",
            f"{DRIVER18};SERVER=h;DATABASE={{ padded }};UID=sa;PWD={{pw}}",
        ),
        (
            "mssql://sa:pw@h/shop?driver=ODBC+Driver+17+for+SQL+Server",
            "DRIVER={ODBC Driver 17 for SQL Server};SERVER=h;DATABASE=shop;UID=sa;PWD={pw}",
        ),
        (  # already braced, as people copy it from connection strings
            "mssql://sa:pw@h/shop?driver=%7BODBC+Driver+18+for+SQL+Server%7D",
            f"{DRIVER18};SERVER=h;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
        (
            "mssql://sa:pw@h/shop?driver=/opt/odd%7Dname/lib.so",
            "DRIVER={/opt/odd}}name/lib.so};SERVER=h;DATABASE=shop;UID=sa;PWD={pw}",
        ),
        (
            "mssql://sa:pw@[::1]:1433/shop",
            f"{DRIVER18};SERVER=::1,1433;DATABASE=shop;UID=sa;PWD={{pw}}",
        ),
    ],
)
def test_mssql_connection_string(make: Any, url: str, expected: str) -> None:
    assert connstr(make, url) == expected


def test_mssql_default_driver_is_odbc_driver_18(make: Any) -> None:
    assert DEFAULT_DRIVER == "ODBC Driver 18 for SQL Server"
    assert connstr(make, "mssql://sa:pw@h/d").startswith(DRIVER18 + ";")


@pytest.mark.parametrize(
    ("query", "attribute"),
    [
        ("TrustServerCertificate=yes", "TrustServerCertificate=yes"),
        ("TrustServerCertificate=true", "TrustServerCertificate=yes"),
        ("trustservercertificate=1", "TrustServerCertificate=yes"),
        ("TRUSTSERVERCERTIFICATE=False", "TrustServerCertificate=no"),
        ("Encrypt=no", "Encrypt=no"),
        ("encrypt=0", "Encrypt=no"),
        ("Encrypt=strict", "Encrypt=strict"),
        ("Encrypt=Mandatory", "Encrypt=Mandatory"),
        ("ApplicationIntent=ReadOnly", "ApplicationIntent=ReadOnly"),
        ("MultiSubnetFailover=true", "MultiSubnetFailover=yes"),
        ("app=nightly+report", "APP=nightly report"),
        ("WSID=box-7", "WSID=box-7"),
        ("Language=us_english", "Language=us_english"),
        ("HostNameInCertificate=db.example.com", "HostNameInCertificate=db.example.com"),
        (
            "ConnectRetryCount=3&ConnectRetryInterval=5",
            "ConnectRetryCount=3;ConnectRetryInterval=5",
        ),
        ("MARS_Connection=yes", "MARS_Connection=yes"),
        ("LongAsMax=1", "LongAsMax=yes"),
        ("ColumnEncryption=Enabled", "ColumnEncryption=Enabled"),
        ("ServerSPN=MSSQLSvc%2Fdb%3A1433", "ServerSPN=MSSQLSvc/db:1433"),
        ("KeepAlive=30&KeepAliveInterval=1", "KeepAlive=30;KeepAliveInterval=1"),
        ("APP=a%3Bb", "APP={a;b}"),
    ],
)
def test_mssql_driver_keys_pass_through(make: Any, query: str, attribute: str) -> None:
    built = connstr(make, f"mssql://sa:pw@h/d?{query}")
    assert built == f"{DRIVER18};SERVER=h;DATABASE=d;UID=sa;PWD={{pw}};{attribute}"


def test_mssql_documented_keys_are_all_accepted(make: Any) -> None:
    query = "&".join(f"{key.lower()}=v" for key in MSSQL_KEYS)
    pairs = parse_connection_string(connstr(make, f"mssql://sa:pw@h/d?{query}"))
    assert [key for key, _ in pairs][5:] == list(MSSQL_KEYS)


@pytest.mark.parametrize(
    "query",
    ["Authentication=ActiveDirectoryMsi", "Trusted_Connection=no", "authentication=SqlPassword"],
)
def test_mssql_integrated_security_only_when_nothing_else_logs_in(make: Any, query: str) -> None:
    built = connstr(make, f"mssql://h/d?{query}")
    assert built.count("Trusted_Connection") == query.count("Trusted_Connection")
    assert "Trusted_Connection=yes" not in built


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("TrustServerCertficate=yes", 'Did you mean "TrustServerCertificate"?'),
        ("Encrpyt=yes", 'Did you mean "Encrypt"?'),
        ("conection_limit=3", 'Did you mean "connection_limit"?'),
        ("sslmode=require", "'sslmode'"),
        ("Pooling=true", "TrustServerCertificate"),  # lists the keys it does take
    ],
)
def test_mssql_unknown_query_parameter(pyodbc: Any, query: str, message: str) -> None:
    with pytest.raises(ConfigError, match="Unknown query parameter") as caught:
        dbpool.create_engine(f"mssql://sa:pw@h/d?{query}")
    assert message in str(caught.value)


@pytest.mark.parametrize("dialect", ["mssql", "odbc"])
@pytest.mark.parametrize("key", ["PWD", "pwd", "Password", "UID", "user", "Server", "PORT", "db"])
def test_url_parts_cannot_come_from_the_query(pyodbc: Any, dialect: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' cannot be a query parameter") as caught:
        dbpool.create_engine(f"{dialect}://u:pw@h/d?driver=X&{key}=hunter2")
    assert "hunter2" not in str(caught.value)


def test_a_key_given_twice_in_different_case_is_refused(pyodbc: Any) -> None:
    with pytest.raises(ConfigError, match="given twice"):
        dbpool.create_engine("mssql://sa:pw@h/d?Encrypt=yes&encrypt=no")
    with pytest.raises(ConfigError, match="given twice"):
        dbpool.create_engine("odbc://u@h/d?driver=X&DRIVER=Y")


@pytest.mark.parametrize(("setting", "value"), [("schema", "s"), ("pgbouncer", "true")])
@pytest.mark.parametrize("dialect", ["mssql", "odbc"])
def test_postgresql_settings_are_refused(
    pyodbc: Any, dialect: str, setting: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"{setting} is a PostgreSQL setting"):
        dbpool.create_engine(f"{dialect}://u@h/d?driver=X&{setting}={value}")


# -- odbc_connect and dsn ----------------------------------------------------------------------


RAW = (
    "Driver={ODBC Driver 18 for SQL Server};Server=tcp:sql.example.com,1433;Database=shop;"
    "Uid=app;Pwd={s3;cr}}t};Encrypt=yes"
)


@pytest.mark.parametrize("dialect", ["mssql", "mssql+pyodbc", "odbc", "odbc+pyodbc"])
def test_odbc_connect_is_used_verbatim(make: Any, dialect: str) -> None:
    engine = make(f"{dialect}:///?odbc_connect={quote(RAW, safe='')}&connect_timeout=7")
    assert engine.dialect.connection_string == RAW  # nothing added, nothing reordered
    assert engine.dialect.login_timeout == 7  # the login timeout still applies
    assert engine.dialect.describe() == "tcp:sql.example.com,1433/shop"
    for shown in (str(engine.url), repr(engine), repr(engine.url)):
        assert "s3" not in shown and "cr}" not in shown
    assert "Pwd%3D%2A%2A%2A" in str(engine.url)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("user@host/db", "a user name, a host, a database"),
        (":pw@", "a password"),
        ("host:1433", "a host, a port"),
        ("?driver=X", "driver="),
        ("?dsn=X", "dsn="),
        ("?Encrypt=yes", "Encrypt="),
    ],
)
def test_odbc_connect_cannot_be_mixed_with_other_parts(
    pyodbc: Any, extra: str, named: str
) -> None:
    base, _, query = extra.partition("?")
    url = f"mssql://{base}" + ("" if base.endswith("/db") else "/")
    url += f"?odbc_connect={quote(RAW, safe='')}" + (f"&{query}" if query else "")
    with pytest.raises(ConfigError, match="odbc_connect is the whole ODBC connection string") as e:
        dbpool.create_engine(url)
    assert named in str(e.value)
    assert "s3" not in str(e.value)


def test_mssql_dsn(make: Any) -> None:
    built = connstr(make, f"mssql://sa:{ENCODED}@/shop?dsn=Prod%20SQL&Encrypt=yes")
    assert built == "DSN=Prod SQL;DATABASE=shop;UID=sa;PWD={Sup3r;S}}cr{t=+%};Encrypt=yes"
    # a host given with a DSN overrides the data source's server
    assert connstr(make, "mssql://h:1500/?dsn=Prod") == "DSN=Prod;SERVER=h,1500"


def test_odbc_driver_and_dsn_forms(make: Any) -> None:
    assert connstr(make, f"odbc://app:{ENCODED}@/?dsn=warehouse") == (
        "DSN=warehouse;UID=app;PWD={Sup3r;S}}cr{t=+%}"
    )
    assert connstr(make, "odbc://u:pw@db:5432/shop?driver=PostgreSQL+Unicode") == (
        "DRIVER={PostgreSQL Unicode};SERVER=db;PORT=5432;DATABASE=shop;UID=u;PWD={pw}"
    )
    assert connstr(make, "odbc+pyodbc://u@[::1]:5432/shop?driver=PostgreSQL+Unicode") == (
        "DRIVER={PostgreSQL Unicode};SERVER=::1;PORT=5432;DATABASE=shop;UID=u"
    )


def test_odbc_passes_any_other_key_verbatim(make: Any) -> None:
    built = connstr(
        make,
        "odbc://u@db/shop?driver=PostgreSQL+Unicode&sslmode=require&BoolsAsChar=0"
        "&pqopt=%7Bapplication_name%3Dnightly%7D&Initial+Catalog=x",
    )
    assert built == (
        "DRIVER={PostgreSQL Unicode};SERVER=db;DATABASE=shop;UID=u;sslmode=require;"
        "BoolsAsChar=0;pqopt={{application_name=nightly}}};Initial Catalog=x"
    )


@pytest.mark.parametrize("key", ["a;b", "a=b", "a{b", "k(1)", " lead", "x?"])
def test_odbc_refuses_keys_the_grammar_reserves(pyodbc: Any, key: str) -> None:
    with pytest.raises(ConfigError, match="cannot be an ODBC connection-string key"):
        dbpool.create_engine(f"odbc://u@h/d?driver=X&{quote(key, safe='')}=v")


def test_odbc_refuses_a_misspelt_pool_setting(pyodbc: Any) -> None:
    with pytest.raises(ConfigError, match=r'misspelt pool setting.*Did you mean "pool_timeout"'):
        dbpool.create_engine("odbc://u@h/d?driver=X&pool_timout=3")


def test_odbc_needs_a_driver_a_dsn_or_a_string(pyodbc: Any) -> None:
    with pytest.raises(ConfigError, match="needs driver=<ODBC driver name>, dsn=") as caught:
        dbpool.create_engine("odbc://u:pw@h/d")
    assert "installed drivers:" in str(caught.value)
    with pytest.raises(ConfigError, match="driver= or dsn=, not both"):
        dbpool.create_engine("odbc://u@h/d?driver=X&dsn=Y")
    with pytest.raises(ConfigError, match="dsn must name"):
        dbpool.create_engine("odbc://u@h/d?dsn=")


# -- connect_timeout ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "login"), [(None, 5), (5, 5), (2.5, 3), (0.1, 1), (30, 30), (0, 0)]
)
def test_connect_timeout_is_the_login_timeout(
    make: Any, timeout: float | None, login: int
) -> None:
    settings = {} if timeout is None else {"connect_timeout": timeout}
    dialect = make("mssql://sa:pw@h/d", **settings).dialect
    assert dialect.login_timeout == login
    assert dialect._connect_kwargs["timeout"] == login  # pyodbc.connect(timeout=...)
    assert "TIMEOUT" not in dialect.connection_string.upper()  # msodbcsql honours the attribute


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("driver=MariaDB+Unicode&connect_timeout=2.2", ";CONN_TIMEOUT=3"),
        ("driver=MariaDB+Unicode", ";CONN_TIMEOUT=5"),  # the default connect_timeout
        ("driver=MariaDB+ODBC+3.1+Driver&connect_timeout=0", ""),  # 0: no limit, nothing added
        ("driver=MariaDB+Unicode&CONN_TIMEOUT=9", ";CONN_TIMEOUT=9"),  # the user's wins
        ("driver=PostgreSQL+Unicode&connect_timeout=2.2", ""),
    ],
)
def test_mariadb_driver_gets_its_own_timeout_key(make: Any, query: str, expected: str) -> None:
    built = connstr(make, f"odbc://u@h/d?{query}")
    tail = built.split("DATABASE=d;UID=u", 1)[1]
    assert tail == expected


def test_mariadb_timeout_key_for_a_dsn_of_the_mariadb_driver(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = tmp_path / "odbc.ini"
    ini.write_text("[maria_dsn]\nDriver=MariaDB Unicode\n[pg_dsn]\nDriver=PostgreSQL Unicode\n")
    monkeypatch.setenv("ODBCINI", str(ini))  # unixODBC's user data sources
    assert (
        connstr(make, "odbc:///?dsn=maria_dsn&connect_timeout=4") == "DSN=maria_dsn;CONN_TIMEOUT=4"
    )
    assert connstr(make, "odbc:///?dsn=pg_dsn&connect_timeout=4") == "DSN=pg_dsn"


# -- transactions ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", [lvl for lvl in ISOLATION_LEVELS if lvl != "AUTOCOMMIT"])
def test_mssql_isolation_statement(make: Any, level: str) -> None:
    assert isolation_statement(level) == f"SET TRANSACTION ISOLATION LEVEL {level}"
    dialect = make("mssql://sa:pw@h/d", isolation_level=level.lower()).dialect
    assert dialect.config.isolation_level == level
    assert dialect._connect_kwargs["autocommit"] is False
    executed: list[str] = []

    class Cursor:
        def execute(self, sql: str) -> None:
            executed.append(sql)

        def close(self) -> None:
            executed.append("closed")

    class Conn:
        def cursor(self) -> Cursor:
            return Cursor()

    dialect.set_isolation(Conn(), level)
    assert executed == [f"SET TRANSACTION ISOLATION LEVEL {level}", "closed"]


def test_autocommit_is_pyodbcs_autocommit(make: Any) -> None:
    dialect = make("mssql://sa:pw@h/d?isolation_level=AUTOCOMMIT").dialect
    assert dialect.autocommit and dialect._connect_kwargs["autocommit"] is True


def test_connect_args_reach_pyodbc(make: Any) -> None:
    dialect = make("mssql://sa:pw@h/d").dialect
    assert dialect._connect_kwargs == {"autocommit": False, "timeout": 5}
    engine = dbpool.create_engine("mssql://sa:pw@h/d", connect_args={"readonly": True})
    assert engine.dialect._connect_kwargs == {"autocommit": False, "timeout": 5, "readonly": True}


def test_reset_rolls_back_unless_autocommit(make: Any) -> None:
    dialect = make("mssql://sa:pw@h/d").dialect
    calls: list[str] = []

    class Conn:
        autocommit = False

        def rollback(self) -> None:
            calls.append("rollback")

    conn = Conn()
    assert dialect.in_transaction(conn) is None  # pyodbc cannot tell
    dialect.reset(conn)
    assert calls == ["rollback"]
    conn.autocommit = True
    assert dialect.in_transaction(conn) is False
    dialect.reset(conn)
    assert calls == ["rollback"]


# -- disconnects ----------------------------------------------------------------------------


def _error(pyodbc: Any, cls: str, state: str, message: str) -> BaseException:
    error: BaseException = getattr(pyodbc, cls)(state, message)
    return error


_MS = "[Microsoft][ODBC Driver 18 for SQL Server]"


@pytest.mark.parametrize(
    ("cls", "state", "message", "disconnect"),
    [
        ("OperationalError", "08S01", f"{_MS}Communication link failure (0) (SQLExec)", True),
        ("OperationalError", "08003", "Connection not open (0) (SQLAllocHandle)", True),
        ("OperationalError", "08001", "TCP Provider: Error code 0x68 (104) (SQLConnect)", True),
        ("OperationalError", "08007", "Connection failure in transaction (0) (SQLEndTran)", True),
        ("Error", "01002", "Disconnect error (0) (SQLDisconnect)", True),
        ("Error", "HY000", f"{_MS}TCP Provider: An existing connection was forcibly closed by "
                           "the remote host. (10054) (SQLExecDirectW)", True),
        ("Error", "HY000", f"{_MS}Named Pipes Provider: No process is on the other end of the "
                           "pipe. (233) (SQLExecDirectW)", True),
        ("Error", "HY000", "Physical connection is not usable (0) (SQLExecDirectW)", True),
        ("Error", "HY000", "A transport-level error has occurred when sending the request to "
                           "the server. (10053) (SQLExecDirectW)", True),
        ("Error", "HY000", "The connection is broken and recovery is not possible. (0) (SQLEx)",
         True),
        ("Error", "HY000", "Network name is no longer available (64) (SQLExecDirectW)", True),
        ("Error", "57P01", "terminating connection due to administrator command (35)", True),
        ("IntegrityError", "23000", "Violation of PRIMARY KEY constraint (2627) (SQLExec)", False),
        ("ProgrammingError", "42S02", "Invalid object name 't'. (208) (SQLExecDirectW)", False),
        ("OperationalError", "HYT00", "Query timeout expired (0) (SQLExecDirectW)", False),
        ("Error", "HY000", "Transaction was deadlocked (1205) (SQLExecDirectW)", False),
        ("DataError", "22001", "String or binary data would be truncated. (2628) (SQLEx)", False),
        ("Error", "HY000", "Error 10054 in the text is not a native error (0) (SQLEx)", False),
    ],
)  # fmt: skip
def test_mssql_disconnects(
    make: Any, pyodbc: Any, cls: str, state: str, message: str, disconnect: bool
) -> None:
    dialect = make("mssql://sa:pw@h/d").dialect
    assert dialect.is_disconnect(_error(pyodbc, cls, state, message)) is disconnect


@pytest.mark.parametrize("state", ["HYT00", "HYT01"])
def test_query_timeout_is_a_disconnect_only_under_socket_timeout(
    make: Any, pyodbc: Any, state: str
) -> None:
    error = _error(pyodbc, "OperationalError", state, "Query timeout expired (0) (SQLEx)")
    assert make("mssql://sa:pw@h/d").dialect.is_disconnect(error) is False
    assert make("mssql://sa:pw@h/d?socket_timeout=3").dialect.is_disconnect(error) is True


def test_pyodbc_own_closed_connection_errors_are_disconnects(make: Any, pyodbc: Any) -> None:
    for url in ("mssql://sa:pw@h/d", "odbc://u@h/d?driver=X"):
        dialect = make(url).dialect
        closed = pyodbc.ProgrammingError("Attempt to use a closed connection.")
        assert dialect.is_disconnect(closed)
        assert not dialect.is_disconnect(
            pyodbc.ProgrammingError("No results.  Previous SQL was not a query.")
        )
        assert not dialect.is_disconnect(RuntimeError("communication link failure"))


def test_native_network_errors_are_sql_server_only(make: Any, pyodbc: Any) -> None:
    # 10054 is SQL Server's "connection reset"; to another driver it may mean anything.
    error = _error(pyodbc, "Error", "HY000", "[HY000] something (10054) (SQLExecDirectW)")
    assert make("mssql://sa:pw@h/d").dialect.is_disconnect(error)
    assert not make("odbc://u@h/d?driver=X").dialect.is_disconnect(error)


# -- secrets --------------------------------------------------------------------------------


def test_no_secret_in_reprs(make: Any) -> None:
    engine = make(MSSQL + "?TrustServerCertificate=yes")
    for shown in (str(engine.url), repr(engine.url), repr(engine), engine.dialect.describe(),
                  repr(engine.dialect), str(engine.config.items())):  # fmt: skip
        assert "Sup3r" not in shown and ENCODED not in shown
    assert quote_value(SECRET) in engine.dialect.connection_string  # for pyodbc only


def test_connect_error_names_where_and_never_the_password(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A real unixODBC failure: the driver is not installed.
    engine = make(f"mssql://sa:{ENCODED}@127.0.0.1:1/shop?driver=No+Such+Driver", pool_timeout=1)
    caplog.set_level(logging.DEBUG, logger="dbpool")
    with pytest.raises(ConnectError) as caught:
        engine.open()
    error = caught.value
    message = str(error)
    assert message.startswith("Cannot connect to mssql at 127.0.0.1:1/shop as user 'sa': ")
    assert "No Such Driver" in message and "msodbcsql18" in message
    assert "Registered ODBC drivers:" in message
    assert error.orig is not None and error.__cause__ is error.orig
    with pytest.raises((ConnectError, dbpool.PoolTimeoutError)) as again:
        engine.connect()  # through the pool: retries, then its own error
    for text in (message, str(error.orig), str(again.value), caplog.text):
        assert "Sup3r" not in text and ENCODED not in text


def test_a_driver_echoing_the_connection_string_is_scrubbed(make: Any, pyodbc: Any) -> None:
    dialect = make(MSSQL).dialect
    echoed = pyodbc.OperationalError(
        "08001", f"[08001] bad string: {dialect.connection_string} or password {SECRET}"
    )
    error = dialect.connect_error(echoed)
    assert isinstance(error.orig, pyodbc.OperationalError)
    for text in (str(error), str(error.orig), repr(error.orig.args)):
        assert "Sup3r" not in text
        assert "PWD=***" in text
    assert error.orig.args[0] == "08001"


def test_a_raw_string_password_is_scrubbed_from_errors(make: Any, pyodbc: Any) -> None:
    dialect = make(f"odbc:///?odbc_connect={quote(RAW, safe='')}").dialect
    echoed = pyodbc.Error("28000", "[28000] Login failed; password was s3;cr}t")
    error = dialect.connect_error(echoed)
    assert "s3;cr}t" not in str(error) and "s3;cr}t" not in str(error.orig)
    assert str(error).startswith("Cannot connect to odbc at tcp:sql.example.com,1433/shop: ")


def test_make_url_hides_a_password_inside_a_query_value() -> None:
    url = make_url(f"odbc:///?odbc_connect={quote(RAW, safe='')}&sslpassword=k3y")
    assert "s3" not in str(url) and "k3y" not in str(url)
    assert url.query["sslpassword"] == "k3y"
    assert make_url(url.render_as_string(hide_password=False)) == url


def test_dialect_classes(make: Any) -> None:
    assert type(make("mssql://h").dialect) is MSSQLDialect
    assert type(make("mssql+pyodbc://h").dialect) is MSSQLDialect
    assert type(make("odbc://h?driver=X").dialect) is ODBCDialect
    assert type(make("odbc+pyodbc://h?driver=X").dialect) is ODBCDialect
    for url in ("mssql://h", "odbc://h?driver=X"):
        dialect = make(url).dialect
        assert dialect.paramstyle == "qmark" and dialect.driver == "pyodbc"


@settings(max_examples=300, deadline=None)
@given(
    password=st.text().map(lambda s: "PW-" + s),
    key=st.sampled_from(["PWD", "pwd", "Password", "KeystoreSecret"]),
    before=st.lists(st.tuples(_keys, st.text().filter(lambda s: "PW-" not in s)), max_size=3),
    after=st.lists(st.tuples(_keys, st.text().filter(lambda s: "PW-" not in s)), max_size=3),
)
def test_hide_secrets_masks_any_password_in_a_connection_string(
    password: str,
    key: str,
    before: list[tuple[str, str]],
    after: list[tuple[str, str]],
) -> None:
    from dbpool.url import hide_secrets

    built = build_connection_string([*before, (key, password), *after])
    assert "PW-" not in hide_secrets(built)


@pytest.mark.parametrize(("url", "extra"), [("mssql://h", "mssql"), ("odbc://h?driver=X", "odbc")])
def test_missing_pyodbc_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # makes "import pyodbc" fail
    with pytest.raises(ConfigError, match=re.escape(f'pip install "dbpool[{extra}]"')):
        dbpool.create_engine(url)
