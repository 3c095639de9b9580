"""Before-exit hooks: an engine's last words, said while it can still run queries.

``engine.before_exit(fn)`` adds ``fn`` to the engine's ``ExitHooks`` and registers
the engine here. Hooks run when the engine is disposed; for the engines registered here
that also happens when the interpreter exits normally (``atexit``) and on SIGINT or
SIGTERM. Registered engines are held weakly: an engine that is garbage-collected is gone
with its hooks.

The signal handlers are installed only once some engine has hooks, and only from the
main thread (Python allows no other). A handler disposes every registered engine (hooks
first) and then does what the signal would have done without dbpool: it calls the
handler it replaced, or, where that was the default action, restores the default and
raises the signal again, so the process stops as before, exit status included. A signal
that was ignored (SIG_IGN) or handled outside Python is left alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbpool.engine import Engine

logger = logging.getLogger("dbpool")

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()
_atexit_installed = False
_previous: dict[int, Any] = {}  # signal number -> the handler ours replaced
_handling: set[int] = set()  # signals whose disposal is under way
_finished_elsewhere: set[int] = set()  # ... done in a helper thread: chain on redelivery


class ExitHooks:
    """One engine's before-exit hooks, in the order they were added.

    ``due`` says whether they should run at the next disposal: true until they have run,
    and again after a hook is added. The engine also runs them when it has been used
    since they last ran.
    """

    __slots__ = ("_fns", "_running", "due")

    def __init__(self) -> None:
        self._fns: tuple[Callable[[], object], ...] = ()
        self._running = threading.Lock()
        self.due = True

    def __bool__(self) -> bool:
        return bool(self._fns)

    def add(self, fn: Callable[[], object]) -> None:
        """Add a hook, to run after those already added; the hooks are due again."""
        self._fns = (*self._fns, fn)
        self.due = True

    def run(self, owner: object) -> None:
        """Call every hook; one that raises is logged and the rest still run.

        Args:
            owner: The engine, for the log line of a hook that raised.
        """
        # Never re-entered: a hook may dispose its own engine, and a signal may arrive
        # while another thread is running them.
        if not self._running.acquire(blocking=False):
            return
        try:
            self.due = False
            for fn in self._fns:
                try:
                    fn()
                except Exception:
                    logger.exception(
                        "before_exit hook %r of %r raised; the other hooks and the disposal go on",
                        fn,
                        owner,
                    )
        finally:
            self._running.release()


def register(engine: Engine) -> None:
    """Dispose an engine (running its hooks) at exit and on SIGINT/SIGTERM.

    Args:
        engine: The engine; held weakly.
    """
    global _atexit_installed
    with _lock:
        _engines.add(engine)
        if not _atexit_installed:
            atexit.register(dispose_all)
            _atexit_installed = True
    if threading.current_thread() is threading.main_thread():
        _install_signal_handlers()


def dispose_all() -> None:
    """Dispose every registered engine; a failure is logged and the others still go."""
    with _lock:
        engines = list(_engines)
    for engine in engines:
        try:
            engine.dispose()
        except Exception:
            logger.exception("disposing %r at exit failed", engine)


def _install_signal_handlers() -> None:
    for signum in SIGNALS:
        if signum in _previous:
            continue
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN or current is None or current is _on_signal:
            continue
        try:
            signal.signal(signum, _on_signal)
        except (OSError, ValueError):  # e.g. an embedded interpreter that forbids it
            continue
        _previous[signum] = current


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if signum in _finished_elsewhere:
        _finished_elsewhere.discard(signum)
        _chain(signum, frame)
        return
    if signum in _handling:  # sent again while the hooks run: the sender insists
        _chain(signum, frame)
        return
    _handling.add(signum)
    if _is_default_action(signum):
        # Give the signal back to the kernel now: a second one stops the process at once,
        # and raising it again after the disposal ends the process from whichever thread
        # does it. Sent back to the main thread instead, it could land just as that thread
        # enters a blocking call, and Python would run no handler until the call returned.
        signal.signal(signum, signal.SIG_DFL)
    if _inside_dbpool(frame):
        # This thread was stopped inside dbpool, perhaps holding a pool lock that the
        # hooks and the disposal need: do them in another thread, let this one go on to
        # release it, and pass the signal on once they are done. That can happen anywhere
        # after the disposal, even before a waiter it woke has raised.
        threading.Thread(
            target=_dispose_then_resend, args=(signum,), name="dbpool-before-exit", daemon=True
        ).start()
        return
    try:
        dispose_all()
    finally:
        _handling.discard(signum)
    _chain(signum, frame)


def in_dbpool(frame: FrameType) -> bool:
    """Whether a frame runs dbpool's own code.

    Args:
        frame: A stack frame.

    Returns:
        True when its code is in the dbpool package.
    """
    return frame.f_code.co_filename.startswith(_PACKAGE_DIR)


def _inside_dbpool(frame: FrameType | None) -> bool:
    while frame is not None:
        if in_dbpool(frame):
            return True
        frame = frame.f_back
    return False


def _dispose_then_resend(signum: int) -> None:
    try:
        dispose_all()
    finally:
        _handling.discard(signum)
        if _is_default_action(signum):
            signal.raise_signal(signum)  # the default action since _on_signal: the end
        _finished_elsewhere.add(signum)
        main = threading.main_thread().ident
        if hasattr(signal, "pthread_kill") and main is not None:
            signal.pthread_kill(main, signum)  # the main thread runs Python's handlers
        else:
            os.kill(os.getpid(), signum)


def _is_default_action(signum: int) -> bool:
    return not callable(_previous.get(signum, signal.SIG_DFL))


def _chain(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    # The default action, restored by _on_signal: raise the signal again, so the process
    # ends just as it would have without dbpool (killed by that signal).
    signal.raise_signal(signum)
