"""The per-event stamp's fast paths (issue #17) give byte-for-byte what the plain computation gives."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlock.config import Config
from auditlock.handler.core import AuditCore
from auditlock.handler.record import RecordBuilder, RecordPlan
from auditlock.spool.chain import EventChain, UtcClock, tails_of, uuid7_str

# Every nanosecond from 1970 to the end of 9999 (occurred_at keeps four year digits).
_TIMES = st.integers(min_value=0, max_value=253402300799 * 10**9 + 999_999_999)
_RAND62 = st.integers(min_value=0, max_value=(1 << 62) - 1)


def reference_stamp(now_ns: int, rand62: int) -> tuple[str, str, int]:
    """occurred_at, event_id and month computed from scratch, with format specs and no cache."""
    seconds, ns = divmod(now_ns, 10**9)
    tm = time.gmtime(seconds)
    occurred_at = time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f".{ns // 1000:06d}Z"
    return occurred_at, uuid7_str(now_ns, rand62), tm.tm_year * 12 + tm.tm_mon - 1


def tail_of(rand62: int) -> str:
    """The `RandomPool` tail (variant and 62 random bits) that holds `rand62`."""
    return uuid7_str(0, rand62)[19:]


class TestClockTables:
    """The lookup tables give occurred_at and the id's time part exactly as the format specs did."""

    @settings(max_examples=400)
    @given(st.lists(st.tuples(_TIMES, st.integers(0, 2_000_000), _RAND62), min_size=1, max_size=8))
    def test_cached_stamp_equals_the_reference(self, steps: list[tuple[int, int, int]]) -> None:
        """For any times (some a few ns or ms after the previous one, so the caches are reused), the clock gives the
        reference occurred_at, event_id and month."""
        clock = UtcClock()
        for start, delta, rand in steps:
            for now in (start, min(start + delta, 253402300799 * 10**9 + 999_999_999)):
                assert clock.stamp(now, tail_of(rand)) == reference_stamp(now, rand)

    def test_every_sub_millisecond_step_is_formatted(self) -> None:
        """All 4096 values of the id's 12 sub-millisecond bits and all 1000 microseconds come out as the format
        specs give them."""
        clock = UtcClock()
        base = 1_800_000_000_123 * 1_000_000
        for now in {base + sub * 1_000_000 // 4096 for sub in range(4096)} | {base + us * 1000 for us in range(1000)}:
            assert clock.stamp(now, tail_of(7)) == reference_stamp(now, 7)


class TestStampedLine:
    """A stamped line is still the canonical dump of the record: the line format does not change."""

    @settings(max_examples=200)
    @given(_TIMES, st.integers(0, 2**63 - 1), st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=4))
    def test_line_is_the_canonical_dump(self, now: int, seq: int, payload: dict[str, str]) -> None:
        """A stamped line is `orjson.dumps` of the record with the reference chain fields, in schema order."""
        chain = EventChain("a" * 32, max_event_bytes=65536, clock=lambda: now)
        chain.seq = seq
        record: dict[str, Any] = {"schema": "auditlock/1", "event_id": None, "event_type": "order.updated",
                                  "occurred_at": None, "payload": payload}
        line, month = chain.stamp(record)
        occurred_at, event_id, ref_month = reference_stamp(now, int(record["event_id"][19:].replace("-", ""), 16)
                                                           & ((1 << 62) - 1))
        expected = {"schema": "auditlock/1", "event_id": event_id, "event_type": "order.updated",
                    "occurred_at": occurred_at, "payload": payload, "writer": "a" * 32, "seq": seq,
                    "prev": "0" * 64}
        assert (line, month) == (orjson.dumps(expected, option=orjson.OPT_APPEND_NEWLINE), ref_month)


class TestRandomTails:
    """The random tails made in C hold exactly their random bytes, under RFC 9562's variant."""

    @settings(max_examples=200)
    @given(st.integers(1, 64).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)))
    def test_tails_hold_the_random_bytes_under_the_variant(self, random: bytes) -> None:
        """Tail i is head i (bytes 2i, 2i+1 of the first quarter, variant 0b10 over the top two bits) in hex, a dash,
        and body i (6 bytes of the rest) in hex: 62 random bits an id, none repeated from another tail."""
        count = len(random) // 8
        expected = []
        for i in range(count):
            head, body = random[2 * i:2 * i + 2], random[2 * count + 6 * i:2 * count + 6 * i + 6]
            expected.append(f"{0x80 | head[0] & 0x3F:02x}{head[1]:02x}-{body.hex()}")
        assert tails_of(random) == expected

    def test_every_variant_digit_is_reachable(self) -> None:
        """All 256 head bytes map to the variant digits 8, 9, a, b with the byte's own low six bits kept."""
        heads = {tails_of(bytes([b, 0]) + bytes(6))[0][:2] for b in range(256)}
        assert heads == {f"{0x80 | b:02x}" for b in range(64)}


_MISSING = object()
_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=4)
                       | st.floats(allow_nan=False, allow_infinity=False), lambda inner: st.lists(inner, max_size=2),
                       max_leaves=4)
_SIDES = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _VALUES, max_size=4)


def reference_changes(builder: RecordBuilder, plan: RecordPlan, before: dict[str, Any], after: dict[str, Any]
                      ) -> dict[str, Any]:
    """`payload.changes` as the builder computed it before #17's fast path: every value through `_value`."""
    changes = {}
    for name, new in after.items():
        if name in plan.change_fields:
            old = before.get(name, _MISSING)
            if type(old) is not type(new) or bool(old != new):
                changes[name] = [builder._value(plan, name, None if old is _MISSING else old, "payload.changes"),
                                 builder._value(plan, name, new, "payload.changes")]
    for name, old in before.items():
        if name in plan.change_fields and name not in after:
            changes[name] = [builder._value(plan, name, old, "payload.changes"), None]
    return changes


class TestChangesFastPath:
    """payload.changes without a call per plain value equals the former computation."""

    @settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_SIDES, _SIDES, st.booleans())
    def test_changes_equal_the_reference(self, make_config: Callable[..., Config], before: dict[str, Any],
                                         after: dict[str, Any], hashed: bool) -> None:
        """For any before/after of plain, int, float and list values (a missing key, None, `1` against `True`), with
        and without an hmac field, `payload.changes` is what every value through `_value` gives."""
        target = {"fields": ["a", "b", "c"], "hmac": ["b"] if hashed else []}
        builder = AuditCore(make_config(targets={"Plain": target}))._builder
        fields = {"actor_id": "user:1", "target_type": "Plain", "target_id": "1", "before": before, "after": after}
        record = builder.build("order.updated", fields)
        plan = builder._plans[("order.updated", "Plain")]
        expected = reference_changes(builder, plan, before, after)
        assert record["payload"].get("changes") == expected
        assert orjson.dumps(record["payload"].get("changes")) == orjson.dumps(expected)
