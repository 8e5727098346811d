"""The spool readers' line checks at their edges: what the mutation run (docs/mutation-survivors.md) found the
shipping check (`group_lines`) and recovery's scan (`scan_segment`) would let through or misname.

Segments are written by the real writer, then edited on disk as tampering or a bad disk would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.config import Config
from auditlock.spool.format import WRITER_CLOSED
from auditlock.spool.lines import MAX_LINE_DEPTH, parse_line, valid_event
from auditlock.spool.reader import DamagedSegmentError, first_occurred_at, group_lines, scan_segment
from tests.support.hostile_spool import rechain, set_field
from tests.support.written_spool import edit_line, lines_of, write_orders


def refusal(path: Path) -> str:
    """The reason `group_lines` refuses the segment with (fails if it does not)."""
    with pytest.raises(DamagedSegmentError) as caught:
        group_lines(path)
    return caught.value.reason


class TestShippingCheckEdges:
    """Invariant: the shipping check refuses every line the writer did not write, naming the right cause."""

    def test_last_line_ending_in_a_printable_byte(self, rotated: list[Path]) -> None:
        """Invariant (no torn line shipped): a last line whose newline became a space is incomplete."""
        path = rotated[1]
        count = len(lines_of(path))
        path.write_bytes(path.read_bytes()[:-1] + b" ")

        assert refusal(path) == f"line {count}: incomplete line (no newline)"

    @pytest.mark.parametrize("prev", ["0" * 64, "f" * 64], ids=["lower", "higher"])
    def test_prev_of_another_line_either_side(self, rotated: list[Path], prev: str) -> None:
        """Invariant (chain checked by equality): a prev sorting below or above the right hash is refused."""
        path = rotated[1]
        edit_line(path, 2, lambda event: event.update(prev=prev))

        assert refusal(path).startswith("line 3: prev ")

    def test_occurred_at_without_microseconds(self, rotated: list[Path]) -> None:
        """Invariant (one occurred_at form, it names object keys): a real time without its microseconds is refused."""
        path = rotated[1]
        rechain(path, 2, set_field("occurred_at", "2026-01-02T03:04:05Z"))

        assert refusal(path).startswith("line 3: occurred_at '2026-01-02T03:04:05Z' is not a UTC time")

    def test_replayed_lower_seq_is_named_as_a_seq_problem(self, rotated: list[Path]) -> None:
        """Invariant (named findings): a re-chained line with an earlier seq is named by its seq, not its prev."""
        path = rotated[1]
        seq = orjson.loads(lines_of(path)[2])["seq"]
        rechain(path, 2, set_field("seq", seq - 1))

        assert refusal(path) == f"line 3: seq {seq - 1} where {seq} was expected"

    def test_prev_damage_past_small_integers_is_named_as_prev(self, make_config: Callable[..., Config]) -> None:
        """Invariant (named findings): past seq 256 a prev edit is still named by its prev (seq compared by value)."""
        path = write_orders(make_config(spool={"segment_max_bytes": 65536}), 300)[-1]
        index = next(n for n, line in enumerate(lines_of(path)) if n and orjson.loads(line)["seq"] > 256)
        edit_line(path, index, lambda event: event.update(prev="0" * 64))

        assert refusal(path).startswith(f"line {index + 1}: prev ")


class TestClosedFlag:
    """Invariant: a segment is `closed` only when its last line is the writer's clean-end record."""

    def test_last_event_type_sorting_before_the_clean_end_is_not_closed(self, rotated: list[Path]) -> None:
        """Invariant (a missing tail is never taken for a clean end): an earlier-sorting last type → not closed."""
        path = rotated[1]
        earlier = "account.created"
        assert earlier < WRITER_CLOSED
        rechain(path, len(lines_of(path)) - 1, set_field("event_type", earlier))

        assert group_lines(path).closed is False


class TestRecoveryScanOfCraftedLastLine:
    """Invariant: a whole line not in the writer's JSON form is damage, even last — never a torn tail to cut off."""

    def test_reencoded_last_line_is_damage_not_torn(self, rotated: list[Path]) -> None:
        """Invariant (no crafted line cut as torn, none accepted): a last line with added whitespace is named."""
        path = rotated[1]
        raw = lines_of(path)
        event: dict[str, Any] = orjson.loads(raw[-1])
        path.write_bytes(b"".join(raw[:-1]) + json.dumps(event).encode() + b"\n")

        scan = scan_segment(path)

        assert scan.torn_tail is False
        assert scan.damage is not None
        assert scan.damage.startswith(f"line {len(raw)} ")
        assert "not in the writer's JSON form" in scan.damage

    def test_replayed_lower_seq_is_damage(self, rotated: list[Path]) -> None:
        """Invariant (damage found before recovery seals): a re-chained line with an earlier seq is damage."""
        path = rotated[1]
        seq = orjson.loads(lines_of(path)[2])["seq"]
        rechain(path, 2, set_field("seq", seq - 1))

        scan = scan_segment(path)

        where = f"line 3 (byte {len(b''.join(lines_of(path)[:2]))})"
        assert scan.damage == f"{where}: seq {seq - 1} where {seq} was expected"

    def test_impossible_date_in_the_last_line_is_damage_naming_it(self, rotated: list[Path]) -> None:
        """Invariant (no crafted line accepted or cut as torn): a month-13 occurred_at on the last line is damage."""
        path = rotated[1]
        count = len(lines_of(path))
        rechain(path, count - 1, set_field("occurred_at", "2026-13-01T00:00:00.000000Z"))

        scan = scan_segment(path)

        assert (scan.torn_tail, scan.lines) == (False, count - 1)
        assert scan.damage is not None
        assert scan.damage.startswith(f"line {count} ")
        assert "occurred_at '2026-13-01T00:00:00.000000Z' is not a UTC time" in scan.damage


