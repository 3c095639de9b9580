"""Database URLs of the form ``dialect[+driver]://user:password@host:port/database?query``.

[`URL`][dbpool.URL] is immutable and hashable; its ``str()`` and ``repr()`` never show the
password, and neither does any error raised while parsing one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from dbpool.exc import ConfigError

__all__ = ["URL", "make_url"]

_DRIVERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\+[A-Za-z0-9_]+)?")
_DIGITS = re.compile(r"[0-9]+")
# Used only to decide what to mask when quoting a bad URL in an error.
_SCHEME_PREFIX = re.compile(r"[A-Za-z0-9_+.\-]*://")
_HOST_AND_PORT = re.compile(r"(?:\[[^\]]*\]|[^:\[\]]*)(?::[0-9]*)?")
_EXPECTED = "expected dialect[+driver]://user:password@host:port/database"
_HOST_FORBIDDEN = frozenset("/?@[]")
_FIELDS = frozenset(("drivername", "username", "password", "host", "port", "database", "query"))
_PASSWORD_HINT = "percent-encode ':', '@', '/', '?' and '%' in the user name and password"
# Query values can carry secrets too: a password parameter (``sslpassword=``) or a raw
# ODBC connection string (``odbc_connect=...;PWD=...``); both are masked when shown.
_SECRET_NAME = re.compile(r"(?i)(?:password|passwd|pwd|secret)$")
_SECRET_IN_VALUE = re.compile(
    r"(?i)((?:^|;)\s*[^;=]*(?:password|passwd|pwd|secret)\s*=)(\{(?:[^}]|\}\})*(?:\}|$)|[^;]*)"
)


def _empty_query() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class URL:
    """An immutable, hashable database URL; parse one with [`make_url`][dbpool.make_url].

    Empty ``username``, ``host`` and ``database`` are stored as None and the
    drivername is lower-cased, so URLs that mean the same compare equal. ``str()`` and
    ``repr()`` show the password as ``***``, and so do password-like query values
    (``sslpassword=``, ``PWD=`` inside ``odbc_connect=``);
    [`render_as_string(hide_password=False)`][dbpool.URL.render_as_string] gives the
    full URL. ``set()``, ``update_query()`` and ``difference_update_query()`` return
    changed copies.

    Attributes:
        drivername: ``dialect[+driver]`` in lower case, e.g. ``"postgresql+psycopg"``.
        username: The user name, percent-decoded, or None.
        password: The password, percent-decoded, or None (an empty password is ``""``).
        host: The host name or address (an IPv6 address without its brackets), or None.
        port: The port, from 1 to 65535, or None for the driver's default.
        database: The database name (for SQLite, the file path), or None.
        query: The query parameters, a read-only mapping of ``str`` to ``str``: pool
            settings and the driver's own parameters.

    Raises:
        ConfigError: When constructed directly with a field of the wrong type or range
            (a port outside 1 to 65535, a host with a ``/`` in it, ...).

    Example:
        ```python
        url = dbpool.make_url("postgresql://app:s%40cret@db:5432/shop?connection_limit=5")
        url.host, url.port, url.password  # ('db', 5432, 's@cret')
        str(url)  # 'postgresql://app:***@db:5432/shop?connection_limit=5'
        url.set(database="other").update_query({"pool_timeout": "2"})
        ```
    """

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: Mapping[str, str] = field(default_factory=_empty_query)

    def __post_init__(self) -> None:
        drivername: object = self.drivername
        if not isinstance(drivername, str):
            raise ConfigError(f"URL drivername must be a str, got {type(drivername).__name__}")
        if not _DRIVERNAME.fullmatch(drivername):
            raise ConfigError(
                f"Invalid URL drivername {drivername!r}: expected dialect[+driver], "
                "e.g. 'postgresql' or 'postgresql+psycopg'"
            )
        object.__setattr__(self, "drivername", drivername.lower())

        for name in ("username", "password", "host", "database"):
            value: object = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                # The value itself is not shown: it may be the password.
                raise ConfigError(f"URL {name} must be a str or None, got {type(value).__name__}")
            _require_utf8(name, value)
            # An empty password is a real credential; the other parts mean "not given".
            if value == "" and name != "password":
                object.__setattr__(self, name, None)

        host = self.host
        if host is not None and any(
            c in _HOST_FORBIDDEN or c.isspace() or not c.isprintable() for c in host
        ):
            raise ConfigError(
                f"Invalid URL host {host!r}: a host cannot contain whitespace or any of "
                "'/', '?', '@', '[', ']'"
            )

        port: object = self.port
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int):
                raise ConfigError(f"URL port must be an int or None, got {type(port).__name__}")
            if not 1 <= port <= 65535:
                raise ConfigError(f"URL port {port} is out of range: expected 1 to 65535")

        query: object = self.query
        if not isinstance(query, Mapping):
            raise ConfigError(f"URL query must be a mapping, got {type(query).__name__}")
        items: dict[str, str] = {}
        for key, value in query.items():
            if not isinstance(key, str) or not key:
                raise ConfigError("URL query parameter names must be non-empty strings")
            _require_utf8("query parameter name", key)
            if not isinstance(value, str):
                raise ConfigError(
                    f"URL query parameter {key!r} must have a str value, "
                    f"got {type(value).__name__}"
                )
            _require_utf8(f"query parameter {key!r}", value)
            items[key] = value
        # A private copy, so a caller mutating its dict cannot change a URL.
        object.__setattr__(self, "query", MappingProxyType(items))

    @property
    def backend_name(self) -> str:
        """The dialect: the drivername before ``+`` (``postgresql`` for ``postgresql+psycopg``)."""
        return self.drivername.partition("+")[0]

    @property
    def driver(self) -> str | None:
        """The driver named after ``+`` (``psycopg``), or None when the URL names none."""
        return self.drivername.partition("+")[2] or None

    def render_as_string(self, hide_password: bool = True) -> str:
        """The URL as text, with the password hidden unless asked for.

        Args:
            hide_password: Show the password, and password-like query values, as ``***``.
                Pass False only to hand the URL to something that connects.

        Returns:
            The URL, percent-encoded so that [`make_url`][dbpool.make_url] parses it back
            to an equal URL (when the password is not hidden).
        """
        parts = [self.drivername, "://"]
        if self.username is not None or self.password is not None:
            if self.username is not None:
                parts.append(quote(self.username, safe=""))
            if self.password is not None:
                parts.append(":")
                parts.append("***" if hide_password else quote(self.password, safe=""))
            parts.append("@")
        if self.host is not None:
            parts.append(f"[{self.host}]" if ":" in self.host else self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.database is not None:
            # Only '?' and '%' are special in the path; keep file paths readable.
            parts.append("/" + quote(self.database, safe="/:@+,="))
        if self.query:
            items = list(self.query.items())
            if hide_password:
                items = [
                    (k, "***" if _SECRET_NAME.search(k) else hide_secrets(v)) for k, v in items
                ]
            parts.append("?" + urlencode(items))
        return "".join(parts)

    def __str__(self) -> str:
        return self.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"URL({self.render_as_string(hide_password=True)!r})"

    def _parts(self) -> tuple[Any, ...]:
        """Every field but the query, in the constructor's order."""
        return (self.drivername, self.username, self.password, self.host, self.port, self.database)

    def _key(self) -> tuple[Any, ...]:
        return (*self._parts(), tuple(sorted(self.query.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URL):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[type[URL], tuple[Any, ...]]:
        # A mappingproxy cannot be pickled or deep-copied; rebuild from a plain dict.
        return (type(self), (*self._parts(), dict(self.query)))

    def set(self, **changes: Any) -> URL:
        """A copy with the given fields replaced, e.g. ``url.set(database="other")``.

        Args:
            **changes: New values for any of ``drivername``, ``username``, ``password``,
                ``host``, ``port``, ``database`` and ``query``.

        Returns:
            The new URL; this one is unchanged.

        Raises:
            TypeError: For a name that is not a field of the URL.
            ConfigError: For a value of the wrong type or range.
        """
        unknown = sorted(changes.keys() - _FIELDS)
        if unknown:
            raise TypeError(f"URL.set() got unknown field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def update_query(self, mapping: Mapping[str, str]) -> URL:
        """A copy with the query parameters in ``mapping`` added or replaced.

        Args:
            mapping: Parameter names and their new values, both ``str``.

        Returns:
            The new URL; this one is unchanged.

        Raises:
            ConfigError: For a name or value that is not a ``str``.
        """
        return dataclasses.replace(self, query={**self.query, **mapping})

    def difference_update_query(self, names: Iterable[str]) -> URL:
        """A copy without the query parameters in ``names``.

        Args:
            names: The parameters to drop (a single ``str`` is one name); names the query
                does not have are ignored.

        Returns:
            The new URL; this one is unchanged.
        """
        # A bare str would otherwise be taken as a sequence of one-letter names.
        drop = frozenset((names,) if isinstance(names, str) else names)
        return dataclasses.replace(
            self, query={k: v for k, v in self.query.items() if k not in drop}
        )


def hide_secrets(text: str) -> str:
    """Mask the secrets of a connection string.

    Args:
        text: A connection string, such as an ODBC ``odbc_connect=`` value.

    Returns:
        ``text`` with the value of each ``...PWD=``, ``...Password=`` or ``...Secret=``
        pair (braced or not) shown as ``***``.
    """
    return _SECRET_IN_VALUE.sub(r"\1***", text)


def make_url(name_or_url: str | URL) -> URL:
    """Parse a database URL, ``dialect[+driver]://user:password@host:port/database?query``.

    User name and password are percent-decoded (write ``%40`` for an ``@`` in a
    password); IPv6 hosts are written in brackets (``[::1]:5432``); SQLite takes
    ``sqlite:///relative.db``, ``sqlite:////absolute.db`` and ``sqlite://`` (in memory).

    Args:
        name_or_url: The URL as text; a [`URL`][dbpool.URL] is returned as it is.

    Returns:
        The parsed, immutable URL.

    Raises:
        ConfigError: For anything that is not a valid URL: no ``://``, a bad port, a
            query parameter given twice, ... The message never shows the password.

    Example:
        ```python
        url = dbpool.make_url("postgresql+psycopg://app:s%40cret@[::1]:5432/shop")
        url.backend_name, url.driver, url.host  # ('postgresql', 'psycopg', '::1')
        print(url)  # postgresql+psycopg://app:***@[::1]:5432/shop
        ```
    """
    if isinstance(name_or_url, URL):
        return name_or_url
    if not isinstance(name_or_url, str):
        raise ConfigError(
            "Could not parse a database URL from an object of type "
            f"{type(name_or_url).__name__}: expected a str or URL"
        )
    return _parse(name_or_url)


def _parse(raw: str) -> URL:
    text = raw.strip()
    if not text:
        raise ConfigError(f"Could not parse a database URL from an empty string: {_EXPECTED}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise _error(text, _EXPECTED)
    if not _DRIVERNAME.fullmatch(scheme):
        raise _error(text, f"invalid dialect[+driver] name before '://'; {_EXPECTED}")

    rest, _, query_string = rest.partition("?")
    authority, _, path = rest.partition("/")
    # The last '@' ends the userinfo, so a raw '@' in a password still works.
    userinfo, at, hostport = authority.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user)
        if colon:
            password = unquote(secret)

    host, port = _parse_hostport(text, hostport)
    query = _parse_query(query_string)
    try:
        return URL(scheme, username, password, host, port, unquote(path), query)
    except ConfigError as exc:
        raise _error(text, str(exc)) from None


def _parse_hostport(text: str, hostport: str) -> tuple[str | None, int | None]:
    port_text: str | None
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise _error(text, "missing ']' after the IPv6 host")
        if after and not after.startswith(":"):
            raise _error(text, "unexpected text after the IPv6 host; expected ']:port'")
        port_text = after[1:] if after else None
    else:
        if hostport.count(":") > 1:
            # Without an '@' this may be "user:password" with the host left out: not echoed.
            raise ConfigError(
                "Could not parse a database URL: the host part contains more than one ':'; "
                f"write IPv6 hosts in brackets, e.g. [::1]:5432, and {_PASSWORD_HINT}"
            )
        host, colon, after = hostport.partition(":")
        port_text = after if colon else None
    port = None if port_text is None else _parse_port(port_text, host)
    return host or None, port


def _parse_port(port_text: str, host: str) -> int:
    for_host = f" for host {host!r}" if host else ""
    if _DIGITS.fullmatch(port_text):
        # Bounded before int(): huge digit strings are slow and may exceed int's limit.
        if len(port_text) <= 5 and 1 <= int(port_text) <= 65535:
            return int(port_text)
        shown = port_text if len(port_text) <= 10 else port_text[:10] + "..."
        reason = f"port {shown}{for_host} is out of range: expected 1 to 65535"
    elif not port_text:
        reason = f"the port{for_host} is empty after ':'; expected an integer from 1 to 65535"
    else:
        # Without an '@', "user:password" parses as host:port, so the value is never echoed.
        reason = (
            f"the port{for_host} is not a number (not shown, as it may be a password); "
            f"expected an integer from 1 to 65535, and {_PASSWORD_HINT}"
        )
    raise ConfigError(f"Could not parse a database URL: {reason}")


def _parse_query(query_string: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key in result:
            # Values are not echoed: a query may carry credentials too.
            raise ConfigError(
                f"Could not parse a database URL: query parameter {key!r} is given more than once"
            )
        result[key] = value
    return result


def _error(text: str, reason: str) -> ConfigError:
    return ConfigError(f"Could not parse a database URL from {_mask_password(text)!r}: {reason}")


def _mask_password(text: str) -> str:
    """``text`` with anything that may be a password replaced by ``***``.

    That is the span from the first ':' after ``scheme://`` to the last '@'. Without an
    '@', an authority that is not plainly ``host[:port]`` is masked after its first ':',
    as a forgotten '@' or host leaves ``user:password`` where the host belongs. Without
    a ``scheme://`` prefix, everything after the first ':' is suspect.
    """
    prefix = _SCHEME_PREFIX.match(text)
    start = prefix.end() if prefix else 0
    colon = text.find(":", start)
    if colon < 0:
        return text
    at = text.rfind("@")
    if at > colon:
        return f"{text[: colon + 1]}***{text[at:]}"
    if prefix is None:
        return f"{text[: colon + 1]}***"
    end = len(text)
    for delimiter in "/?":
        found = text.find(delimiter, start)
        if found >= 0:
            end = min(end, found)
    if colon > end or _HOST_AND_PORT.fullmatch(text, start, end):
        return text
    return f"{text[: colon + 1]}***{text[end:]}"


def _require_utf8(what: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"URL {what} is not valid text: it contains an unpaired surrogate"
        ) from None
