"""How events read on screen: a one-line summary per row, the before/after table, the raw JSON.

An event row comes from the query room with `payload` as JSON text; `present` parses it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from auditlock.query.columns import EVENT_NAMES

SUMMARY_CHARS = 140


@dataclass(frozen=True)
class Change:
    """One changed field: its value before and after, as text (`None` = absent or null)."""

    field: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        """`added` (no value before), `removed` (none after) or `changed`."""
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"


def present(row: dict[str, Any]) -> dict[str, Any]:
    """The event with `payload` parsed into an object; a payload that is not one (the query cache skips such
    lines, so only an older cache entry can hold it) is shown as `{"(payload)": <its text>}`, never a 500."""
    event = {name: row.get(name) for name in EVENT_NAMES}
    payload = row.get("payload")
    try:
        parsed = orjson.loads(payload) if isinstance(payload, str | bytes) else (payload or {})
    except orjson.JSONDecodeError:
        parsed = payload
    event["payload"] = parsed if isinstance(parsed, dict) else {"(payload)": value_text(payload)}
    return event


def changes(payload: dict[str, Any]) -> list[Change]:
    """`payload.changes` (`{"field": [before, after]}`) as rows, in the order written."""
    raw = payload.get("changes")
    if not isinstance(raw, dict):
        return []
    rows = []
    for name, pair in raw.items():
        before, after = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
        rows.append(Change(str(name), _text_or_none(before), _text_or_none(after)))
    return rows


def other_fields(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The payload's fields besides `changes`, as (name, text)."""
    return [(name, value_text(value)) for name, value in payload.items() if name != "changes"]


def summary(payload: dict[str, Any]) -> str:
    """One line for the results table: `status: new → paid; role=admin`, cut to SUMMARY_CHARS."""
    parts = [f"{c.field}: {c.before if c.before is not None else '∅'} → {c.after if c.after is not None else '∅'}"
             for c in changes(payload)]
    parts += [f"{name}={text}" for name, text in other_fields(payload)]
    line = "; ".join(parts)
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


def target_text(event: dict[str, Any]) -> str:
    """`Order:1001`, `Order`, or empty."""
    target = event.get("target_type") or ""
    if event.get("target_id") is not None:
        target += f":{event['target_id']}"
    return target


def raw_json(event: dict[str, Any]) -> str:
    """The event as archived, indented for reading (on one line if it nests too deep to indent)."""
    try:
        return orjson.dumps(event, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError:
        return value_text(event)


def value_text(value: Any) -> str:
    """A payload value as text: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return "(nested too deep to show)"


def _text_or_none(value: Any) -> str | None:
    return None if value is None else value_text(value)
