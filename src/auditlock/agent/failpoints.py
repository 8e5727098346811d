"""Crash points for the crash-matrix tests: `AUDITLOCK_FAILPOINT=<name>:<n>` SIGKILLs the agent at the n-th hit.

In the manner of etcd's gofail / TiKV's fail-rs: the process really dies at a precise step (no mocks), and the
test restarts it and checks the archive. Unset (production), `hit()` is one dict lookup.

Pause points make a moment observable instead: `AUDITLOCK_PAUSEPOINT=<name>:<ready file>` writes the agent's pid
to the ready file when it reaches `<name>` (see `PAUSE_NAMES`), then waits until a signal arrives (at most
`PAUSE_MAX_S`), so a test can signal the agent at exactly that point without sleeping.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

NAMES = ("after_ledger_intent", "before_put", "after_put", "before_digest_put", "after_ledger_confirmed",
         "during_delete", "before_ledger_clear")


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("AUDITLOCK_FAILPOINT")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in NAMES:
        raise ValueError(f"AUDITLOCK_FAILPOINT names no failpoint {name!r}; known: {', '.join(NAMES)}")
    return name, int(count or "1")


_ARMED = _armed()
PAUSE_NAMES = ("startup",)  # startup: signal handlers installed, heavy imports not yet done
PAUSE_MAX_S = 120.0
_hits: dict[str, int] = {}


def hit(name: str) -> None:
    """Count a pass through `name`; SIGKILL this process when it is the armed point's n-th pass."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def pause(name: str, until: Callable[[float], object]) -> None:
    """At pause point `name`, if armed: write the pid to the ready file, then `until(PAUSE_MAX_S)` returns."""
    spec = os.environ.get("AUDITLOCK_PAUSEPOINT")
    if not spec:
        return
    point, _, ready_file = spec.partition(":")
    if point not in PAUSE_NAMES or not ready_file:
        raise ValueError(f"AUDITLOCK_PAUSEPOINT must be <name>:<ready file> with a name of {', '.join(PAUSE_NAMES)}")
    if point == name:
        Path(ready_file).write_text(f"{os.getpid()}\n")
        until(PAUSE_MAX_S)
