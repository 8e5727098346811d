"""The one definition of a valid line: what the writer writes, what the agent ships and what every reader of the
spool and of the archive reads as an event (`archive.content.unreadable_line` is this definition too).

A line that parses as JSON is not enough. Anyone who can write to the spool can craft a line that ships and
verifies clean but breaks readers for the whole retention period, or lands in an object key. So a line is valid
only if it is exactly what the writer writes:

- at most `MAX_LINE_BYTES` (16 MiB, what the query engine reads as one object);
- an `auditlock/1` JSON object in the writer's canonical form — `orjson.dumps` of the parsed line gives the line
  back byte for byte. This refuses duplicate keys (which orjson, like most parsers, silently collapses; readers
  disagree on which value wins), whitespace and re-encoded strings, with one C call;
- its fields typed: `event_id`, `event_type`, `writer`, `prev`, `occurred_at`, `retention` strings, `seq` an int
  (signed 64 bits), `payload` an object (never a string or a list), and the other text columns (`actor_id`,
  `actor_type`, `actor_ip`, `target_type`, `target_id`, `service`, `host`, `trace_id`, `span_id`) a string or
  null; every key of the schema present, no other (`spool.format.EVENT_KEYS`);
- `occurred_at` exactly `YYYY-MM-DDTHH:MM:SS.ffffffZ` and a real date (it becomes the object key's partition and
  name: `2026-12!/../../../x` never gets that far), `retention` a valid class name (also in the key);
- nested at most `MAX_LINE_DEPTH` (40) levels (the writer allows 32 inside one payload field).

`checked_event` is the fast path (one parse, one re-encode; the agent runs it for every event it ships and reads
the chain off the values it returns), `valid_event` the same verdict without the values; `parse_line` checks the
same rules one by one and says which one a line breaks.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import re
from dataclasses import dataclass
from typing import Any

import orjson

from auditlock.config.schema import RETENTION_CLASS_NAME
from auditlock.spool.format import EVENT_KEYS, SCHEMA

# The writer's bound is 32 levels inside one payload field (handler/encode.py MAX_DEPTH); around it the deepest
# line has the event, the payload, `changes` and the [before, after] pair (36 in all). Eight levels of slack: a line
# deeper than this was not written by a writer, and every reader still parses it.
MAX_LINE_DEPTH = 32 + 8
MAX_LINE_BYTES = 16 * 1024 * 1024  # DuckDB's maximum_object_size in the query engine; far above max_event_bytes
OCCURRED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
_loads, _dumps = orjson.loads, orjson.dumps
_STRINGS = ("event_id", "event_type", "writer", "prev", "occurred_at", "retention")
_OPTIONAL_TEXT = ("actor_id", "actor_type", "actor_ip", "target_type", "target_id", "service", "host", "trace_id",
                  "span_id")
_TEXT_TYPES = frozenset((str, type(None)))
_CONTAINERS = frozenset((dict, list))
_KNOWN_KEYS = frozenset(EVENT_KEYS)
_KEY_COUNT = len(EVENT_KEYS)
_values = operator.itemgetter(*EVENT_KEYS)  # every key's value, in schema order (KeyError if one is missing)
# Where `checked_event`'s values tuple holds the fields its callers read.
EVENT_TYPE_INDEX, OCCURRED_AT_INDEX, RETENTION_INDEX, WRITER_INDEX, SEQ_INDEX, PREV_INDEX = map(
    EVENT_KEYS.index, ("event_type", "occurred_at", "retention", "writer", "seq", "prev"))
_PAYLOAD_INDEX = EVENT_KEYS.index("payload")


def _shapes() -> frozenset[tuple[type, ...]]:
    """Every allowed tuple of value types, in schema order: the optional text columns str or null (2**9 shapes)."""
    shapes: list[tuple[type, ...]] = [()]
    for key in EVENT_KEYS:
        choices: tuple[type, ...] = (
            (str, type(None)) if key in _OPTIONAL_TEXT else (int,) if key == "seq" else (dict,) if key == "payload"
            else (str,))
        shapes = [(*shape, kind) for shape in shapes for kind in choices]
    return frozenset(shapes)


_SHAPES = _shapes()  # one set lookup checks every key's presence and every value's type
_SEQ_MIN, _SEQ_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ParsedLine:
    """One line read: its event, or why it is not a valid event. `malformed` is a line that is not even a typed
    `auditlock/1` object — what a write cut short leaves (the rest were crafted: a writer never writes them)."""

    event: dict[str, Any] | None
    problem: str | None = None
    malformed: bool = False


def valid_event(body: bytes) -> dict[str, Any] | None:
    """The event of a line without its newline if it is valid, else None (then `parse_line` says why).

    The per-line fast path (the archive's readers run it for every line they read), hence its flat shape; the
    rules are those of the module docstring, and `parse_line` checks exactly the same ones one by one.
    """
    checked = checked_event(body)
    return None if checked is None else checked[0]


def checked_event(body: bytes) -> tuple[dict[str, Any], tuple[Any, ...]] | None:
    """`valid_event` with the event's values in schema order (`EVENT_KEYS`; `SEQ_INDEX` and the other `*_INDEX`
    say where), or None: the agent's shipping reader runs it for every event it ships and reads the chain fields
    off the tuple.

    One parse, one lookup of the values' type tuple, one re-encode. Nesting is counted only when the payload holds
    an object or a list (every other value is a scalar once the types are checked).
    """
    try:
        event = _loads(body)
        if type(event) is not dict or len(event) != _KEY_COUNT:
            return None
        values = _values(event)
        ok = (tuple(map(type, values)) in _SHAPES and values[0] == SCHEMA
              and _SEQ_MIN <= values[SEQ_INDEX] <= _SEQ_MAX and _real_time(values[OCCURRED_AT_INDEX])
              and _class_name(values[RETENTION_INDEX]) and len(body) <= MAX_LINE_BYTES and _dumps(event) == body
              and (_CONTAINERS.isdisjoint(map(type, values[_PAYLOAD_INDEX].values()))
                   or _depth(event) <= MAX_LINE_DEPTH))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, KeyError, TypeError):
        return None
    return (event, values) if ok else None


def parse_line(line: bytes) -> ParsedLine:
    """Check one line (with or without its newline) against the one definition of a valid line."""
    body = line[:-1] if line.endswith(b"\n") else line
    if len(body) > MAX_LINE_BYTES:
        return ParsedLine(None, f"a line over {MAX_LINE_BYTES} bytes", malformed=True)
    event = valid_event(body)
    if event is not None:
        return ParsedLine(event)
    return check_rule_by_rule(body)


def check_rule_by_rule(body: bytes) -> ParsedLine:
    """`parse_line`'s slow path on its own: a line without its newline checked rule by rule, naming the first rule
    it breaks. Its verdict is the fast path's (`valid_event`) on every line; the tests hold them to that."""
    if len(body) > MAX_LINE_BYTES:
        return ParsedLine(None, f"a line over {MAX_LINE_BYTES} bytes", malformed=True)
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
    seq = event.get("seq")
    if type(seq) is not int or not _SEQ_MIN <= seq <= _SEQ_MAX:
        return f"not an {SCHEMA} JSON object ('seq' missing or not a 64-bit integer)"
    return None


