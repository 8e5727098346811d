"""Crash points of capture's kill tests: `AUDITLOCK_FAILPOINT_CAPTURE=<name>:<n>` SIGKILLs it at the n-th pass
(`sidecar.failpoints`): the process really dies at a precise step between the writes of the exactly-once protocol
(`capture.position`)."""

from __future__ import annotations

from auditlock.sidecar.failpoints import Failpoints

NAMES = ("after_append", "after_flush", "after_position", "after_publish", "after_advance", "mid_transaction")
ENV = "AUDITLOCK_FAILPOINT_CAPTURE"

_POINTS = Failpoints(ENV, NAMES)
hit = _POINTS.hit
