"""The agent's shipping-time read of a sealed segment (`group_lines`): what it returns for an intact segment, and
the named damage it refuses. Found by the mutation run (docs/testing.md): only the slow agent tests reached it.

Segments are written by the real writer, then edited on disk as tampering or a bad disk would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.archive.content import unreadable_line
from auditlock.config import Config
from auditlock.spool.format import SCHEMA, line_hash, parse_segment_name
from auditlock.spool.reader import DamagedSegmentError, first_occurred_at, group_lines, scan_segment
from tests.support.hostile_spool import rechain, set_field
from tests.support.written_spool import edit_line, lines_of, write_orders

Edit = Callable[[dict[str, Any]], None]


class TestIntactSegment:
    """An intact segment yields every line once, in order, grouped by month and class, with its writer position."""

    @pytest.mark.parametrize("index", [0, 1, -1], ids=["first", "middle", "last"])
    def test_writer_position_and_lines(self, rotated: list[Path], index: int) -> None:
        """Invariant (writer position): line count, last seq, last line's hash and closed flag are exact."""
        path = rotated[index]
        raw = lines_of(path)
        name = parse_segment_name(path.name)
        assert name is not None

        grouped = group_lines(path)

        assert grouped.lines == len(raw)
        assert grouped.last_seq == name.first_seq + len(raw) - 1
        assert grouped.last_seq == orjson.loads(raw[-1])["seq"]
        assert grouped.last_hash == line_hash(raw[-1][:-1])
        assert grouped.closed is (path == rotated[-1]), "only the last segment ends with the clean-end record"
        assert [line for group in grouped.groups.values() for line in group.lines] == raw

    def test_group_bounds_are_the_earliest_and_latest_occurred_at(self, rotated: list[Path]) -> None:
        """Invariant (retain-until from the latest event): first/last are the min/max even out of order."""
        path = rotated[1]
        first = orjson.loads(lines_of(path)[0])["occurred_at"]
        month = first[:8]
        rechain(path, 2, set_field("occurred_at", f"{month}01T00:00:00.000000Z"))  # re-chained: only the bounds differ
        rechain(path, 3, set_field("occurred_at", f"{month}28T23:59:59.999999Z"))

        [group] = group_lines(path).groups.values()

        assert (group.first, group.last) == (f"{month}01T00:00:00.000000Z", f"{month}28T23:59:59.999999Z")

    def test_lines_of_another_month_form_their_own_group(self, rotated: list[Path]) -> None:
        """Invariant (one object per month and class): a line of another month is grouped apart, order kept."""
        path = rotated[1]
        rechain(path, 1, set_field("occurred_at", "1999-01-15T00:00:00.000000Z"))
        raw = lines_of(path)
        retention = orjson.loads(raw[0])["retention"]

        groups = group_lines(path).groups

        old = groups.pop(("1999-01", retention))
        assert old.lines == [raw[1]]
        [rest] = groups.values()
        assert rest.lines == raw[:1] + raw[2:]


def _gap(event: dict[str, Any]) -> None:
    event["seq"] += 1


def _foreign(event: dict[str, Any]) -> None:
    event["writer"] = "f" * 32


def _foreign_low(event: dict[str, Any]) -> None:
    event["writer"] = "0" * 32


def _event_id(event: dict[str, Any]) -> None:
    event["event_id"] = None


def _schema(event: dict[str, Any]) -> None:
    event["schema"] = "auditlock/0"


def _schema_newer(event: dict[str, Any]) -> None:
    event["schema"] = "auditlock/2"


def _retention(event: dict[str, Any]) -> None:
    event["retention"] = 7


def _occurred_at(event: dict[str, Any]) -> None:
    event["occurred_at"] = 20261206


