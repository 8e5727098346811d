"""Reading segments back: stream lines, check schema, writer, seq and prev chain, find a torn tail.

Used by the agent (recovery, shipping) and by `auditlock verify --spool`. Never writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from auditlock.spool.format import SCHEMA, WRITER_CLOSED, SegmentName, line_hash, parse_segment_name


@dataclass
class SegmentScan:
    """What a segment holds: the good lines' extent and chain, a torn tail, or damage (`damage` names the line)."""

    path: Path
    name: SegmentName
    lines: int = 0
    good_bytes: int = 0
    last_seq: int | None = None
    first_prev: str | None = None
    last_hash: str | None = None
    months: set[str] = field(default_factory=set)
    torn_tail: bool = False
    damage: str | None = None

    @property
    def next_seq(self) -> int:
        """The seq the writer's next segment starts at."""
        return self.name.first_seq if self.last_seq is None else self.last_seq + 1


def iter_lines(path: Path) -> Iterator[bytes]:
    """Every line of a file including its newline (the last may lack it), streamed."""
    with path.open("rb") as f:
        yield from f


def scan_segment(path: Path) -> SegmentScan:
    """Check every line of a segment; a last line cut short by a crash is torn, any other bad line is damage.

    Only what a crash can leave counts as torn: an incomplete or unparseable *last* line. A chain problem (writer,
    seq, prev) on a well-formed line is damage even on the last line — no crash writes a whole line with the
    wrong prev, so cutting it off as torn would delete a genuine event and hide the change to the line before it.
    """
    name = parse_segment_name(path.name)
    if name is None:
        raise ValueError(f"{path} is not a segment file name")
    scan = SegmentScan(path, name)
    pending_tear: str | None = None
    for line in iter_lines(path):
        if pending_tear is not None:  # a bad line with more after it: damage, not a torn tail
            scan.damage = pending_tear
            return scan
        problem = _check_line(scan, line)
        if problem is None:
            scan.lines += 1
            scan.good_bytes += len(line)
        elif problem.could_be_torn:
            pending_tear = problem.reason
        else:
            scan.damage = problem.reason
            return scan
    scan.torn_tail = pending_tear is not None
    return scan


@dataclass(frozen=True)
class _LineProblem:
    reason: str
    could_be_torn: bool  # what a write cut short by a crash leaves; only the last line may be torn


def _check_line(scan: SegmentScan, line: bytes) -> _LineProblem | None:
    """Check one line against the chain so far; on success advance the scan's chain state."""
    where = f"line {scan.lines + 1} (byte {scan.good_bytes})"
    if not line.endswith(b"\n"):
        return _LineProblem(f"{where}: incomplete line (no newline)", could_be_torn=True)
    event = parse_event(line)
    if event is None:
        return _LineProblem(f"{where}: not an {SCHEMA} JSON object", could_be_torn=True)
    problem = _chain_problem(scan, event, scan.next_seq)
    if problem:
        return _LineProblem(f"{where}: {problem}", could_be_torn=False)
    scan.first_prev = scan.first_prev or event["prev"]
    scan.last_seq = event["seq"]
    scan.last_hash = line_hash(memoryview(line)[:-1])
    scan.months.add(event["occurred_at"][:7])
    return None


def _chain_problem(scan: SegmentScan, event: dict[str, Any], expected_seq: int) -> str | None:
    if event["writer"] != scan.name.writer:
        return f"writer {event['writer']!r} does not match the file name's {scan.name.writer!r}"
    if event["seq"] != expected_seq:
        return f"seq {event['seq']} where {expected_seq} was expected"
    if scan.last_hash is not None and event["prev"] != scan.last_hash:
        return f"prev {event['prev'][:12]}… does not match the previous line's hash {scan.last_hash[:12]}…"
    return None


