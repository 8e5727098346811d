"""SIGTERM/SIGINT from the first moment of `auditlock agent`: recorded before the heavy imports, replayed later.

Importing boto3, watchfiles and prometheus-client takes seconds on a loaded node. A signal in that window used to
kill the agent with Python's default action, without a drain. `install_early()` is the first thing the command
does (this module imports only the standard library); the `Agent` then replays what arrived (`take_early()`):
the long-running agent drains as on any SIGTERM, `--once` exits without starting. What is left uncovered is the
interpreter's own start and the `auditlock` package import that precede the command (a fraction of a second).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT)

_received: list[int] = []
_arrived = threading.Event()
_installed = threading.Event()


def install_early() -> None:
    """Record SIGTERM/SIGINT from now on, until the agent installs its own handlers."""
    _received.clear()
    _arrived.clear()
    for signum in HANDLED:
        signal.signal(signum, _record)
    _installed.set()


def _record(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    _arrived.set()


def wait_early(timeout: float) -> bool:
    """Wait until a recorded signal arrives (the start-up pause point of the tests); False on timeout."""
    return _arrived.wait(timeout)


def take_early() -> list[int]:
    """The signals received before the agent's own handlers were installed (then forgotten)."""
    received = list(_received)
    _received.clear()
    _arrived.clear()
    return received


def restore_defaults() -> None:
    """Python's default actions again, if `install_early` ran (`--once` after its start: a signal ends it)."""
    if not _installed.is_set():
        return
    _installed.clear()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
