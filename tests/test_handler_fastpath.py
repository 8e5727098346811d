"""The group-mode event path's shortcuts (issue #17, third round) decide exactly as the general path: the processor's
read of the name cache, the writer's inline rotation and capacity check, the clock's millisecond found by a
subtraction, `payload.changes` from mappings that are not dicts."""

from __future__ import annotations

import calendar
import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.config import Config, build_config
from auditlock.errors import EventError, SpoolError
from auditlock.handler.core import AuditCore
from auditlock.handler.processor import AuditProcessor
from auditlock.spool.chain import UtcClock
from auditlock.spool.writer import SpoolWriter
from tests.conftest import config_dict
from tests.support.spool_files import segment_paths
from tests.test_spool_stamp_fastpath import reference_stamp, tail_of

SEGMENT_MAX_BYTES = 4096  # the smallest each key allows
MAX_BYTES = 65536
MONTH_NS = [calendar.timegm((2031, month, 1, 0, 0, 0)) * 10**9 for month in (1, 2, 3)]


class SteppedClock:
    """The writer's clock: each call gives the next scheduled time (nanoseconds)."""

    def __init__(self) -> None:
        self.now = MONTH_NS[0]

    def __call__(self) -> int:
        return self.now


def reference_segments(attempts: list[tuple[bytes, int]]) -> tuple[list[list[bytes]], list[int]]:
    """The segments (their lines) and the refused attempts that the rules give, computed without the writer: a
    segment ends at a change of month or when the next line would take a non-empty one over `segment_max_bytes`; a
    line that would take the spool over `max_bytes` is refused (after the rotation it caused)."""
    segments: list[list[bytes]] = []
    current: list[bytes] | None = None
    month_of_current, size, total, refused = -1, 0, 0, []
    for index, (line, month) in enumerate(attempts):
        if current is not None and (month != month_of_current or (size > 0 and size + len(line) > SEGMENT_MAX_BYTES)):
            current = None
        if total + len(line) > MAX_BYTES:
            refused.append(index)
            continue
        if current is None:
            current, month_of_current, size = [], month, 0
            segments.append(current)
        current.append(line)
        size += len(line)
        total += len(line)
    return segments, refused


# One attempt: how long its payload is, and the month (index into MONTH_NS) the clock shows when it is written.
_ATTEMPTS = st.lists(st.tuples(st.integers(0, 200) | st.integers(2000, 3800), st.sampled_from([0, 0, 0, 1, 2])),
                     min_size=30, max_size=60)


class TestWriterFastPath:
    """The writer's inline check (same month, room in the segment, room in the spool) never accepts a line the
    general path (`_prepare_segment`: rotate, check capacity, open) would have handled otherwise."""

    @settings(max_examples=60, deadline=None)
    @given(_ATTEMPTS)
    def test_segments_and_refusals_are_the_rules(self, attempts: list[tuple[int, int]]) -> None:
        """For any run of lines of any length, in months going forward and back, the spool's segments hold exactly
        the lines, in the segments, and refuse exactly the attempts, that the rotation and capacity rules give."""
        with tempfile.TemporaryDirectory() as tmp:
            spool = Path(tmp) / "spool"
            config = build_config(config_dict(spool, spool={
                "dir": str(spool), "durability": "group", "segment_max_bytes": SEGMENT_MAX_BYTES,
                "max_bytes": MAX_BYTES, "flush_interval_ms": 600_000, "segment_max_age_s": 3600}))
            clock = SteppedClock()
            writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes, clock=clock)
            written: list[tuple[bytes, int]] = []
            try:
                for length, month in attempts:
                    clock.now = MONTH_NS[month] + len(written) * 1000
                    record = {"schema": "auditlock/1", "event_id": None, "event_type": "order.updated",
                              "occurred_at": None, "payload": {"note": "x" * length}}
                    with contextlib.suppress(SpoolError):  # refused: the spool is full
                        writer.append(record)
                    written.append((orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE), month))
            finally:
                writer.closing_record = None
                writer.close()
            segments = [path.read_bytes().splitlines(keepends=True) for path in segment_paths(spool)]
        expected, refused = reference_segments(written)
        kept = [line for index, (line, _month) in enumerate(written) if index not in refused]
        assert [line for segment in segments for line in segment] == kept  # also: a refused line took no seq
        assert [len(segment) for segment in segments] == [len(segment) for segment in expected]


