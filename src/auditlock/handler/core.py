"""The one core both adapters share: decide, build and write an `auditlock/1` record.

`AuditProcessor` (structlog) and `AuditHandler` (stdlib logging) only translate their input into
`(event_type, fields)` and call `AuditCore.emit`. Non-allowlisted values are dropped here, before anything is
serialised; `hmac` fields are hashed here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from auditlock.config.model import Config
from auditlock.errors import EventError, KeyStoreError, SpoolError
from auditlock.handler import event_types
from auditlock.handler.record import AUDIT_ARGUMENTS, PayloadSealer, RecordBuilder, shown
from auditlock.spool.shutdown import install_sigterm_hook
from auditlock.spool.writer import SpoolWriter

log = logging.getLogger("auditlock")

_MATCH_CACHE_MAX = 4096
_PATTERNS_SHOWN = 10

# Hooks of `auditlock.testing.capture_audit_events`: while any is installed, records go there, not to disk.
capture_hooks: list[Callable[[dict[str, Any]], None]] = []


class AuditCore:
    """Turns `(event_type, fields)` into a record and writes it to the spool (or a test capture)."""

    def __init__(self, config: Config, *, writer: SpoolWriter | None = None) -> None:
        self.config = config
        self._hmac_key_id, self._hmac_key = config.hmac.load_current() if _uses_hmac(config) else (None, b"")
        self._writer = self._attach(writer) if writer is not None else None
        self._writer_lock = threading.Lock()
        self._builder = RecordBuilder(config, self._hmac_key, _sealer(config), hmac_key_id=self._hmac_key_id)
        self._is_audit: dict[str, bool] = {}
        self.known_audit_name = self._is_audit.get  # True, False, or None (not yet decided) for a str name
        self._drops = DropCounter()
        install_sigterm_hook()  # a plain SIGTERM still writes every writer's clean end (see spool.shutdown)

    @property
    def writer(self) -> SpoolWriter:
        """The spool writer, created on first use (constructing a core does no I/O)."""
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = self._attach(
                        SpoolWriter(self.config.spool, max_event_bytes=self.config.events.max_event_bytes))
        return self._writer

    def _attach(self, writer: SpoolWriter) -> SpoolWriter:
        writer.closing_record = self._closing_record
        return writer

    def _closing_record(self, events: int) -> dict[str, Any]:
        return self.build(event_types.WRITER_CLOSED, {"actor_id": f"svc:{self.config.service}", "events": events})

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

    def refuse_unmatched(self, name: object, keys: Iterable[str]) -> None:
        """Raise `EventError` when an event matching no include pattern carries audit arguments (`AUDIT_ARGUMENTS`).

        Such an event is an audit event under a misspelt type: dropping it loses it, passing it on to the
        application log leaks its raw, non-allowlisted values. Events without audit arguments are left alone.
        """
        if not AUDIT_ARGUMENTS.isdisjoint(keys):
            raise EventError(_unmatched_message(name, AUDIT_ARGUMENTS.intersection(keys), self.config.events.include))

    def emit(self, event_type: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Build and write one audit event; returns the record, or None when it was dropped by policy."""
        try:
            record = self._builder.build(event_type, fields)  # `self.build`, one call less per event
        except KeyStoreError as exc:  # no data key for its erasable values: a failure to record, like the spool's
            self._refuse(exc)
            return None
        writer = self._writer
        if writer is None or capture_hooks or self._drops.unreported:
            return self.write(record)  # the first event, a test's capture, drops to report: the general path
        try:  # `write`'s common case, one call less per event
            writer.append(record)
        except SpoolError as exc:
            self._refuse(exc)
            return None
        return record

    def build(self, event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The record of an event, chain fields still empty; raises `EventError` on bad input."""
        return self._builder.build(event_type, fields)

    def changes(self, event_type: str, target_type: str, before: Any, after: Any) -> dict[str, Any]:
        """`payload.changes` as `build` writes it for `before`/`after` (the allowlist, hmac, encoding of values)."""
        return self._builder.changes(event_type, target_type, before, after)

    def write(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write a built record; on a spool failure raise, or count the drop when `on_error = "drop"`."""
        if capture_hooks:
            for hook in list(capture_hooks):
                hook(record)
            return record
        try:
            (self._writer or self.writer).append(record)  # the property only until the writer exists
        except SpoolError as exc:
            self._refuse(exc)
            return None
        if self._drops.unreported:
            self._report_drops()
        return record

    def _refuse(self, exc: SpoolError) -> None:
        """An event that could not be recorded: raise, or count the drop when `on_error = "drop"`."""
        if self.config.spool.on_error != "drop":
            raise exc
        self._drops.add(exc)
        self.writer.record_drop(exc)  # where the agent reads it (auditlock_app_events_dropped_total)

    def _report_drops(self) -> None:
        # Put the fact of the loss into the trail itself, so an auditor sees it, not only an operator.
        report = self._drops.take_report()
        if report is None:
            return  # another thread reported these drops already
        fields = {"actor_id": f"svc:{self.config.service}", **report}
        try:
            self.writer.append(self.build(event_types.EVENTS_DROPPED, fields))
        except SpoolError:
            self._drops.restore(report)


class DropCounter:
    """Counts events dropped by `on_error = "drop"` and what has not yet been reported in the trail."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.unreported = 0
        self._first: str | None = None
        self._last: str | None = None
        self._reason = ""
        self._last_warning = float("-inf")

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

    def take_report(self) -> dict[str, Any] | None:
        """The payload of an `auditlock.events_dropped` event (None if nothing is unreported); resets the count."""
        with self._lock:
            if not self.unreported:
                return None
            report = {"count": self.unreported, "first_dropped_at": self._first, "last_dropped_at": self._last,
                      "reason": self._reason}
            self.unreported, self._first = 0, None
        return report

    def restore(self, report: dict[str, Any]) -> None:
        """Put a report back when writing it failed."""
        with self._lock:
            self.unreported += report["count"]
            self._first = report["first_dropped_at"]


def _unmatched_message(name: object, found: Iterable[str], include: tuple[str, ...]) -> str:
    patterns = ", ".join(include[:_PATTERNS_SHOWN]) + (", …" if len(include) > _PATTERNS_SHOWN else "")
    return (
        f"event {shown(name)} carries audit arguments ({', '.join(sorted(found))}) but matches no [events] include "
        f"pattern ({patterns}), so it was refused: not written to the audit trail and not passed on to the "
        "application log. Fix the event type if it is misspelt, or add a pattern matching it to [events] include; "
        f"a plain log event must not use the names {', '.join(sorted(AUDIT_ARGUMENTS))}"
    )


def _sealer(config: Config) -> PayloadSealer | None:
    if not config.erasable:
        return None
    # `cryptography` (and SQLAlchemy for the SQL store) only for applications with erasable fields.
    from auditlock.privacy.erasable import Sealer  # noqa: PLC0415

    return Sealer(config)


def _uses_hmac(config: Config) -> bool:
    return any(target.hmac for target in config.targets.values())


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
