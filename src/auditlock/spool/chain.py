"""Stamping a record into the next line of one writer's chain: event_id, occurred_at, writer, seq, prev.

Callers hold the writer's lock around `stamp` + `advance`, so ids, times and seq are assigned in one order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from auditlock.errors import EventError
from auditlock.spool.format import ZERO_HASH, line_hash


def uuid7_hex(now_ns: int, rand62: int | None = None) -> str:
    """A UUIDv7 (RFC 9562, method 3: 12 bits of sub-millisecond time) as 32 hex digits."""
    ms, sub_ns = divmod(now_ns, 1_000_000)
    sub = sub_ns * 4096 // 1_000_000
    rand = int.from_bytes(os.urandom(8)) & _RAND62 if rand62 is None else rand62
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | sub << 64 | 0b10 << 62 | rand
    return f"{value:032x}"


def uuid7_str(now_ns: int, rand62: int | None = None) -> str:
    """A UUIDv7 in its canonical 8-4-4-4-12 form."""
    h = uuid7_hex(now_ns, rand62)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_RAND62 = (1 << 62) - 1


class RandomPool:
    """62-bit random numbers from `os.urandom`, fetched 4 KiB at a time (one syscall per 512 ids).

    A writer makes a new pool after fork, so parent and child never hand out the same numbers.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self._numbers: list[int] = []

    def next62(self) -> int:
        """The next random 62-bit number."""
        if not self._numbers:
            data = os.urandom(self._SIZE)
            self._numbers = [int.from_bytes(data[i:i + 8]) & _RAND62 for i in range(0, self._SIZE, 8)]
        return self._numbers.pop()


class UtcClock:
    """Formats `time.time_ns()` as RFC 3339 UTC with microseconds and Z, caching the per-second prefix."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._month = 0

    def format(self, now_ns: int) -> tuple[str, int]:
        """The `occurred_at` string and the month index (year * 12 + month - 1) of a time."""
        second, ns = divmod(now_ns, 1_000_000_000)
        if second != self._second:
            tm = time.gmtime(second)
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
            self._month = tm.tm_year * 12 + tm.tm_mon - 1
        return f"{self._prefix}.{ns // 1000:06d}Z", self._month


class EventChain:
    """One writer's position: its id, the next seq and the hash of its last line."""

    def __init__(self, writer_id: str, *, max_event_bytes: int, clock: Callable[[], int] = time.time_ns) -> None:
        self.writer_id = writer_id
        self._now_ns = clock
        self._random = RandomPool()
        self.seq = 0
        self.prev = ZERO_HASH
        self.max_event_bytes = max_event_bytes
        self._clock = UtcClock()

    def stamp(self, record: dict[str, Any]) -> tuple[bytes, int]:
        """Fill in the chain's fields and serialise; returns the line (with newline) and its month index."""
        now_ns = self._now_ns()
        record["event_id"] = uuid7_str(now_ns, self._random.next62())
        record["occurred_at"], month = self._clock.format(now_ns)
        record["writer"] = self.writer_id
        record["seq"] = self.seq
        record["prev"] = self.prev
        line = _serialise(record)
        _refuse_oversized(record, len(line), self.max_event_bytes)
        return line, month

    def advance(self, line: bytes) -> None:
        """Record that `line` (as returned by `stamp`) is now in the spool."""
        self.seq += 1
        self.prev = line_hash(memoryview(line)[:-1])


# The widest values `stamp` can give the chain's fields (seq as the largest signed 64-bit number).
_WIDEST_STAMP = {"event_id": uuid7_str(0, 0), "occurred_at": "9999-12-31T23:59:59.999999Z", "writer": "0" * 32,
                 "seq": 2**63 - 1, "prev": ZERO_HASH}


def check_stampable(record: dict[str, Any], max_event_bytes: int) -> None:
    """Raise the `EventError` that `stamp` would raise for this built record, whatever seq and time it gets.

    For callers that must know before an irreversible step (a database COMMIT) that the write cannot be refused
    by design; the chain's fields are taken at their widest, so a record that passes is never refused for size.
    """
    candidate = {**record, **_WIDEST_STAMP}
    _refuse_oversized(record, len(_serialise(candidate)), max_event_bytes)


def _refuse_oversized(record: dict[str, Any], size: int, max_event_bytes: int) -> None:
    if size > max_event_bytes:
        raise EventError(
            f"event {record.get('event_type')!r} is {size} bytes, over [events] max_event_bytes = "
            f"{max_event_bytes}; leave large values out of the payload"
        )


def _serialise(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError as exc:
        path = find_unencodable(record) or "?"
        raise EventError(f"event {record.get('event_type')!r}: field {path} cannot be written as JSON: {exc}") from exc


def find_unencodable(value: Any, path: str = "") -> str | None:
    """The dotted path of the first value orjson refuses, or None when every value encodes."""
    if isinstance(value, dict | list | tuple):
        for child_path, child in _children(value, path):
            if child is _BAD_KEY:
                return child_path
            found = find_unencodable(child, child_path)
            if found is not None:
                return found
        return None
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return path or "<root>"
    return None


_BAD_KEY = object()


def _children(value: dict[Any, Any] | list[Any] | tuple[Any, ...], path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        prefix = f"{path}." if path else ""
        return [(f"{prefix}{k}", v) if isinstance(k, str) else (f"{prefix}{k!r}", _BAD_KEY) for k, v in value.items()]
    return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
