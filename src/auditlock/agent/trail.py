"""The agent's own audit events: what it did to the trail that an auditor must be able to see.

- `auditlock.retention_floored` — an events object was locked to the floor (`layout.LATE_LOCK_FLOOR` from the
  PUT) because its class's retention had already ended, or nearly, when it was shipped. Payload: `key`,
  `retention` (class), `retain_until` (what it got), `class_retain_until` (what the class asked for), `events`.
- `auditlock.batch_set_aside` — S3 permanently rejected an object of a batch; the batch's segments were moved
  to `quarantine/` instead of being retried forever. Payload: `key`, `code`, `reason`, `segments`.
- `auditlock.spool_rewritten` — a segment disagreed with what the agent's witness saw, or a witnessed segment
  vanished (`agent.witness_guard`); it was set aside. Payload: `finding` (`rewritten before shipping` or
  `witnessed segment missing`), `segment`, `detail`, `writer`, `witnessed_seq`, `witnessed_hash`,
  `witnessed_bytes` (the head of what the witness saw).

They are written like any application's events: through auditlock's own core (`AuditCore`), with a spool
writer of the agent's own (its own writer id and chain) into the spool the agent ships, and shipped with the
next batch. The writer closes after every event (a `auditlock.writer_closed` record, then sealed), so the
event ships at once and the agent's chain always ends cleanly; the next event continues the same chain in a
new segment. The core writes with `durability = "sync"`, `on_error = "raise"`, no targets and no hmac key (the
agent's records hold no record values, and the agent needs no hmac key to ship).

A record that cannot be written (spool full, I/O error) is logged at ERROR and does not stop shipping: what it
reports is also in the agent's log and metrics, and the objects themselves carry their lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from auditlock.agent.batch import ArchiveObject
from auditlock.agent.metrics import AgentMetrics
from auditlock.archive import layout
from auditlock.config.model import Config, HmacConfig, RetentionClass
from auditlock.errors import EventError, SpoolError
from auditlock.handler import event_types
from auditlock.handler.core import AuditCore

log = logging.getLogger("auditlock.agent")

RETENTION_FLOORED = "auditlock.retention_floored"
BATCH_SET_ASIDE = "auditlock.batch_set_aside"
SPOOL_REWRITTEN = "auditlock.spool_rewritten"
PAYLOAD_FIELDS = {
    SPOOL_REWRITTEN: frozenset({"finding", "segment", "detail", "writer", "witnessed_seq", "witnessed_hash",
                                "witnessed_bytes"}),
    RETENTION_FLOORED: frozenset({"key", "retention", "retain_until", "class_retain_until", "events"}),
    BATCH_SET_ASIDE: frozenset({"key", "code", "reason", "segments"}),
}


def trail_config(config: Config) -> Config:
    """The config the agent's core writes with (see the module docstring)."""
    return replace(config, spool=replace(config.spool, durability="sync", on_error="raise"), hmac=HmacConfig(),
                   targets=MappingProxyType({}))


class AgentTrail:
    """Writes the agent's own audit events into the spool it ships."""

    def __init__(self, config: Config) -> None:
        for event_type, fields in PAYLOAD_FIELDS.items():
            event_types.register_standard_fields(event_type, fields)
        self.actor_id = f"svc:{config.service}-agent"
        self.core = AuditCore(trail_config(config))  # its writer is created on the first event

    def record(self, event_type: str, **payload: Any) -> None:
        """Write one event durably and seal it so it ships with the next batch; log if that fails."""
        try:
            self.core.emit(event_type, {"actor_id": self.actor_id, "payload": payload})
            self.core.writer.close()
        except (SpoolError, EventError) as exc:
            log.error("auditlock agent: could not record %s in the audit trail: %s", event_type, exc)


class FlooredObjects:
    """The uploader's `on_floored`: counts, logs and records every events object locked to the floor."""

    def __init__(self, metrics: AgentMetrics, trail: AgentTrail, classes: Mapping[str, RetentionClass]) -> None:
        self.metrics = metrics
        self.trail = trail
        self.classes = classes

    def __call__(self, obj: ArchiveObject, until: dt.datetime) -> None:
        """Report one floored object (a digest follows the objects it lists, so only events objects count)."""
        if obj.content_type != layout.CONTENT_TYPE:
            return
        class_until = layout.retain_until(obj.last_occurred_at, self.classes[obj.retention].days)
        self.metrics.objects_retention_floored.inc()
        log.warning("auditlock agent: %s shipped late: class %r asked for retain-until %s, less than %s from "
                    "now; locked until %s instead", obj.key, obj.retention, _iso(class_until),
                    layout.LATE_LOCK_FLOOR, _iso(until))
        self.trail.record(RETENTION_FLOORED, key=obj.key, retention=obj.retention, retain_until=_iso(until),
                          class_retain_until=_iso(class_until), events=obj.events)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
