"""The one definition of a valid spool line: what the writer writes and every reader of the archive can read.

A line that parses as JSON is not enough. Anyone who can write to the spool can craft a line that ships and
verifies clean but breaks readers for the whole retention period, or lands in an object key. So a line is valid
only if it is exactly what the writer writes:

- an `auditlock/1` JSON object in the writer's canonical form — `orjson.dumps` of the parsed line gives the line
  back byte for byte. This refuses duplicate keys (which orjson, like most parsers, silently collapses; readers
  disagree on which value wins), whitespace and re-encoded strings, with one C call;
- its required fields typed: `writer`, `event_id`, `prev`, `occurred_at`, `retention` strings, `seq` an int,
  `payload` an object (never a string or a list);
- `occurred_at` exactly `YYYY-MM-DDTHH:MM:SS.ffffffZ` and a real date (it becomes the object key's partition and
  name: `2026-12!/../../../x` never gets that far), `retention` a valid class name (also in the key);
- nested at most `MAX_LINE_DEPTH` levels (the writer allows 32 inside one payload field).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson

from auditlock.config.schema import RETENTION_CLASS_NAME
from auditlock.spool.format import SCHEMA

# The writer's bound is 32 levels inside one payload field (handler/encode.py MAX_DEPTH); the event, the payload
# and the field's own container add three. Anything deeper was not written by a writer.
MAX_LINE_DEPTH = 32 + 3
OCCURRED_AT = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_STRINGS = ("writer", "event_id", "prev", "occurred_at", "retention")


@dataclass(frozen=True)
class ParsedLine:
    """One line read: its event, or why it is not a valid event. `malformed` is a line that is not even a typed
    `auditlock/1` object — what a write cut short leaves (the rest were crafted: a writer never writes them)."""

    event: dict[str, Any] | None
    problem: str | None = None
    malformed: bool = False


def parse_line(line: bytes) -> ParsedLine:
    """Check one line (with or without its newline) against the one definition of a valid spool line."""
    body = line[:-1] if line.endswith(b"\n") else line
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ParsedLine(None, f"not an {SCHEMA} JSON object (unparsable)", malformed=True)
    if not isinstance(event, dict) or event.get("schema") != SCHEMA:
        return ParsedLine(None, f"not an {SCHEMA} JSON object", malformed=True)
    problem = _field_problem(event)
    if problem is not None:
        return ParsedLine(None, problem, malformed=True)
    problem = _value_problem(event) or _form_problem(event, body)
    return ParsedLine(None, problem) if problem else ParsedLine(event)


def _field_problem(event: dict[str, Any]) -> str | None:
    missing = [key for key in _STRINGS if not isinstance(event.get(key), str)]
    if missing:
        return f"not an {SCHEMA} JSON object ({missing[0]!r} missing or not a string)"
    if type(event.get("seq")) is not int:
        return f"not an {SCHEMA} JSON object ('seq' missing or not an integer)"
    return None


def _value_problem(event: dict[str, Any]) -> str | None:
    if not isinstance(event.get("payload"), dict):
        return f"payload is a {type(event.get('payload')).__name__}, not an object"
    if not _valid_occurred_at(event["occurred_at"]):
        return f"occurred_at {event['occurred_at'][:40]!r} is not a UTC time YYYY-MM-DDTHH:MM:SS.ffffffZ"
    if RETENTION_CLASS_NAME.fullmatch(event["retention"]) is None:
        return f"retention {event['retention'][:70]!r} is not a valid retention class name"
    return None


def _valid_occurred_at(value: str) -> bool:
    raw = value.encode("utf-8", "replace")
    if OCCURRED_AT.fullmatch(raw) is None:
        return False
    try:
        dt.datetime.fromisoformat(value[:-1])
    except ValueError:
        return False  # month 13, February 30th, hour 24
    return True


def _form_problem(event: dict[str, Any], body: bytes) -> str | None:
    if body.count(b"[") + body.count(b"{") > MAX_LINE_DEPTH and _depth(event) > MAX_LINE_DEPTH:
        return f"nested more than {MAX_LINE_DEPTH} levels deep (a writer never writes that)"
    try:
        canonical = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return "not in the writer's JSON form (cannot be re-encoded)"
    if canonical != body:
        return "not in the writer's JSON form (a duplicate key, whitespace or a re-encoded value)"
    return None


def _depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value (iterative: a hostile line must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_LINE_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
