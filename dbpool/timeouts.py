"""What an engine's dialect does when the server does not answer in time.

``validation_timeout`` bounds a pre-ping and ``socket_timeout`` a statement, commit,
rollback or reset. Each dialect enforces them with what its driver offers (see the
dialect modules); this is the part they share: the messages, which name the setting,
its value and where the server is (never the password), the WARNING for each socket
timeout, and the count that ``engine.metrics`` reports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("dbpool")


class Timeouts:
    """One engine's bounds on calls to the server, and how often they ran out."""

    def __init__(self, describe: Callable[[], str], *, socket_timeout: float,
                 validation_timeout: float) -> None:  # fmt: skip
        self._describe = describe  # host:port/database, never a password
        self.socket_timeout = socket_timeout
        self.validation_timeout = validation_timeout
        self._lock = threading.Lock()
        self._socket_timeouts_total = 0

    @property
    def where(self) -> str:
        return self._describe()

    @property
    def socket_timeouts_total(self) -> int:
        """Calls that ran out of ``socket_timeout`` (or the driver's own read/write timeout)."""
        return self._socket_timeouts_total

    def socket_timed_out(self, what: str, *, setting: str = "socket_timeout",
                         seconds: float | None = None) -> str:  # fmt: skip
        """Count a call past its bound, log it, and say so in words for the error."""
        seconds = self.socket_timeout if seconds is None else seconds
        with self._lock:
            self._socket_timeouts_total += 1
        message = no_answer(self.where, setting, seconds, what)
        logger.warning("%s", message)
        return message

    def ping_timed_out(self) -> str:
        """The message for a pre-ping past ``validation_timeout`` (the pool logs and
        counts failed pre-pings itself)."""
        return no_answer(self.where, "validation_timeout", self.validation_timeout, "pre-ping")


def no_answer(where: str, setting: str, seconds: float, what: str) -> str:
    return (
        f"No answer from the server at {where} within {setting}={seconds:g} s ({what}); "
        "the connection has been shut down"
    )
