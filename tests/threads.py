"""Test code run in many threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_threads(count: int, work: Callable[[int], object]) -> None:
    """Run ``work(number)`` for numbers 0 to count - 1, each in its own thread, all released
    together; fail if one hangs, or with the first error one raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(number: int) -> None:
        try:
            start.wait()
            work(number)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[0]


def in_other_thread(fn: Callable[[], object], timeout: float = 60) -> BaseException | None:
    """Run ``fn`` in a new thread and wait for it; the exception it raised, or None."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn!r} still running after {timeout} s"
    return raised[0] if raised else None