def _value_problem(event: dict[str, Any]) -> str | None:
    if not isinstance(event.get("payload"), dict):
        return f"payload is a {type(event.get('payload')).__name__}, not an object"
    return _key_problem(event) or _text_problem(event)


def _key_problem(event: dict[str, Any]) -> str | None:
    unknown = sorted(set(event) - _KNOWN_KEYS)
    if unknown:
        return f"a key {unknown[0][:40]!r} that is not in the {SCHEMA} schema (a writer never writes it)"
    missing = [key for key in EVENT_KEYS if key not in event]
    if missing:
        return f"no {missing[0]!r} (a writer writes every key of the {SCHEMA} schema)"
    return None


def _text_problem(event: dict[str, Any]) -> str | None:
    wrong = [key for key in _OPTIONAL_TEXT if type(event.get(key)) not in _TEXT_TYPES]
    if wrong:
        return f"{wrong[0]} is a {type(event[wrong[0]]).__name__}, not a string or null"
    if not _valid_occurred_at(event["occurred_at"]):
        return f"occurred_at {event['occurred_at'][:40]!r} is not a UTC time YYYY-MM-DDTHH:MM:SS.ffffffZ"
    if not _class_name(event["retention"]):
        return f"retention {event['retention'][:70]!r} is not a valid retention class name"
    return None


def _valid_occurred_at(value: str) -> bool:
    return _real_time(value)


def _real_time(value: str) -> bool:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` naming a real UTC time (no month 13, February 30th or hour 24); the part up to
    the second is checked once per distinct second (cached), the fraction every time."""
    return (len(value) == 27 and value[19] == "." and value[26] == "Z" and value[20:26].isdigit()
            and value.isascii() and _real_second(value[:19]))


@functools.lru_cache(maxsize=4096)
def _real_second(value: str) -> bool:
    return OCCURRED_AT.fullmatch(value + ".000000Z") is not None and _real_date(value[:10])


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
    if _depth(event) > MAX_LINE_DEPTH:
        return f"nested more than {MAX_LINE_DEPTH} levels deep (a writer never writes that)"
    try:
        canonical = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return "not in the writer's JSON form (cannot be re-encoded)"
    if canonical == body:
        return None
    if _has_duplicate_key(body):
        return "a duplicate key (not in the writer's JSON form)"
    return "not in the writer's JSON form (whitespace or a re-encoded value)"


def _has_duplicate_key(body: bytes) -> bool:
    """Whether an object anywhere in the line repeats a key (slow: only for a line already refused)."""
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        keys = [key for key, _ in items]
        found = found or len(set(keys)) != len(keys)
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return True
    return found


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
