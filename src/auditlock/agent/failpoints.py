"""Crash points for the crash-matrix tests: `AUDITLOCK_FAILPOINT=<name>:<n>` SIGKILLs the agent at the n-th hit
(`sidecar.failpoints`: the process really dies at a precise step; the test restarts it and checks the archive).

Pause points make a moment observable instead: `AUDITLOCK_PAUSEPOINT=<name>:<ready file>` writes the agent's pid
to the ready file when it reaches `<name>` (see `PAUSE_NAMES`), then waits until a signal arrives (at most
`PAUSE_MAX_S`), so a test can signal the agent at exactly that point without sleeping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from auditlock.sidecar.failpoints import Failpoints

NAMES = ("after_ledger_intent", "before_put", "after_put", "before_digest_put", "after_ledger_confirmed",
         "during_delete", "before_ledger_clear")
_POINTS = Failpoints("AUDITLOCK_FAILPOINT", NAMES)
hit = _POINTS.hit

PAUSE_NAMES = ("startup",)  # startup: signal handlers installed, heavy imports not yet done
PAUSE_MAX_S = 120.0


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
