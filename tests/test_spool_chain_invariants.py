"""The writer's stamping and the spool's safe open at their edges: what the mutation run (docs/mutation-survivors.md)
found no test pinned — the `occurred_at` text of a given instant (also after the clock steps back), the field an
unencodable-value error names, and a symlink under a segment's name refused by name.

Times are fixed instants (nanoseconds since the epoch), never today's date.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import orjson
import pytest

from auditlock.spool.chain import EventChain, RandomPool, UtcClock, find_unencodable, uuid7_hex
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.lines import parse_line
from auditlock.spool.segment import OpenSegment

# 2026-03-04T05:06:07.123456789Z and the second before it.
INSTANT_NS = 1_772_600_767_123_456_789
EARLIER_NS = INSTANT_NS - 1_000_000_000
MARCH_2026 = 2026 * 12 + 3 - 1


class TestUtcClock:
    """Invariant: `occurred_at` is the instant's UTC time to the microsecond, whatever time was formatted before."""

    def test_microseconds_are_truncated_not_scaled(self) -> None:
        """Invariant (occurred_at exact): ns 123456789 within the second → `.123456Z`, and the month index."""
        assert UtcClock().format(INSTANT_NS) == ("2026-03-04T05:06:07.123456Z", MARCH_2026)

    def test_clock_stepping_back_is_formatted_afresh(self) -> None:
        """Invariant (occurred_at exact): after a later second, an earlier one is not given the cached prefix."""
        clock = UtcClock()
        clock.format(INSTANT_NS)
        assert clock.format(EARLIER_NS) == ("2026-03-04T05:06:06.123456Z", MARCH_2026)


class TestUnencodableValueIsNamed:
    """Invariant: an event the writer cannot encode is refused naming the field, so the caller can fix it."""

    @pytest.mark.parametrize(("record", "path"), [
        ({"ok": 1, "payload": {"fine": "x", "bad": {1, 2}}}, "payload.bad"),
        ({"ok": [1, 2, object()]}, "ok[2]"),
        ({"ok": 1, "payload": {3: "int key"}}, "payload.3"),
    ], ids=["nested-set", "list-item", "non-string-key"])
    def test_the_first_bad_field_is_named(self, record: dict[str, object], path: str) -> None:
        """Invariant (actionable errors): the dotted path of the first value orjson refuses, past good siblings."""
        assert find_unencodable(record) == path

    def test_an_encodable_record_names_nothing(self) -> None:
        """Nothing to name when every value encodes."""
        assert find_unencodable({"a": [1, {"b": "c"}]}) is None


class TestSymlinkUnderASegmentName:
    """Invariant: a symlink under a segment's name is refused as what it is, never followed or raised raw."""

    def test_symlink_refused_by_name(self, tmp_path: Path) -> None:
        """Invariant (everything read is hostile): UnsafeSpoolFileError saying "a symbolic link"."""
        target = tmp_path / "elsewhere"
        target.write_bytes(b"not yours\n")
        link = tmp_path / f"{'d' * 32}.0000000000000000.jsonl"
        os.symlink(target, link)

        with pytest.raises(UnsafeSpoolFileError) as caught:
            open_spool_file(link)

        assert caught.value.reason == "a symbolic link, not a regular file"


class TestReadersOpenReadOnly:
    """Invariant: a reader of the spool opens segments read-only (verify and query never write; an auditor may not)."""

    def test_default_open_is_read_only(self, tmp_path: Path) -> None:
        """Invariant (read-only readers): `open_spool_file` without `write=True` gives an O_RDONLY descriptor."""
        segment = tmp_path / f"{'e' * 32}.0000000000000000.jsonl"
        segment.write_bytes(b"{}\n")

        with open_spool_file(segment) as f:
            assert fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


class TestUuid7SubMillisecond:
    """Invariant: event ids are RFC 9562 UUIDv7 whose 12 sub-millisecond bits scale the nanoseconds into 0..4095."""

    @pytest.mark.parametrize(("sub_ns", "sub"), [(0, 0), (500_000, 2048), (999_999, 4095)])
    def test_sub_millisecond_field_and_version(self, sub_ns: int, sub: int) -> None:
        """Invariant (valid, time-ordered ids): version 7, variant 10, rand_a = sub_ns * 4096 // 1e6 at the edges."""
        value = int(uuid7_hex(1_772_600_767_123 * 1_000_000 + sub_ns, rand62=0), 16)
        assert (value >> 76) & 0xF == 7
        assert (value >> 64) & 0xFFF == sub
        assert (value >> 62) & 0b11 == 0b10


class TestUuid7Randomness:
    """Invariant: two ids of the same instant differ (62 random bits), and the variant bits stay `10`."""

    def test_same_instant_different_ids(self) -> None:
        """Invariant (unique event ids): the random part is random and confined to its 62 bits."""
        first, second = (int(uuid7_hex(INSTANT_NS), 16) for _ in range(2))
        assert first != second
        assert (first >> 62) & 0b11 == (second >> 62) & 0b11 == 0b10


