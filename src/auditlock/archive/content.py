"""Reading an events object's bytes as hostile input: bounded gunzip, lines streamed, lines readers can show.

Every reader (query's cache, the view through it, verify) decompresses an object with `gunzip_bounded`: a gzip
bomb (48 KB that inflate to gigabytes) stops at the bound with `ObjectTooLarge` instead of taking the memory.
The bound is `[sink] batch_max_bytes` (an agent never writes an object larger than a batch; default 64 MiB).
Lines are yielded one at a time (`split_lines`), never built into a list: a bomb of newlines would otherwise
cost ~40 bytes of Python objects per byte of content.

`unreadable_line` is the one definition of a line the readers can show as an event: a JSON object with no
duplicate key, every `auditlock/1` column of the right type, a payload that is an object (or absent) nested at
most `MAX_PAYLOAD_DEPTH` deep, at most `MAX_LINE_BYTES` long. The writer refuses all of these at write time;
an archived line that breaks them was written by someone else (or an old bug) and is skipped with a note.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import orjson

MAX_LINE_BYTES = 16 * 1024 * 1024  # DuckDB's maximum_object_size in the query engine
MAX_PAYLOAD_DEPTH = 64  # the writer bounds payloads at 32 levels
_GZIP = 16 + zlib.MAX_WBITS
_TEXT_FIELDS = ("schema", "event_id", "event_type", "occurred_at", "actor_id", "actor_type", "actor_ip",
                "target_type", "target_id", "service", "host", "retention", "trace_id", "span_id", "writer", "prev")
_REQUIRED = ("schema", "event_id", "event_type", "occurred_at", "writer", "seq", "prev")


class ObjectTooLarge(ValueError):
    """An object inflates to more than the bound (a gzip bomb, or an object no agent wrote)."""


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """The decompressed content of `data` (one or more gzip members); `ObjectTooLarge` beyond `limit` bytes,
    `zlib.error`/`EOFError` for bytes that are not whole gzip."""
    out = bytearray()
    pending = data
    while pending:
        inflater = zlib.decompressobj(_GZIP)
        chunk_in = pending
        while not inflater.eof:
            chunk = inflater.decompress(chunk_in, limit + 1 - len(out))  # >= 1: 0 would mean "no limit"
            out += chunk
            if len(out) > limit:
                raise ObjectTooLarge(f"object too large: it inflates to more than {limit} bytes")
            chunk_in = inflater.unconsumed_tail
            if not chunk and not chunk_in:
                break
        if not inflater.eof:
            raise EOFError("compressed data ended before the end-of-stream marker was reached")
        pending = inflater.unused_data.lstrip(b"\x00")  # gzip allows zero padding after a member
    return bytes(out)


def split_lines(content: bytes) -> Iterator[bytes]:
    """The lines of `content` without their newlines, one at a time (a last line without newline included)."""
    start, end = 0, len(content)
    while start < end:
        stop = content.find(b"\n", start)
        if stop < 0:
            yield content[start:]
            return
        yield content[start:stop]
        start = stop + 1


def unreadable_line(line: bytes) -> str | None:
    """Why the readers cannot show this line as an event (see the module docstring); None if they can."""
    event, problem = _parse(line)
    if event is None:
        return problem
    return _bad_field(event) or _not_canonical(event, line)


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not line:
        return None, "an empty line"
    if len(line) > MAX_LINE_BYTES:
        return None, f"a line over {MAX_LINE_BYTES} bytes"
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, "not JSON"
    return (event, None) if isinstance(event, dict) else (None, "not a JSON object")


def _not_canonical(event: dict[str, Any], line: bytes) -> str | None:
    """A duplicate key (or nesting past orjson's limit outside the payload); None for a line in orjson's form
    (every line the writer wrote), checked the slow way only otherwise."""
    try:
        canonical = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return "a value nested too deep"
    if canonical != line and _has_duplicate_key(line):
        return "a duplicate key"
    return None


def _bad_field(event: dict[str, Any]) -> str | None:
    missing = [name for name in _REQUIRED if event.get(name) is None]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [name for name in _TEXT_FIELDS if event.get(name) is not None and type(event[name]) is not str]
    if type(event["seq"]) is not int or not -(2**63) <= event["seq"] < 2**63:
        wrong.append("seq")
    if wrong:
        return f"{', '.join(wrong)} of the wrong type"
    payload = event.get("payload")
    if payload is not None and not isinstance(payload, dict):
        return "a payload that is not an object"
    if _depth(payload) > MAX_PAYLOAD_DEPTH:
        return f"a payload nested more than {MAX_PAYLOAD_DEPTH} deep"
    return None


def _has_duplicate_key(line: bytes) -> bool:
    """Whether an object anywhere in the line repeats a key (slow path: only for lines not in orjson's form)."""
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        keys = [key for key, _ in items]
        found = found or len(set(keys)) != len(keys)
        return dict(items)

    try:
        json.loads(line, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return True
    return found


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in `value` (iterative: a hostile value cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_PAYLOAD_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
