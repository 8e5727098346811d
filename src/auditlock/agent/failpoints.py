"""Crash points for the crash-matrix tests: `AUDITLOCK_FAILPOINT=<name>:<n>` SIGKILLs the agent at the n-th hit.

In the manner of etcd's gofail / TiKV's fail-rs: the process really dies at a precise step (no mocks), and the
test restarts it and checks the archive. Unset (production), `hit()` is one dict lookup.
"""

from __future__ import annotations

import os
import signal

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
_hits: dict[str, int] = {}


def hit(name: str) -> None:
    """Count a pass through `name`; SIGKILL this process when it is the armed point's n-th pass."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
