"""The one core both adapters share: decide, build and write an `auditlock/1` record.

`AuditProcessor` (structlog) and `AuditHandler` (stdlib logging) only translate their input into
`(event_type, fields)` and call `AuditCore.emit`. Non-allowlisted values are dropped here, before anything is
serialised; `hmac` fields are hashed here.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from auditlock.config.model import Config, TargetConfig
from auditlock.errors import EventError, SpoolError
from auditlock.handler import event_types
from auditlock.handler.context import ACTOR_TYPES, current_actor, infer_actor_type
from auditlock.handler.encode import encode_value, hmac_value
from auditlock.handler.tracing import current_trace_ids
from auditlock.spool.format import SCHEMA
from auditlock.spool.writer import SpoolWriter

log = logging.getLogger("auditlock")

# Keys of a call that describe the event itself; every other key is a payload candidate.
RESERVED_FIELDS = frozenset(
    {"actor_id", "actor_type", "actor_ip", "target_type", "target_id", "before", "after", "payload"}
)
_NO_TARGET = TargetConfig()
_MISSING = object()
_MATCH_CACHE_MAX = 4096

# Hooks of `auditlock.testing.capture_audit_events`: while any is installed, records go there, not to disk.
capture_hooks: list[Callable[[dict[str, Any]], None]] = []


class AuditCore:
    """Turns `(event_type, fields)` into a record and writes it to the spool (or a test capture)."""

    def __init__(self, config: Config, *, writer: SpoolWriter | None = None) -> None:
        self.config = config
        self._hmac_key = config.hmac.load_key() if _uses_hmac(config) else b""
        self._writer = writer
        self._writer_lock = threading.Lock()
        self._host = socket.gethostname()
        self._is_audit: dict[str, bool] = {}
        self._drops = DropCounter()

    @property
    def writer(self) -> SpoolWriter:
        """The spool writer, created on first use (constructing a core does no I/O)."""
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = SpoolWriter(self.config.spool, max_event_bytes=self.config.events.max_event_bytes)
        return self._writer

    @property
    def dropped(self) -> int:
        """Events dropped because the spool could not take them (only with `on_error = "drop"`)."""
        return self._drops.total

    def is_audit_event(self, name: object) -> TypeGuard[str]:
        """Whether an event name matches `[events] include` (cached per name)."""
        if not isinstance(name, str):
            return False
        known = self._is_audit.get(name)
        if known is None:
            if len(self._is_audit) >= _MATCH_CACHE_MAX:
                self._is_audit.clear()
            known = self._is_audit[name] = self.config.events.matches(name)
        return known

    def emit(self, event_type: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Build and write one audit event; returns the record, or None when it was dropped by policy."""
        record = self.build(event_type, fields)
        return self.write(record)

    def build(self, event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The record of an event, chain fields still empty; raises `EventError` on bad input."""
        if not event_types.EVENT_TYPE_PATTERN.match(event_type):
            raise EventError(
                f"event type {event_type!r} is not namespaced lowercase like 'order.updated' or 'auth.login_failed'"
            )
        actor_id, actor_type, actor_ip = _actor_of(event_type, fields)
        target_type, target_id, target = self._target_of(event_type, fields)
        payload = self._payload_of(event_type, fields, target)
        trace_id, span_id = current_trace_ids()
        return {
            "schema": SCHEMA, "event_id": None, "event_type": event_type, "occurred_at": None,
            "actor_id": actor_id, "actor_type": actor_type, "actor_ip": actor_ip,
            "target_type": target_type, "target_id": target_id, "payload": payload,
            "service": self.config.service, "host": self._host,
            "retention": self.config.retention.class_for(event_type, target),
            "trace_id": trace_id, "span_id": span_id,
        }

    def write(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write a built record; on a spool failure raise, or count the drop when `on_error = "drop"`."""
        if capture_hooks:
            for hook in list(capture_hooks):
                hook(record)
            return record
        try:
            self.writer.append(record)
        except SpoolError as exc:
            if self.config.spool.on_error != "drop":
                raise
            self._drops.add(exc)
            return None
        if self._drops.unreported:
            self._report_drops()
        return record

    def _report_drops(self) -> None:
        # Put the fact of the loss into the trail itself, so an auditor sees it, not only an operator.
        report = self._drops.take_report()
        fields = {"actor_id": f"svc:{self.config.service}", **report}
        try:
            self.writer.append(self.build(event_types.EVENTS_DROPPED, fields))
        except SpoolError:
            self._drops.restore(report)

    # --- parts of a record ---------------------------------------------------------------------------

    def _target_of(self, event_type: str, fields: Mapping[str, Any]) -> tuple[str | None, str | None, TargetConfig]:
        target_type = fields.get("target_type")
        target_id = fields.get("target_id")
        if target_type is not None and (not isinstance(target_type, str) or not target_type):
            raise EventError(f"event {event_type!r}: target_type must be a non-empty string, not {target_type!r}")
        if target_id is not None:
            if target_type is None:
                raise EventError(f"event {event_type!r}: target_id {target_id!r} given without target_type")
            if isinstance(target_id, bool) or (not isinstance(target_id, str | int) and not _is_uuid(target_id)):
                raise EventError(f"event {event_type!r}: target_id must be a str, int or UUID, not {target_id!r}")
            target_id = str(target_id)
        target = self.config.targets.get(target_type, _NO_TARGET) if target_type else _NO_TARGET
        return target_type, target_id, target

    def _payload_of(self, event_type: str, fields: Mapping[str, Any], target: TargetConfig) -> dict[str, Any]:
        allowed = target.allowed | event_types.STANDARD_FIELDS.get(event_type, frozenset())
        payload = {}
        for name, value in _payload_candidates(event_type, fields):
            if name in allowed:
                payload[name] = self._field(target, name, value, f"payload.{name}")
        changes = self._changes(event_type, fields, target)
        if changes is not None:
            payload["changes"] = changes
        if event_type == event_types.DATA_ACCESSED and target.sensitive_reads:
            _require_justification(event_type, fields, payload)
        return payload

    def _changes(self, event_type: str, fields: Mapping[str, Any], target: TargetConfig) -> dict[str, Any] | None:
        before, after = fields.get("before"), fields.get("after")
        if before is None and after is None:
            return None
        before, after = _mapping(event_type, "before", before), _mapping(event_type, "after", after)
        changes = {}
        for name in dict.fromkeys([*before, *after]):
            if name not in target.allowed:
                continue
            old, new = before.get(name, _MISSING), after.get(name, _MISSING)
            if old != new:
                path = f"payload.changes.{name}"
                changes[name] = [self._field(target, name, None if old is _MISSING else old, path),
                                 self._field(target, name, None if new is _MISSING else new, path)]
        return changes

    def _field(self, target: TargetConfig, name: str, value: Any, path: str) -> Any:
        encoded = encode_value(value, path)
        return hmac_value(self._hmac_key, encoded) if name in target.hmac else encoded


class DropCounter:
    """Counts events dropped by `on_error = "drop"` and what has not yet been reported in the trail."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.unreported = 0
        self._first: str | None = None
        self._last: str | None = None
        self._reason = ""
        self._last_warning = 0.0

    def add(self, exc: SpoolError) -> None:
        """Count one dropped event; warn at most every 30 s."""
        now = _utc_now()
        with self._lock:
            self.total += 1
            self.unreported += 1
            self._first = self._first or now
            self._last, self._reason = now, str(exc)
            warn = time.monotonic() - self._last_warning >= 30
            if warn:
                self._last_warning = time.monotonic()
        if warn:
            log.error("auditlock: dropping audit events (on_error = drop), %d so far: %s", self.total, exc)

    def take_report(self) -> dict[str, Any]:
        """The payload of an `auditlock.events_dropped` event; resets the unreported count."""
        with self._lock:
            report = {"count": self.unreported, "first_dropped_at": self._first, "last_dropped_at": self._last,
                      "reason": self._reason}
            self.unreported, self._first = 0, None
        return report

    def restore(self, report: dict[str, Any]) -> None:
        """Put a report back when writing it failed."""
        with self._lock:
            self.unreported += report["count"]
            self._first = report["first_dropped_at"]


def _actor_of(event_type: str, fields: Mapping[str, Any]) -> tuple[str, str, str | None]:
    bound = current_actor()
    actor_id = fields.get("actor_id")
    if actor_id is None and bound is not None:
        actor_id, actor_type = bound.id, fields.get("actor_type") or bound.type
    else:
        actor_type = fields.get("actor_type") or (infer_actor_type(actor_id) if isinstance(actor_id, str) else None)
    if not isinstance(actor_id, str) or not actor_id:
        raise EventError(
            f"audit event {event_type!r} has no actor: wrap the code in `with auditlock.actor(\"user#82\")`, "
            "or pass actor_id= (a person, svc:<service> or job:<name>)"
        )
    if actor_type not in ACTOR_TYPES:
        raise EventError(f"event {event_type!r}: actor_type {actor_type!r} is not one of {', '.join(ACTOR_TYPES)}")
    actor_ip = fields.get("actor_ip", bound.ip if bound is not None else None)
    if actor_ip is not None and not isinstance(actor_ip, str):
        raise EventError(f"event {event_type!r}: actor_ip must be a string, not {actor_ip!r}")
    return actor_id, actor_type, actor_ip


def _payload_candidates(event_type: str, fields: Mapping[str, Any]) -> list[tuple[str, Any]]:
    explicit = fields.get("payload")
    pairs = list(_mapping(event_type, "payload", explicit).items()) if explicit is not None else []
    pairs += [(k, v) for k, v in fields.items() if k not in RESERVED_FIELDS and k != "event"]
    return pairs


def _mapping(event_type: str, name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EventError(f"event {event_type!r}: {name}= must be a mapping of field names to values, not {value!r}")
    return value


def _require_justification(event_type: str, fields: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    justification = payload.get("justification")
    if not isinstance(justification, str) or not justification.strip():
        raise EventError(
            f"event {event_type!r} on target {fields.get('target_type')!r} (sensitive_reads = true) needs "
            "justification= saying why the data was read"
        )


def _uses_hmac(config: Config) -> bool:
    return any(target.hmac for target in config.targets.values())


def _is_uuid(value: object) -> bool:
    return type(value).__name__ == "UUID"


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
