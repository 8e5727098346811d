"""Waiting on a condition with a deadline — the only way tests synchronise."""

from __future__ import annotations

import time
from collections.abc import Callable

# Generous: a wait ends as soon as its condition holds, so the bound only matters when something is wrong, and
# two loaded cores (CI, helpers running suites side by side) can take many seconds to start a subprocess.
DEFAULT_TIMEOUT_S = 60.0


def wait_for(condition: Callable[[], object], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition") -> None:
    """Poll `condition()` until it is truthy; raise AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(delay)  # a poll interval inside a deadline loop, not a synchronising sleep
        delay = min(delay * 2, 0.05)