class DamagedSegmentError(Exception):
    """A line of a sealed segment is not a valid continuation of its chain; `reason` says which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class LineGroup:
    """Lines of one (UTC month, retention class) within a segment, in file order."""

    lines: list[bytes] = field(default_factory=list)
    first: str = ""
    last: str = ""


@dataclass
class GroupedSegment:
    """A sealed segment's lines grouped for shipping, with its writer position."""

    groups: dict[tuple[str, str], LineGroup]
    lines: int
    last_seq: int | None
    last_hash: str | None
    closed: bool = False  # the last line is the writer's clean-end record


def group_lines(path: Path) -> GroupedSegment:
    """Read a sealed segment for shipping: every line parsed and checked (schema, writer, seq continuity),
    grouped by (`occurred_at` month, `retention`). Raises `DamagedSegmentError` on any bad line.

    The per-line `prev` hashes are not recomputed here (that is `auditlock verify`'s job, on the archive);
    only the last line's hash is, as the writer position a digest records. This loop runs for every shipped
    event, hence its flat shape and local names.
    """
    name = parse_segment_name(path.name)
    if name is None:
        raise ValueError(f"{path} is not a segment file name")
    groups: dict[tuple[str, str], LineGroup] = {}
    expected, writer, last, event_type = name.first_seq, name.writer, b"", ""
    group_key: tuple[str, str] | None = None
    group = LineGroup()
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for line in path.read_bytes().splitlines(keepends=True):  # a segment is at most segment_max_bytes
        try:
            event = loads(line)
            occurred_at, retention = event["occurred_at"], event["retention"]
            ok = (line[-1] == 10 and event["seq"] == expected and event["writer"] == writer  # 10: newline
                  and event["schema"] == SCHEMA and type(occurred_at) is str and type(retention) is str)
        except (decode_error, KeyError, TypeError):
            ok = False
        if not ok:
            raise DamagedSegmentError(path, _shipping_problem(line, writer, expected, expected - name.first_seq))
        key = (occurred_at[:7], retention)
        if key != group_key:
            group_key = key
            group = groups.get(key) or groups.setdefault(key, LineGroup(first=occurred_at, last=occurred_at))
        group.lines.append(line)
        if occurred_at < group.first:
            group.first = occurred_at
        elif occurred_at > group.last:
            group.last = occurred_at
        expected += 1
        last = line
    if last:
        event_type = loads(last).get("event_type", "")
    lines = expected - name.first_seq
    return GroupedSegment(groups, lines, expected - 1 if lines else None,
                          line_hash(memoryview(last)[:-1]) if last else None, event_type == WRITER_CLOSED)


def _shipping_problem(line: bytes, writer: str, expected_seq: int, index: int) -> str:
    where = f"line {index + 1}"
    if not line.endswith(b"\n"):
        return f"{where}: incomplete line (no newline)"
    event = parse_event(line)
    if event is None or not isinstance(event.get("retention"), str):
        return f"{where}: not an {SCHEMA} JSON object"
    if event["writer"] != writer:
        return f"{where}: writer {event['writer']!r} does not match the file name's {writer!r}"
    return f"{where}: seq {event['seq']} where {expected_seq} was expected"


def parse_event(line: bytes) -> dict[str, Any] | None:
    """An event dict if the line is a well-formed `auditlock/1` object (required fields typed), else None."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("schema") != SCHEMA:
        return None
    ok = (
        isinstance(event.get("writer"), str)
        and isinstance(event.get("seq"), int)
        and isinstance(event.get("prev"), str)
        and isinstance(event.get("occurred_at"), str)
        and isinstance(event.get("event_id"), str)
    )
    return event if ok else None


def first_occurred_at(path: Path) -> str | None:
    """The `occurred_at` of a segment's first line, or None if it has no complete first line (or is gone)."""
    try:
        with path.open("rb") as f:
            event = parse_event(f.readline())
    except FileNotFoundError:
        return None
    return event["occurred_at"] if event is not None else None
