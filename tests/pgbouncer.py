"""PgBouncer (transaction mode unless asked otherwise) in front of the test PostgreSQL server.

``start(upstream_url)`` writes a config into a private temporary directory, starts
``pgbouncer`` on a free loopback port and waits until it accepts connections; ``stop()``
ends it and removes the directory. Clients log in with scram-sha-256 against PgBouncer's
own user list (so a wrong password is refused, whatever the server's pg_hba.conf says);
PgBouncer then connects to the server as the same user with the same password.

PgBouncer refuses to run as root: under root it is started with ``-u postgres`` and its
directory belongs to that user.

Set ``DBPOOL_TEST_PGBOUNCER_URL`` to use a PgBouncer you run yourself instead (transaction
mode, in front of the test database).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dbpool import make_url

# Few server connections, so tests can have many more clients than servers.
POOL_SIZE = 2
POOL_MODES = ("session", "transaction", "statement")
RUN_AS = "postgres"  # the user PgBouncer switches to when started as root


class PgBouncerUnavailable(RuntimeError):
    """PgBouncer is not installed or would not start (the message says why)."""


def free_port() -> int:
    """A loopback TCP port with nothing listening on it (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary() -> str | None:
    """Where the pgbouncer program is (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """The client URL, without ``pgbouncer=true`` (tests add it, or show why it's needed)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """PgBouncer's admin console (SHOW POOLS, SHOW SERVERS, ...)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/pgbouncer"

    def log(self) -> str:
        try:
            return (self.directory / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Settings:
    """What a pgbouncer.ini made by ``start(config=...)`` must use: the server, the port
    to listen on (loopback), the private directory (``userlist.txt`` with the user's
    password in plain text is there; log and pid files go there too) and the user (an
    admin) with its password. The config function may write more files there."""

    upstream_host: str
    upstream_port: int
    port: int
    directory: Path
    user: str
    password: str


def _config(
    upstream_host: str,
    upstream_port: int,
    port: int,
    directory: Path,
    user: str,
    *,
    pool_mode: str,
    pool_size: int,
    max_client_conn: int,
) -> str:
    return f"""\
[databases]
* = host={upstream_host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
pool_mode = {pool_mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {max_client_conn}
auth_type = scram-sha-256
auth_file = {directory}/userlist.txt
admin_users = {user}
logfile = {directory}/pgbouncer.log
log_connections = 0
log_disconnections = 0
query_wait_timeout = 60
# Check a server connection before every reuse: other tests restart PostgreSQL.
server_check_delay = 0
"""


def start(
    upstream_url: str,
    *,
    pool_mode: str = "transaction",
    pool_size: int = POOL_SIZE,
    max_client_conn: int = 500,
    config: Callable[[Settings], str] | None = None,
    attempts: int = 3,
) -> PgBouncer:
    """Start PgBouncer in front of ``upstream_url``'s server; raise PgBouncerUnavailable.

    ``pool_mode`` is PgBouncer's (session, transaction or statement), ``pool_size`` its
    ``default_pool_size`` (server connections per user and database), ``max_client_conn``
    how many clients it accepts. ``config``, if given, makes the whole pgbouncer.ini
    instead (the other keywords are then unused) from the values that must be these:
    see :class:`Settings` (the example configuration's test uses it).
    """
    if pool_mode not in POOL_MODES:
        raise ValueError(f"pool_mode must be one of {', '.join(POOL_MODES)}, not {pool_mode!r}")
    program = binary()
    if program is None:
        raise PgBouncerUnavailable("pgbouncer is not installed (apt-get install pgbouncer)")
    upstream = make_url(upstream_url)
    user = upstream.username or "postgres"
    # The server may want a password; PgBouncer logs in with the one from its user list.
    password = upstream.password or secrets.token_hex(12)
    command = [program]
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PgBouncerUnavailable(
                f"running as root, and there is no {RUN_AS!r} user for PgBouncer to run as"
            ) from None
        command += ["-u", RUN_AS]
    last_log = ""
    for _ in range(attempts):
        directory = Path(tempfile.mkdtemp(prefix="dbpool-pgbouncer-"))
        port = free_port()
        ini = directory / "pgbouncer.ini"
        if config is not None:
            upstream_host = upstream.host or "127.0.0.1"
            upstream_port = upstream.port or 5432
            settings = Settings(upstream_host, upstream_port, port, directory, user, password)
            ini.write_text(config(settings))
        else:
            ini.write_text(
                _config(
                    upstream.host or "127.0.0.1",
                    upstream.port or 5432,
                    port,
                    directory,
                    user,
                    pool_mode=pool_mode,
                    pool_size=pool_size,
                    max_client_conn=max_client_conn,
                )
            )
        (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
        for path in (directory, ini, directory / "userlist.txt"):
            path.chmod(0o700 if path.is_dir() else 0o600)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        process = subprocess.Popen(
            [*command, str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bouncer = PgBouncer(process, directory, port, user, password, upstream.database or "")
        if _wait_until_listening(bouncer, timeout=15):
            return bouncer
        last_log = bouncer.log()
        bouncer.stop()  # most likely the port was taken in the meantime: try another
    raise PgBouncerUnavailable(f"pgbouncer did not start; its log ends with:\n{last_log[-2000:]}")


def _wait_until_listening(bouncer: PgBouncer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bouncer.process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", bouncer.port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False