def nested(kind: str, depth: int) -> object:
    """A JSON value `depth` containers deep: dicts ({"a": ...}) or lists ([...])."""
    value: object = 0
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return value


class TestNestingBound:
    """Invariant: no line nested deeper than MAX_LINE_DEPTH is valid, however its brackets are mixed."""

    @pytest.mark.parametrize("kind", ["dict", "list"])
    def test_too_deep_line_is_refused_naming_the_depth(self, rotated: list[Path], kind: str) -> None:
        """Invariant (bounded readers): a canonical line nested past the bound is invalid, and says so."""
        event = orjson.loads(lines_of(rotated[0])[0])
        event["payload"] = {"deep": nested(kind, MAX_LINE_DEPTH)}
        body = orjson.dumps(event)

        assert valid_event(body) is None
        parsed = parse_line(body + b"\n")
        assert parsed.event is None
        assert parsed.problem == f"nested more than {MAX_LINE_DEPTH} levels deep (a writer never writes that)"

    def test_many_shallow_brackets_are_valid(self, rotated: list[Path]) -> None:
        """Invariant (no false damage): more brackets than the bound, all shallow (50 empty lists), is a valid line."""
        event = orjson.loads(lines_of(rotated[0])[0])
        event["payload"] = {"lists": [[] for _ in range(50)]}
        body = orjson.dumps(event)

        assert valid_event(body) == event

    def test_deep_within_the_bound_among_many_brackets_is_valid(self, rotated: list[Path]) -> None:
        """Invariant (no false damage): exactly 40 levels deep plus 20 shallow lists (more brackets than the bound) is
        valid — the exact depth is measured, one level per container, and the bound is inclusive."""
        event = orjson.loads(lines_of(rotated[0])[0])
        event["payload"] = {"deep": nested("dict", 38), "lists": [[] for _ in range(20)]}
        body = orjson.dumps(event)

        assert body.count(b"[") + body.count(b"{") > MAX_LINE_DEPTH
        assert valid_event(body) == event

    @pytest.mark.parametrize(("depth", "valid"), [(40, True), (41, False)], ids=["40-valid", "41-refused"])
    def test_the_bound_is_40_levels(self, rotated: list[Path], depth: int, valid: bool) -> None:
        """Invariant (the documented bound, spool/lines.py): 40 levels deep is valid, 41 is not."""
        event = orjson.loads(lines_of(rotated[0])[0])
        event["payload"] = {"deep": nested("dict", depth - 2)}  # the event and the payload are the first two levels
        body = orjson.dumps(event)

        assert (valid_event(body) == event) is valid


class TestFirstOccurredAtOfHostileFiles:
    """Invariant: `first_occurred_at` answers None for anything under a segment name that is not a regular file —
    it never blocks on a FIFO, never follows a symlink, never raises (the agent's open-segment age check calls it)."""

    def test_fifo_under_a_segment_name_is_none(self, rotated: list[Path]) -> None:
        """A FIFO in place of a segment gives None at once (the reader opens it non-blocking and refuses it)."""
        rotated[0].unlink()
        os.mkfifo(rotated[0])
        assert first_occurred_at(rotated[0]) is None

    def test_symlink_under_a_segment_name_is_none(self, rotated: list[Path], tmp_path: Path) -> None:
        """A symlink to a valid segment elsewhere gives None: the reader does not follow it."""
        outside = tmp_path / "outside.jsonl"
        outside.write_bytes(rotated[1].read_bytes())
        assert first_occurred_at(outside) is not None
        rotated[1].unlink()
        rotated[1].symlink_to(outside)
        assert first_occurred_at(rotated[1]) is None

    def test_regular_segment_gives_its_first_lines_time(self, rotated: list[Path]) -> None:
        """The control: an intact segment gives its first line's `occurred_at`."""
        first = orjson.loads(lines_of(rotated[0])[0])
        assert first_occurred_at(rotated[0]) == first["occurred_at"]
