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
- nested at most `MAX_LINE_DEPTH` (40) levels (the writer allows 32 inside one payload field).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from auditlock.config.schema import RETENTION_CLASS_NAME
from auditlock.spool.format import SCHEMA

# The writer's bound is 32 levels inside one payload field (handler/encode.py MAX_DEPTH); around it the deepest
# line has the event, the payload, `changes` and the [before, after] pair (36 in all). Eight levels of slack: a line
# deeper than this was not written by a writer, and every reader still parses it.
MAX_LINE_DEPTH = 32 + 8
MAX_LINE_BYTES = 16 * 1024 * 1024  # DuckDB's maximum_object_size in the query engine; far above max_event_bytes
OCCURRED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
_loads, _dumps = orjson.loads, orjson.dumps
_STRINGS = ("writer", "event_id", "prev", "occurred_at", "retention")


@dataclass(frozen=True)
class ParsedLine:
    """One line read: its event, or why it is not a valid event. `malformed` is a line that is not even a typed
    `auditlock/1` object — what a write cut short leaves (the rest were crafted: a writer never writes them)."""

    event: dict[str, Any] | None
    problem: str | None = None
    malformed: bool = False


def valid_event(body: bytes) -> dict[str, Any] | None:
    """The event of a line without its newline if it is valid, else None (then `parse_line` says why).

    The agent's per-line fast path: it runs for every shipped event, hence its flat shape; the rules are those of
    the module docstring, and `parse_line` checks exactly the same ones one by one.
    """
    try:
        event = _loads(body)
        ok = (type(event) is dict and event["schema"] == SCHEMA and type(event["writer"]) is str
              and type(event["event_id"]) is str and type(event["prev"]) is str and type(event["seq"]) is int
              and type(event["payload"]) is dict and type(event["occurred_at"]) is str
              and type(event["retention"]) is str and _real_time(event["occurred_at"])
              and _class_name(event["retention"]) and _dumps(event) == body
              and (body.count(b"[") + body.count(b"{") <= MAX_LINE_DEPTH or _depth(event) <= MAX_LINE_DEPTH))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, KeyError, TypeError):
        return None
    return event if ok else None


def parse_line(line: bytes) -> ParsedLine:
    """Check one line (with or without its newline) against the one definition of a valid spool line."""
    body = line[:-1] if line.endswith(b"\n") else line
    event = valid_event(body)
    if event is not None:
        return ParsedLine(event)
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
    if not _class_name(event["retention"]):
        return f"retention {event['retention'][:70]!r} is not a valid retention class name"
    return None


def _valid_occurred_at(value: str) -> bool:
    return _real_time(value)


def _real_time(value: str) -> bool:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` naming a real UTC time (no month 13, February 30th or hour 24)."""
    return OCCURRED_AT.fullmatch(value) is not None and _real_date(value[:10])


@functools.lru_cache(maxsize=1024)
def _real_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _class_name(value: str) -> bool:
    return RETENTION_CLASS_NAME.fullmatch(value) is not None


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
