"""Crash points of capture's kill tests: `AUDITLOCK_FAILPOINT_CAPTURE=<name>:<n>` SIGKILLs it at the n-th pass.

Like `agent.failpoints` (kept apart so capture never imports the agent): the process really dies at a precise step
between the writes of the exactly-once protocol (`capture.position`). Unset, `hit()` is one comparison.
"""

from __future__ import annotations

import os
import signal

NAMES = ("after_append", "after_flush", "after_position", "after_publish", "after_advance", "mid_transaction")
ENV = "AUDITLOCK_FAILPOINT_CAPTURE"


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in NAMES:
        raise ValueError(f"{ENV} names no failpoint {name!r}; known: {', '.join(NAMES)}")
    return name, int(count or "1")


_ARMED = _armed()
_hits: dict[str, int] = {}


def hit(name: str) -> None:
    """Count a pass through `name`; SIGKILL this process at the armed point's n-th pass."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
