"""The records of captured row changes: the record builder's records, without its work per row.

Every row event of a table shares with the earlier ones of the same event type and attribution everything but the
target id, the transaction's fields (`commit_lsn`, `xid`, `committed_at`), `table`, `change_index` and the changes.
So the first event of each (event type, attribution) goes through the record builder (`AuditCore.build`), which
checks the type, the actor and the target and applies the allowlist, hmac and the retention class; its record
becomes a template, and the next rows copy it and put in their own values, the changes made by the builder's own
rule (`AuditCore.changes`, the one definition of allowlist, hmac and value encoding in `payload.changes`): the line
the writer stamps is byte for byte the builder's (tests/test_capture_records.py compares them). The builder takes
every event whose shape the template does not fit: truncations, schema changes, tables with erasable fields
(sealing stays in one place), an hmac on one of capture's own fields, a target id that is not a string, a process
that imported OpenTelemetry (trace ids vary per event).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from auditlock.capture.tables import CapturedTable
from auditlock.handler import event_types

Build = Callable[[str, Mapping[str, Any]], dict[str, Any]]
Changes = Callable[[str, str, Any, Any], dict[str, Any]]
# The payload's last keys on every row event, in the builder's order (the fields' order: see `ChangeRecorder`).
PER_ROW = ("commit_lsn", "xid", "committed_at", "table", "change_index", "changes")
_TEMPLATES_MAX = 4096
_MODULES = sys.modules


class _Template:
    """A built record of one (event type, attribution) with its per-row values taken out."""

    __slots__ = ("payload", "record")

    def __init__(self, record: dict[str, Any], payload: dict[str, Any]) -> None:
        self.record = record  # "target_id" and "payload" to fill in
        self.payload = payload  # the attribution's keys, before the per-row ones


class CapturedRecords:
    """Builds the record of a captured change (`build`) through a template when one fits, else the builder."""

    def __init__(self, build: Build, changes: Changes, tables: Mapping[str, CapturedTable]) -> None:
        """`build` is `AuditCore.build`, `changes` `AuditCore.changes`."""
        self._build = build
        self._changes = changes
        # The target types whose row events the template path may serve.
        self._templatable = {t.target_type for t in tables.values() if _templatable(t)}
        self._templates: dict[tuple[str, str, tuple[Any, ...]], _Template] = {}
        event_types.watch_standard_fields(self)  # a plan change makes templates stale

    def forget_plans(self) -> None:
        """Drop the templates (the standard fields changed): the next event of each kind is built again."""
        self._templates.clear()

    def build(self, event_type: str, fields: dict[str, Any], attribution: tuple[Any, ...]) -> dict[str, Any]:
        """The record of one event; `attribution` holds every value the fields share across a transaction's rows."""
        key = (event_type, fields["target_type"], attribution)
        template = self._templates.get(key)
        target_id = fields.get("target_id")
        if template is not None and type(target_id) is str and _MODULES.get("opentelemetry.trace") is None:
            return self._from_template(template, event_type, key[1], target_id, fields)
        record = self._build(event_type, fields)
        if template is None:
            self._remember(key, record)
        return record

    def _remember(self, key: tuple[str, str, tuple[Any, ...]], record: dict[str, Any]) -> None:
        payload = record["payload"]
        names = list(payload)
        if key[1] not in self._templatable or tuple(names[-len(PER_ROW):]) != PER_ROW or record["trace_id"] is not None:
            return
        if len(self._templates) >= _TEMPLATES_MAX:
            self._templates.clear()
        prefix = {name: payload[name] for name in names[:-len(PER_ROW)]}
        self._templates[key] = _Template({**record, "target_id": None, "payload": None}, prefix)

    def _from_template(self, template: _Template, event_type: str, target_type: str, target_id: str,
                       fields: Mapping[str, Any]) -> dict[str, Any]:
        changes = self._changes(event_type, target_type, fields.get("before"), fields.get("after"))
        payload = template.payload.copy()
        payload["commit_lsn"] = fields["commit_lsn"]
        payload["xid"] = fields["xid"]
        payload["committed_at"] = fields["committed_at"]
        payload["table"] = fields["table"]
        payload["change_index"] = fields["change_index"]
        payload["changes"] = changes
        record = template.record.copy()
        record["target_id"] = target_id
        record["payload"] = payload
        return record


def _templatable(table: CapturedTable) -> bool:
    """Whether a table's row events may be built from a template (no erasable field, no hmac on capture's fields)."""
    return not table.target.erasable and table.target.hmac.isdisjoint(PER_ROW)