class TestUuid7RandomBits:
    """Invariant: every one of the 62 random bits of a UUIDv7 (writer and agent ids) varies."""

    def test_each_random_bit_is_seen_set_and_clear(self) -> None:
        """Invariant (unique ids): over 128 ids of one instant each random bit is both 1 and 0 somewhere (a bit
        stuck for all 128 by chance: 2**-127)."""
        ids = [int(uuid7_hex(INSTANT_NS), 16) & ((1 << 62) - 1) for _ in range(128)]
        ever_set = ever_clear = 0
        for value in ids:
            ever_set |= value
            ever_clear |= ~value
        assert (ever_set, ever_clear & ((1 << 62) - 1)) == ((1 << 62) - 1, (1 << 62) - 1)


class TestRandomPoolTails:
    """Invariant: every tail a `RandomPool` hands out is a well-formed UUID tail, across its 4 KiB refills."""

    def test_three_refills_of_well_formed_tails(self) -> None:
        """Invariant (valid event ids): 1600 tails (512 a refill) all read `vxxx-xxxxxxxxxxxx`, the variant digit
        8-b — none cut short at the end of a refill."""
        pool = RandomPool()
        tails = [pool.next_tail() for _ in range(1600)]
        bad = [tail for tail in tails if not re.fullmatch(r"[89ab][0-9a-f]{3}-[0-9a-f]{12}", tail)]
        assert bad == []


class TestLineThatIsNotAnObject:
    """Invariant: a line that is valid JSON but not an object is named, never an exception out of the reader."""

    @pytest.mark.parametrize("line", [b"[1, 2]\n", b"7\n", b'"text"\n'], ids=["array", "number", "string"])
    def test_named_as_not_an_event(self, line: bytes) -> None:
        """Invariant (everything read is hostile): "not an auditlock/1 JSON object"."""
        parsed = parse_line(line)
        assert (parsed.event, parsed.problem) == (None, "not an auditlock/1 JSON object")


class TestAbandonedSegmentDescriptor:
    """Invariant: a segment closed twice closes nothing else (its descriptor is forgotten on the first close)."""

    def test_second_abandon_leaves_the_standard_descriptors_open(self, tmp_path: Path) -> None:
        """Invariant (descriptor hygiene): abandon() twice never closes fd 0, 1 or 2 (or any other descriptor)."""
        segment = OpenSegment.create(tmp_path, "f" * 32, 0, MARCH_2026)
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        try:
            segment.abandon()
            segment.abandon()
            for fd in (0, 1, 2):
                os.fstat(fd)
        finally:
            for fd, copy in enumerate(saved):
                os.dup2(copy, fd)
                os.close(copy)


class TestRefusalClosesItsDescriptor:
    """Invariant: a refused spool file leaves no descriptor open (an agent refusing planted files every pass must not
    run out of descriptors)."""

    def test_refused_fifo_leaks_no_descriptor(self, tmp_path: Path) -> None:
        """Invariant (bounded resources): refusing a FIFO closes the descriptor it opened to look at it."""
        fifo = tmp_path / f"{'f' * 32}.0000000000000000.jsonl"
        os.mkfifo(fifo)
        before = len(os.listdir("/proc/self/fd"))

        with pytest.raises(UnsafeSpoolFileError):
            open_spool_file(fifo)

        assert len(os.listdir("/proc/self/fd")) == before


class TestReadBound:
    """Invariant: `open_spool_file(path, max_bytes)` reads a file of up to `max_bytes` bytes, not one byte more."""

    def test_exactly_the_bound_opens_and_one_byte_over_is_refused(self, tmp_path: Path) -> None:
        """Invariant (bounded memory, no false refusal): `max_bytes` bytes open; `max_bytes + 1` is refused by name."""
        at_bound, over = tmp_path / "at_bound", tmp_path / "over"
        at_bound.write_bytes(b"x" * 100)
        over.write_bytes(b"x" * 101)
        with open_spool_file(at_bound, 100) as opened:
            assert opened.read() == b"x" * 100
        with pytest.raises(UnsafeSpoolFileError, match="101 bytes, over the read bound of 100 bytes"):
            open_spool_file(over, 100)


class TestFirstPrevIsSixtyFourZeros:
    """Invariant: a writer's seq 0 links to 64 zeros (the format every reader and verify expects, by its text)."""

    def test_first_line_prev_is_64_zeros(self) -> None:
        """Invariant (the on-disk format): the first line's `prev` is the text of 64 zeros, not a shorter or
        longer run that writer and readers would agree on only within one version."""
        chain = EventChain(uuid7_hex(1), max_event_bytes=4096)
        line, _month = chain.stamp({"event_type": "order.updated"})
        assert orjson.loads(line)["prev"] == "0" * 64