class TestDamagedSegment:
    """Invariant: a sealed segment with any bad line is refused whole (quarantined by the agent), the line named."""

    @pytest.mark.parametrize(("edit", "says"), [
        (_gap, "seq {seq_plus_1} where {seq} was expected"),
        (_foreign, "writer 'ffffffffffffffffffffffffffffffff' does not match the file name's {writer!r}"),
        (_foreign_low, "writer '00000000000000000000000000000000' does not match the file name's {writer!r}"),
        (_schema, f"not an {SCHEMA} JSON object"),
        (_schema_newer, f"not an {SCHEMA} JSON object"),
        (_retention, f"not an {SCHEMA} JSON object"),
        (_occurred_at, f"not an {SCHEMA} JSON object"),
    ], ids=["seq-gap", "other-writer", "other-lower-writer", "schema", "newer-schema", "retention", "occurred-at"])
    def test_bad_line_is_named(self, rotated: list[Path], edit: Edit, says: str) -> None:
        """Invariant (no damaged segment shipped): the third line's damage raises, naming line 3 and why."""
        path = rotated[1]
        line = orjson.loads(lines_of(path)[2])
        edit_line(path, 2, edit)

        with pytest.raises(DamagedSegmentError) as caught:
            group_lines(path)

        seq, writer = line["seq"], line["writer"]
        # The reason may go on to say which field is wrong (spool/lines.py); it starts with what the test names.
        assert caught.value.reason.startswith("line 3: " + says.format(seq=seq, seq_plus_1=seq + 1, writer=writer))

    def test_damage_in_a_writers_first_segment_is_named(self, rotated: list[Path]) -> None:
        """Invariant (no damaged segment shipped): the line number counts from the segment's first seq (here 0)."""
        path = rotated[0]
        seq = orjson.loads(lines_of(path)[4])["seq"]
        edit_line(path, 4, _gap)

        with pytest.raises(DamagedSegmentError) as caught:
            group_lines(path)

        assert caught.value.reason == f"line 5: seq {seq + 1} where {seq} was expected"

    @pytest.mark.parametrize("edit", [_foreign, _foreign_low, _event_id, _occurred_at, _schema_newer],
                             ids=["other-writer", "other-lower-writer", "event-id", "occurred-at", "newer-schema"])
    def test_recovery_scan_names_the_bad_line(self, rotated: list[Path], edit: Edit) -> None:
        """Invariant (damage found before recovery seals): `scan_segment` reports the edited line as damage."""
        path = rotated[1]
        edit_line(path, 2, edit)

        scan = scan_segment(path)

        assert scan.damage is not None
        assert scan.damage.startswith("line 3"), scan.damage
        assert scan.lines == 2

    def test_last_line_without_newline(self, rotated: list[Path]) -> None:
        """Invariant (no torn line shipped): a sealed segment whose last line lacks its newline is refused."""
        path = rotated[1]
        count = len(lines_of(path))
        path.write_bytes(path.read_bytes()[:-1])

        with pytest.raises(DamagedSegmentError) as caught:
            group_lines(path)

        assert caught.value.reason == f"line {count}: incomplete line (no newline)"

    def test_last_line_ending_in_other_whitespace(self, rotated: list[Path]) -> None:
        """Invariant (no torn line shipped): a last line ending in a tab, not a newline, is incomplete (JSON allows
        the tab, so only the newline check refuses it)."""
        path = rotated[1]
        count = len(lines_of(path))
        path.write_bytes(path.read_bytes()[:-1] + b"\t")

        with pytest.raises(DamagedSegmentError) as caught:
            group_lines(path)

        assert caught.value.reason == f"line {count}: incomplete line (no newline)"

    def test_not_json(self, rotated: list[Path]) -> None:
        """Invariant (no damaged segment shipped): a line that is not JSON is refused."""
        path = rotated[1]
        raw = lines_of(path)
        path.write_bytes(b"".join([raw[0], b"\x00garbage\n", *raw[2:]]))

        with pytest.raises(DamagedSegmentError) as caught:
            group_lines(path)

        assert caught.value.reason.startswith(f"line 2: not an {SCHEMA} JSON object")


class TestChainPastSmallIntegers:
    """Invariant: seq numbers compare by value at any size (CPython caches only small ints: `is` would pass there)."""

    def test_long_chain_scans_clean_and_groups(self, make_config: Callable[..., Config]) -> None:
        """Invariant (no false damage): a chain past seq 256 scans and groups without damage."""
        paths = write_orders(make_config(spool={"segment_max_bytes": 65536}), 300)
        last = paths[-1]
        assert orjson.loads(lines_of(last)[-1])["seq"] > 256

        for path in paths:
            scan = scan_segment(path)
            assert (scan.damage, scan.torn_tail) == (None, False), path.name
            assert group_lines(path).lines == scan.lines


class TestFirstOccurredAt:
    """`first_occurred_at` (the open-segments report): the first line's time, or None when there is none."""

    def test_first_line_time(self, rotated: list[Path]) -> None:
        """The first complete line's `occurred_at`."""
        assert first_occurred_at(rotated[0]) == orjson.loads(lines_of(rotated[0])[0])["occurred_at"]

    def test_torn_first_line(self, rotated: list[Path]) -> None:
        """A first line without its newline (a writer mid-write) has no time yet."""
        rotated[0].write_bytes(lines_of(rotated[0])[0][:-9])
        assert first_occurred_at(rotated[0]) is None

    def test_file_gone(self, tmp_path: Path) -> None:
        """A segment sealed or shipped since it was listed is not an error."""
        assert first_occurred_at(tmp_path / "gone.open.jsonl") is None


class TestOneValidLineDefinition:
    """Invariant: the agent ships only lines the archive's readers read (`spool/lines.py` is both definitions)."""

    @pytest.mark.parametrize(("key", "value", "says"), [
        ("actor_ip", 5, "actor_ip is a int, not a string or null"),
        ("trace_id", ["x"], "trace_id is a list, not a string or null"),
        ("smuggled", "x", "a key 'smuggled' that is not in the auditlock/1 schema"),
    ], ids=["int-column", "list-column", "unknown-key"])
    def test_a_line_readers_would_skip_is_refused_at_shipping(self, rotated: list[Path], key: str, value: object,
                                                             says: str) -> None:
        """A re-chained line with a mistyped column or an unknown key is damage, with the reason readers give."""
        path = rotated[1]
        rechain(path, 2, set_field(key, value))
        line = lines_of(path)[2]

        with pytest.raises(DamagedSegmentError) as caught:
            group_lines(path)

        assert caught.value.reason.startswith(f"line 3: {says}")
        assert (unreadable_line(line[:-1]) or "").startswith(says)
