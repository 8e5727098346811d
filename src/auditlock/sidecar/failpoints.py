"""Crash points for kill tests: `<ENV>=<name>:<n>` SIGKILLs the process at the n-th pass through `<name>`.

In the manner of etcd's gofail / TiKV's fail-rs: the process really dies at a precise step (no mocks), and the
test restarts it and checks what survived. Read once, at import: unset (production), `hit()` is one comparison.
Each sidecar has its own variable and names (`agent.failpoints`, `capture.failpoints`).
"""

from __future__ import annotations

import os
import signal


class Failpoints:
    """The crash points of one process kind, armed from the environment variable `env`."""

    def __init__(self, env: str, names: tuple[str, ...]) -> None:
        self.env = env
        self.names = names
        self._armed = self._read()
        self._hits: dict[str, int] = {}

    def _read(self) -> tuple[str, int] | None:
        spec = os.environ.get(self.env)
        if not spec:
            return None
        name, _, count = spec.partition(":")
        if name not in self.names:
            raise ValueError(f"{self.env} names no failpoint {name!r}; known: {', '.join(self.names)}")
        return name, int(count or "1")

    def hit(self, name: str) -> None:
        """Count a pass through `name`; SIGKILL this process when it is the armed point's n-th pass."""
        if self._armed is None or self._armed[0] != name:
            return
        self._hits[name] = self._hits.get(name, 0) + 1
        if self._hits[name] >= self._armed[1]:
            os.kill(os.getpid(), signal.SIGKILL)
