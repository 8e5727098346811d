"""The records of captured row changes: the record builder's records, without its work per row.

Every row event of a table shares with the earlier ones of the same event type and attribution everything but the
target id, the transaction's fields (`commit_lsn`, `xid`, `committed_at`), `table`, `change_index` and the changes.
So the first event of each (event type, attribution) goes through the record builder (`AuditCore.build`), which
checks the type, the actor and the target and applies the allowlist, hmac and the retention class; its record
becomes a template, and the next rows copy it and put in their own values by the builder's rules for those values
(allowlist, hmac, keys in the same order): the line the writer stamps is byte for byte the builder's
(tests/test_capture_records.py compares them). The builder takes every event whose shape the template does not fit:
truncations, schema changes, tables with erasable fields (sealing stays in one place), an hmac on one of capture's
own fields, a value of an unexpected type, a process that imported OpenTelemetry (trace ids vary per event).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from auditlock.capture.tables import CapturedTable
from auditlock.handler import event_types
from auditlock.handler.encode import hmac_value

Build = Callable[[str, Mapping[str, Any]], dict[str, Any]]
# The payload's last keys on every row event, in the builder's order (the fields' order: see `ChangeRecorder`).
PER_ROW = ("commit_lsn", "xid", "committed_at", "table", "change_index", "changes")
_TEMPLATES_MAX = 4096
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the builder writes ints in this range as they are
_MODULES = sys.modules
_AS_IS = frozenset({str, bool, type(None)})


class _Template:
    """A built record of one (event type, attribution) with its per-row values taken out."""

    __slots__ = ("allowed", "hashed", "payload", "record")

    def __init__(self, record: dict[str, Any], payload: dict[str, Any], table: CapturedTable) -> None:
        self.record = record  # "target_id" and "payload" to fill in
        self.payload = payload  # the attribution's keys, before the per-row ones
        self.allowed = table.target.allowed  # the builder's change fields
        self.hashed = table.target.hmac


class CapturedRecords:
    """Builds the record of a captured change (`build`) through a template when one fits, else the builder."""

    def __init__(self, build: Build, tables: Mapping[str, CapturedTable],
                 hmac_key: tuple[str | None, bytes] | None) -> None:
        """`build` is `AuditCore.build`; `hmac_key` the key it hashes with (None when no target uses hmac)."""
        self._build = build
        self._key_id, self._key = hmac_key if hmac_key is not None else (None, b"")
        # Per target type: its table when the template path may serve its rows.
        self._templatable = {t.target_type: t for t in tables.values() if _templatable(t)}
        self._templates: dict[tuple[str, str, tuple[Any, ...]], _Template] = {}
        event_types.watch_standard_fields(self)  # a plan change makes templates stale

    def forget_plans(self) -> None:
        """Drop the templates (the standard fields changed): the next event of each kind is built again."""
        self._templates.clear()

    def build(self, event_type: str, fields: dict[str, Any], attribution: tuple[Any, ...]) -> dict[str, Any]:
        """The record of one event; `attribution` holds every value the fields share across a transaction's rows."""
        key = (event_type, fields["target_type"], attribution)
        template = self._templates.get(key)
        if template is not None and _MODULES.get("opentelemetry.trace") is None:
            record = self._from_template(template, fields)
            if record is not None:
                return record
        record = self._build(event_type, fields)
        if template is None:
            self._remember(key, fields, record)
        return record

    def _remember(self, key: tuple[str, str, tuple[Any, ...]], fields: Mapping[str, Any],
                  record: dict[str, Any]) -> None:
        table = self._templatable.get(key[1])
        payload = record["payload"]
        names = list(payload)
        if table is None or tuple(names[-len(PER_ROW):]) != PER_ROW or record["trace_id"] is not None:
            return
        if len(self._templates) >= _TEMPLATES_MAX:
            self._templates.clear()
        prefix = {name: payload[name] for name in names[:-len(PER_ROW)]}
        self._templates[key] = _Template({**record, "target_id": None, "payload": None}, prefix, table)

    def _from_template(self, template: _Template, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        target_id = fields.get("target_id")
        if target_id is not None and type(target_id) is not str:
            return None
        changes = self._changes(template, fields.get("before"), fields.get("after"))
        if changes is None:
            return None
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

    def _changes(self, template: _Template, before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> dict[str, Any] | None:
        """`RecordBuilder._changes` for plain values (`_plain`); None when a value is of another type."""
        allowed, hashed = template.allowed, template.hashed
        if before is None and after is not None and not hashed:  # an insert: every value is a change from null
            for new in after.values():
                if type(new) not in _AS_IS and not _plain(new):
                    return None
            return {name: [None, new] for name, new in after.items() if name in allowed}
        old_values, new_values = before or {}, after or {}
        changes: dict[str, Any] = {}
        for name, new in new_values.items():
            if name not in allowed:
                continue
            old = old_values.get(name)
            if type(old) is type(new) and old == new and (old is not None or name in old_values):
                continue
            if not (_plain(old) and _plain(new)):
                return None
            changes[name] = [self._hashed_value(old), self._hashed_value(new)] if name in hashed else [old, new]
        for name, old in old_values.items():
            if name in allowed and name not in new_values:
                if not _plain(old):
                    return None
                changes[name] = [self._hashed_value(old) if name in hashed else old, None]
        return changes

    def _hashed_value(self, value: Any) -> Any:
        return hmac_value(self._key, value, self._key_id)


def _plain(value: Any) -> bool:
    """Whether the builder writes `value` as it is (a str, bool, None or an int of 64 bits)."""
    kind = type(value)
    return kind is str or value is None or kind is bool or (kind is int and _INT_MIN <= value <= _INT_MAX)


def _templatable(table: CapturedTable) -> bool:
    """Whether a table's row events may be built from a template (no erasable field, no hmac on capture's fields)."""
    return not table.target.erasable and table.target.hmac.isdisjoint(PER_ROW)
