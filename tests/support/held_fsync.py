"""An `os.fdatasync` whose first call is held until a condition holds — the disk being slow while other threads
append — and then runs for real or fails with EIO, as a failing disk would. Every call is recorded.

Installed with `monkeypatch.setattr(os, "fdatasync", HeldFdatasync(...))`; the file writes themselves are real.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import Any

from tests.support.waiting import wait_for

HOLD_TIMEOUT_S = 30.0


class HeldFdatasync:
    """fdatasync: the first call waits for `release()` to be true, then calls the real one (or raises EIO when
    `fail_first`); later calls run through."""

    def __init__(self, release: Callable[[], bool], *, fail_first: bool = False) -> None:
        self._real = os.fdatasync
        self._release = release
        self._fail_first = fail_first
        self._lock = threading.Lock()
        self.calls: list[int] = []  # the descriptor of every call, in order

    def __call__(self, fd: int) -> None:
        with self._lock:
            self.calls.append(fd)
            first = len(self.calls) == 1
        if first:
            wait_for(self._release, HOLD_TIMEOUT_S, "the other threads appended while the first fdatasync ran")
            if self._fail_first:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        self._real(fd)


def emit_from_threads(core: Any, count: int, *, after_call: Callable[[], object] | None = None) -> list[Any]:
    """`count` threads each emit one order.updated event through `core` at once; per thread, the record its call
    returned or the exception it raised. `after_call` runs in each thread as soon as its call returned."""
    import auditlock

    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def work(index: int) -> None:
        start.wait(timeout=HOLD_TIMEOUT_S)
        try:
            with auditlock.actor(f"user#{index}"):
                results[index] = core.emit("order.updated", {"target_type": "Order", "target_id": index,
                                                             "after": {"status": "paid", "n": index}})
        except Exception as exc:  # the test looks at what each caller got
            results[index] = exc
        if after_call is not None:
            after_call()

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * HOLD_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a logging call did not return"
    return results
