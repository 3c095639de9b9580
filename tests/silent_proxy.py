"""A loopback TCP proxy for tests that can go silent: a network partition on demand.

``SilentProxy(host, port)`` listens on 127.0.0.1 (an ephemeral port) and forwards each
accepted connection to the server at ``host:port``. ``silence()`` stops forwarding in
both directions while keeping every socket open, as a partition or a frozen middlebox
does: nothing is refused or reset, bytes simply stop arriving. What is read meanwhile is
held and delivered, in order, after ``resume()``. ``silence(new=False)`` silences only
the connections open at that moment (a middlebox that lost their state) and lets new
ones through.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from types import TracebackType


class _Link:
    """One client connection and its upstream, each direction pumped by a thread."""

    def __init__(self, client: socket.socket, upstream: socket.socket, silent: bool) -> None:
        self.client = client
        self.upstream = upstream
        self.flowing = threading.Event()
        if not silent:
            self.flowing.set()
        self.closed = False
        self.threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True,
                             name="silent-proxy-up"),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True,
                             name="silent-proxy-down"),
        ]  # fmt: skip
        for thread in self.threads:
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                self.flowing.wait()  # silent: hold what came in until resume()
                if self.closed:
                    return
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        for sock in (self.client, self.upstream):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class SilentProxy:
    """Forwards 127.0.0.1:<port> to ``host:port`` until told to go silent."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._silent_new = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="silent-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._stopped:
                    client.close()
                    upstream.close()
                    return
                self._links.append(_Link(client, upstream, self._silent_new))

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    def silence(self, *, new: bool = True) -> None:
        """Stop forwarding on every open connection, and on new ones unless ``new=False``."""
        with self._lock:
            self._silent_new = new
            for link in self._links:
                link.flowing.clear()

    def resume(self) -> None:
        """Forward again, delivering what was held."""
        with self._lock:
            self._silent_new = False
            for link in self._links:
                link.flowing.set()

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            links, self._links = self._links, []
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self._listener.close()
        for link in links:
            link.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SilentProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