class TestClockMillisecond:
    """The clock's cached millisecond ends exactly at its last nanosecond, whichever way time moves."""

    @pytest.mark.parametrize("step", [-1_000_001, -1_000_000, -1, 1, 999_999, 1_000_000, 1_000_001, 86_400 * 10**9])
    def test_every_boundary_is_the_reference(self, step: int) -> None:
        """From each nanosecond of a millisecond's edges, the next time (a step away, across the edge or not) is
        stamped as the reference computes it from scratch."""
        base = 1_900_000_000_123 * 1_000_000
        for start in (base, base + 1, base + 999_999):
            clock = UtcClock()
            assert clock.stamp(start, tail_of(5)) == reference_stamp(start, 5)
            assert clock.stamp(start + step, tail_of(6)) == reference_stamp(start + step, 6)


class TestProcessorNameCache:
    """The processor's read of the core's name cache decides as `AuditCore.is_audit_event` does, on the first
    event of a name (cache empty) and every later one (cache filled)."""

    @pytest.fixture
    def processor(self, make_config: Callable[..., Config], closing: Callable[[Any], Any]) -> AuditProcessor:
        """A processor writing `order.*` events (group mode)."""
        return closing(AuditProcessor(make_config(spool={"durability": "group"})))  # type: ignore[no-any-return]

    @pytest.mark.parametrize("name", ["cart.viewed", None, 7, b"order.updated", ("order.updated",)])
    def test_a_name_that_is_not_audit_passes_every_time(self, processor: AuditProcessor, name: object) -> None:
        """An event whose name is no audit event type (or not a str) passes on untouched, the second time too."""
        for _ in range(2):
            event = {"event": name, "status": "paid"}
            assert processor(None, "info", dict(event)) == event
        assert processor.core.writer.stats["events"] == 0

    def test_an_unhashable_name_passes(self, processor: AuditProcessor) -> None:
        """A list as the event name (not hashable: no cache entry can hold it) passes on untouched."""
        event = {"event": ["order.updated"], "status": "paid"}
        assert processor(None, "info", dict(event)) == event

    def test_a_str_subclass_name_is_decided_by_its_text(self, processor: AuditProcessor) -> None:
        """A str subclass naming an audit type is written, the second time too (the cache holds str names)."""

        class Name(str):
            """A str subclass, as a logging library might pass."""

        for _ in range(2):
            with pytest.raises(structlog.DropEvent):
                processor(None, "info", {"event": Name("order.updated"), "actor_id": "user:1"})
        assert processor.core.writer.stats["events"] == 2

    def test_an_audit_name_is_written_every_time(self, processor: AuditProcessor) -> None:
        """An audit event is written and leaves the log stream on its first and every later call."""
        for _ in range(3):
            with pytest.raises(structlog.DropEvent):
                processor(None, "info", {"event": "order.updated", "actor_id": "user:1"})
        assert processor.core.writer.stats["events"] == 3

    def test_a_misspelt_audit_event_is_refused_every_time(self, processor: AuditProcessor) -> None:
        """An unmatched name carrying audit arguments raises `EventError` on its first and every later call."""
        for _ in range(2):
            with pytest.raises(EventError, match="matches no"):
                processor(None, "info", {"event": "ordr.updated", "target_type": "Order"})


class FrozenMapping(Mapping[str, Any]):
    """A read-only mapping that is not a dict (as an ORM's row proxy is)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


_SIDES = st.dictionaries(st.sampled_from(["status", "total", "note"]),
                         st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3), max_size=3)


class TestChangesOfMappings:
    """`payload.changes` of mappings that are not dicts is what the same values as dicts give."""

    @settings(max_examples=150, deadline=None)
    @given(_SIDES, _SIDES)
    def test_mappings_give_the_changes_of_dicts(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """For any before/after (keys missing on either side, None, `1` against `True`), read-only mappings give
        the changes dicts give, key for key and in the same order."""
        with tempfile.TemporaryDirectory() as tmp:
            core = AuditCore(build_config(config_dict(Path(tmp) / "spool")))
            changes = core.changes("order.updated", "Order", FrozenMapping(before), FrozenMapping(after))
            assert orjson.dumps(changes) == orjson.dumps(core.changes("order.updated", "Order", before, after))

    @pytest.mark.parametrize(("old", "new"), [(1, True), (0, False), (True, 1), (1, 1.0), ("", None)])
    def test_equal_values_of_another_type_are_changes(self, old: Any, new: Any) -> None:
        """A value replaced by an equal one of another type (`1` by `True`, `1` by `1.0`) is a change."""
        with tempfile.TemporaryDirectory() as tmp:
            core = AuditCore(build_config(config_dict(Path(tmp) / "spool")))
            assert core.changes("order.updated", "Order", {"status": old}, {"status": new}) == {"status": [old, new]}
