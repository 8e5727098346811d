"""The spool reader (`scan_segment`): the prev chain inside a segment and across a rotation, torn tail vs damage.

Segments are written by the real writer, then edited on disk as tampering or a bad disk would.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.agent.recovery import recover_dead_writers
from auditlock.config import Config
from auditlock.spool.format import QUARANTINE_DIR
from auditlock.spool.reader import scan_segment
from tests.support.spool_child import scan_spool
from tests.support.written_spool import edit_line, reopen, write_orders

OTHER_HASH = "ab" * 32  # a well-formed prev that is the hash of no line


def change_status(event: dict[str, Any]) -> None:
    """Alter the line's content, leaving its writer, seq and prev intact."""
    event["payload"]["changes"]["status"][1] = "refunded"


def set_prev(event: dict[str, Any]) -> None:
    """Point the line's prev at a hash no line has."""
    event["prev"] = OTHER_HASH


@pytest.fixture
def one_segment(config: Config) -> Path:
    """A single sealed segment of 6 lines: 5 events and the writer's clean-end record."""
    [path] = write_orders(config, 5)
    assert len(path.read_bytes().splitlines()) == 6
    return path


class TestChainInsideASegment:
    """Invariant: every line's prev is the hash of the line before it in the segment; a break is damage."""

    def test_intact_segment_scans_clean(self, one_segment: Path) -> None:
        """Invariant: an untouched segment scans with no damage, no torn tail, every line counted."""
        scan = scan_segment(one_segment)
        assert (scan.damage, scan.torn_tail, scan.lines) == (None, False, 6)
        assert scan.good_bytes == one_segment.stat().st_size

    def test_changed_line_breaks_the_next_lines_prev(self, one_segment: Path) -> None:
        """Invariant: a line whose content changed (its own chain fields intact) is damage at the next line's prev."""
        edit_line(one_segment, 1, change_status)
        scan = scan_segment(one_segment)
        assert scan.damage is not None
        assert scan.damage.startswith("line 3 ")
        assert "prev" in scan.damage
        assert not scan.torn_tail

    def test_edited_prev_is_damage_at_that_line(self, one_segment: Path) -> None:
        """Invariant: a line whose prev was edited is damage at that line, naming prev."""
        edit_line(one_segment, 2, set_prev)
        scan = scan_segment(one_segment)
        assert scan.damage is not None
        assert scan.damage.startswith("line 3 ")
        assert f"prev {OTHER_HASH[:12]}" in scan.damage

    def test_changed_second_to_last_line_is_damage_not_a_torn_tail(self, one_segment: Path) -> None:
        """Invariant: a chain break at a complete last line is damage, never a torn tail to cut off."""
        edit_line(one_segment, 4, change_status)
        scan = scan_segment(one_segment)
        assert scan.damage is not None
        assert scan.damage.startswith("line 6 ")
        assert "prev" in scan.damage
        assert not scan.torn_tail

    def test_edited_prev_of_the_last_line_is_damage_not_a_torn_tail(self, one_segment: Path) -> None:
        """Invariant: a complete last line whose prev was edited is damage, never a torn tail."""
        edit_line(one_segment, 5, set_prev)
        scan = scan_segment(one_segment)
        assert scan.damage is not None
        assert scan.damage.startswith("line 6 ")
        assert not scan.torn_tail

    def test_incomplete_last_line_is_still_a_torn_tail(self, one_segment: Path) -> None:
        """Invariant: a last line cut short (no newline) is a torn tail, the lines before it good."""
        data = one_segment.read_bytes()
        one_segment.write_bytes(data[:-40])
        scan = scan_segment(one_segment)
        assert (scan.torn_tail, scan.damage, scan.lines) == (True, None, 5)


class TestRecoveryOfABrokenChain:
    """Invariant: the agent cuts off only a torn tail; a dead writer's segment with a chain break is kept whole."""

    def test_chain_break_at_the_last_line_is_quarantined_not_truncated(self, config: Config,
                                                                      one_segment: Path) -> None:
        """Invariant: recovery quarantines a dead writer's segment whose last line's prev is broken, every byte kept."""
        edit_line(one_segment, 4, change_status)
        path = reopen(one_segment)
        data = path.read_bytes()
        report = recover_dead_writers(config.spool.dir)
        assert report.quarantined == [path.name]
        assert report.truncated == []
        assert (config.spool.dir / QUARANTINE_DIR / path.name).read_bytes() == data


class TestChainAcrossARotation:
    """Invariant: a segment's first prev is the hash of the writer's previous segment's last line."""

    def test_scans_expose_each_segments_chain_ends(self, rotated: list[Path]) -> None:
        """Invariant: first_prev is the first line's prev and last_hash the sha256 of the last line's bytes."""
        for path in rotated:
            scan = scan_segment(path)
            lines = path.read_bytes().splitlines()
            assert scan.first_prev == orjson.loads(lines[0])["prev"]
            assert scan.last_hash == hashlib.sha256(lines[-1]).hexdigest()

    def test_intact_rotation_continues_the_chain(self, rotated: list[Path]) -> None:
        """Invariant: each segment's first prev equals the previous segment's last hash, unbroken."""
        scans = [scan_segment(path) for path in rotated]
        for previous, following in itertools.pairwise(scans):
            assert following.first_prev == previous.last_hash
        assert scan_spool(rotated[0].parent).chain_breaks() == []

    def test_changed_last_line_of_a_segment_breaks_the_next_segments_first_prev(self, rotated: list[Path]) -> None:
        """Invariant: altering a segment's last line is seen at the next segment's first prev."""
        last_index = len(rotated[1].read_bytes().splitlines()) - 1
        edit_line(rotated[1], last_index, change_status)
        before, after = scan_segment(rotated[1]), scan_segment(rotated[2])
        assert before.damage is None  # nothing inside the segment follows its last line
        assert after.first_prev != before.last_hash
        assert scan_spool(rotated[0].parent).chain_breaks() == [
            f"writer {after.name.writer}, segment {rotated[2].name}: its first prev does not continue the chain"]

    def test_edited_first_prev_of_a_segment_breaks_the_chain(self, rotated: list[Path]) -> None:
        """Invariant: a segment whose first line's prev was edited does not continue its predecessor."""
        edit_line(rotated[2], 0, set_prev)
        scan = scan_segment(rotated[2])
        assert scan.first_prev == OTHER_HASH != scan_segment(rotated[1]).last_hash
        assert scan.damage is not None
        assert scan.damage.startswith("line 2 ")  # line 1's bytes changed too
        breaks = scan_spool(rotated[0].parent).chain_breaks()
        assert breaks[0].endswith(f"segment {rotated[2].name}: its first prev does not continue the chain")
