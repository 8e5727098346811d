"""Stamping a record into the next line of one writer's chain: event_id, occurred_at, writer, seq, prev.

Callers hold the writer's lock around `stamp` + `advance`, so ids, times and seq are assigned in one order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from hashlib import sha256
from typing import Any

import orjson

from auditlock.errors import EventError
from auditlock.spool.format import ZERO_HASH


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
    """The random tails of UUIDv7 strings (`vxxx-xxxxxxxxxxxx`: the variant and 62 random bits), made from
    `os.urandom` 4 KiB at a time (one syscall per 512 ids, formatted in C: `tails_of`).

    A writer makes a new pool after fork, so parent and child never hand out the same numbers.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self.tails: list[str] = []  # refilled in place: `EventChain.stamp` pops from it without a call

    def next_tail(self) -> str:
        """The next random tail."""
        if not self.tails:
            self.tails.extend(tails_of(os.urandom(self._SIZE)))
        return self.tails.pop()


def tails_of(random: bytes) -> list[str]:
    """UUID tails made from random bytes, 8 a tail: the first quarter gives each tail's 2-byte head (its top two
    bits replaced by RFC 9562's variant, 0b10), the rest its 6-byte body, and `bytes.hex` with a separator and
    `str.split` cut them apart without a Python step per tail (~2.5x faster than slicing one hex string)."""
    count = len(random) // 8
    heads = bytearray(random[:2 * count])
    heads[0::2] = heads[0::2].translate(_WITH_VARIANT)
    bodies = random[2 * count:8 * count]
    return list(map("-".join, zip(heads.hex(" ", 2).split(), bodies.hex(" ", 6).split(), strict=True)))


# A random byte -> the same byte with RFC 9562's variant (0b10) in its top two bits.
_WITH_VARIANT = bytes(0b1000_0000 | b & 0b0011_1111 for b in range(256))


class UtcClock:
    """Formats `time.time_ns()` as RFC 3339 UTC with microseconds and Z, and as the time part of a UUIDv7, caching
    what stays the same for a second (date, time, month) and for a millisecond (the id's 48-bit time)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._month = 0
        self._ms_start = _NEVER  # the first nanosecond of the cached millisecond
        self._ms_prefix = ""
        self._id_prefix = ""

    def format(self, now_ns: int) -> tuple[str, int]:
        """The `occurred_at` string and the month index (year * 12 + month - 1) of a time."""
        occurred_at, _id, month = self.stamp(now_ns, "")
        return occurred_at, month

    def stamp(self, now_ns: int, tail: str) -> tuple[str, str, int]:
        """`occurred_at`, the UUIDv7 string of this time ending in `tail` (`RandomPool.next_tail`), the month."""
        sub_ns = now_ns - self._ms_start  # one subtraction, no divmod, while the millisecond lasts
        if not 0 <= sub_ns < 1_000_000:
            self._new_millisecond(now_ns // 1_000_000)
            sub_ns = now_ns - self._ms_start
        # The 12 bits of sub-millisecond time (`* 4096 // 1_000_000`, reduced to stay within one int digit), as 3 hex
        # digits from two tables.
        sub = sub_ns * 512 // 125_000
        return (f"{self._ms_prefix}{_DIGITS3[sub_ns // 1000]}Z",
                f"{self._id_prefix}{_HEX1[sub >> 8]}{_HEX2[sub & 0xFF]}-{tail}", self._month)

    def _new_millisecond(self, ms: int) -> None:
        second, ms_of_second = divmod(ms, 1000)
        if second != self._second:
            tm = time.gmtime(second)
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
            self._month = tm.tm_year * 12 + tm.tm_mon - 1
        self._ms_start = ms * 1_000_000
        self._ms_prefix = f"{self._prefix}.{_DIGITS3[ms_of_second]}"
        h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        self._id_prefix = f"{h[:8]}-{h[8:]}-7"


_NEVER = -(2**64)  # a `_ms_start` no time is within a millisecond of

# `f"{n:03d}"` and `f"{n:03x}"` per event cost ~0.2 µs each (int.__format__ with a spec); a tuple index ~10 ns.
# 1000 + 16 + 256 short strings (~70 KB), the same text the format specs give.
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))
_HEX1 = tuple(f"{n:x}" for n in range(16))
_HEX2 = tuple(f"{n:02x}" for n in range(256))


class EventChain:
    """One writer's position: its id, the next seq and the hash of its last line."""

    def __init__(self, writer_id: str, *, max_event_bytes: int, clock: Callable[[], int] = time.time_ns) -> None:
        self.writer_id = writer_id
        self._now_ns = clock
        self._random = RandomPool()
        self._tails = self._random.tails
        self.seq = 0
        self.prev = ZERO_HASH
        self.max_event_bytes = max_event_bytes
        self._clock = UtcClock()

    def stamp(self, record: dict[str, Any]) -> tuple[bytes, int]:
        """Fill in the chain's fields and serialise; returns the line (with newline) and its month index."""
        tails = self._tails
        tail = tails.pop() if tails else self._random.next_tail()
        record["occurred_at"], record["event_id"], month = self._clock.stamp(self._now_ns(), tail)
        record["writer"] = self.writer_id
        record["seq"] = self.seq
        record["prev"] = self.prev
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError as exc:
            raise _unencodable(record, exc) from exc
        if len(line) > self.max_event_bytes:
            _refuse_oversized(record, len(line), self.max_event_bytes)
        return line, month

    def advance(self, line: bytes) -> None:
        """Record that `line` (as returned by `stamp`) is now in the spool."""
        self.seq += 1
        self.prev = sha256(line[:-1]).hexdigest()  # `format.line_hash`, without a call (a copy is cheaper than a view)


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
        raise _unencodable(record, exc) from exc


def _unencodable(record: dict[str, Any], exc: orjson.JSONEncodeError) -> EventError:
    path = find_unencodable(record) or "?"
    return EventError(f"event {record.get('event_type')!r}: field {path} cannot be written as JSON: {exc}")


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
