"""Reading segments back: stream lines, check each against `spool.lines` and the chain (writer, seq, prev), find
a torn tail.

Used by the agent (recovery, shipping) and by `query --include-spool`. Never writes. Files are opened with
`spool.files.open_spool_file` (no symlink, no FIFO, a size bound).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import WRITER_CLOSED, SegmentName, line_hash, parse_segment_name
from auditlock.spool.lines import (
    EVENT_TYPE_INDEX,
    MAX_LINE_BYTES,
    OCCURRED_AT_INDEX,
    PREV_INDEX,
    RETENTION_INDEX,
    SEQ_INDEX,
    WRITER_INDEX,
    checked_event,
    parse_line,
)


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


def iter_lines(path: Path, max_bytes: int | None = None) -> Iterator[bytes]:
    """Every line of a spool file including its newline (the last may lack it), streamed. The file is opened with
    `open_spool_file` (no symlink, no FIFO, regular files within `max_bytes` only)."""
    with open_spool_file(path, max_bytes) as f:
        yield from f


def scan_segment(path: Path, max_bytes: int | None = None, *, source: BinaryIO | None = None) -> SegmentScan:
    """Check every line of a segment; a last line cut short by a crash is torn, any other bad line is damage.

    Only what a crash can leave counts as torn: an incomplete or unparseable *last* line. A chain problem (writer,
    seq, prev) or a crafted shape (see `spool.lines`) on a well-formed line is damage even on the last line — no
    crash writes a whole line with the wrong prev, so cutting it off as torn would delete a genuine event and hide
    the change to the line before it. `source` is the segment already open (the agent's locked descriptor);
    otherwise it is opened with `open_spool_file` (which raises `UnsafeSpoolFileError`).
    """
    name = parse_segment_name(path.name)
    if name is None:
        raise ValueError(f"{path} is not a segment file name")
    if source is None:
        with open_spool_file(path, max_bytes) as f:
            return _scan(SegmentScan(path, name), f)
    source.seek(0)
    return _scan(SegmentScan(path, name), source)


def _scan(scan: SegmentScan, lines: Iterable[bytes]) -> SegmentScan:
    pending_tear: str | None = None
    for line in lines:
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
    parsed = parse_line(line)
    if parsed.event is None:
        return _LineProblem(f"{where}: {parsed.problem}", could_be_torn=parsed.malformed)
    event = parsed.event
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


class LineSink(Protocol):
    """Where `stream_lines` puts a segment's valid lines: whole lines (newlines kept) of one (month, class) key."""

    def write(self, key: tuple[str, str], lines: bytes | memoryview, count: int, first: str, last: str) -> None:
        """`count` lines of `key` in file order; `first`/`last` their earliest and latest `occurred_at`. `lines`
        is only valid during the call (a view of the reader's chunk)."""


@dataclass
class SegmentEnd:
    """A sealed segment's writer position once every line of it was read and checked."""

    lines: int
    last_seq: int | None
    last_hash: str | None
    closed: bool = False  # the last line is the writer's clean-end record


@dataclass
class LineGroup:
    """Lines of one (UTC month, retention class) within a segment, in file order."""

    lines: list[bytes] = field(default_factory=list)
    first: str = ""
    last: str = ""


@dataclass
class GroupedSegment(SegmentEnd):
    """A sealed segment's lines grouped in memory (`group_lines`), with its writer position."""

    groups: dict[tuple[str, str], LineGroup] = field(default_factory=dict)


class _Groups:
    """A `LineSink` that keeps every line in memory, grouped (for tests and tools; the agent streams)."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], LineGroup] = {}

    def write(self, key: tuple[str, str], lines: bytes | memoryview, count: int, first: str, last: str) -> None:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = LineGroup(first=first, last=last)
        group.lines += bytes(lines).splitlines(keepends=True)
        group.first, group.last = min(group.first, first), max(group.last, last)


def group_lines(path: Path, max_bytes: int | None = None) -> GroupedSegment:
    """`stream_lines` with every line kept in memory, grouped by (month, class): for tests and tools, whose
    segments are small. The agent streams (`stream_lines` into its object builders)."""
    sink = _Groups()
    end = stream_lines(path, sink, max_bytes)
    return GroupedSegment(end.lines, end.last_seq, end.last_hash, end.closed, sink.groups)


def stream_lines(path: Path, sink: LineSink, max_bytes: int | None = None, *,
                 max_line_bytes: int = MAX_LINE_BYTES) -> SegmentEnd:
    """Read a sealed segment for shipping: every line checked as `spool.lines` defines a valid line and against
    the chain (writer, seq continuity, and each line's `prev` the hash of the line before it), and handed to
    `sink` by (`occurred_at` month, `retention`) in file order. Raises `DamagedSegmentError` on any bad line
    (lines already handed over are then to be discarded), `UnsafeSpoolFileError` for a file that is not a
    regular one within `max_bytes`.

    Read in chunks of `CHUNK_BYTES`: memory does not grow with the segment. A line longer than `max_line_bytes`
    (no writer writes one) is damage, found before more of it is read.
    """
    name = parse_segment_name(path.name)
    if name is None:
        raise ValueError(f"{path} is not a segment file name")
    chain = _Chain(path, name)
    carry = b""
    with open_spool_file(path, max_bytes) as f:
        while chunk := f.read(CHUNK_BYTES):
            data = carry + chunk if carry else chunk
            bodies = data.split(b"\n")
            carry = bodies.pop()  # after the last newline: the start of a line the next chunk continues
            if bodies:
                chain.check(bodies, memoryview(data)[:len(data) - len(carry)], sink)
            if len(carry) > max_line_bytes:
                raise DamagedSegmentError(path, f"line {chain.index + 1}: longer than {max_line_bytes} bytes (no "
                                                "writer writes such a line)")
    if carry:
        raise DamagedSegmentError(path, chain.problem(carry))
    return chain.end()


_NO_MONTH = "\n"  # no time starts with it: the first line of a chunk starts a run
CHUNK_BYTES = 256 * 1024  # ~500 events: per-chunk costs vanish, and the working set stays at a few chunks


class _Chain:
    """The chain state of a segment being streamed, and the per-line check. `check` runs for every shipped
    event, hence its flat shape and local names; a bad line leaves it for `problem`, which says what is wrong."""

    def __init__(self, path: Path, name: SegmentName) -> None:
        self.path = path
        self.first_seq = name.first_seq
        self.writer = name.writer
        self.expected = name.first_seq
        self.last_hash: str | None = None
        self.last_values: tuple[Any, ...] = ()  # the last line's values (`checked_event`), empty before one

    @property
    def index(self) -> int:
        """The 0-based index in the segment of the next line."""
        return self.expected - self.first_seq

    def check(self, bodies: list[bytes], block: memoryview, sink: LineSink) -> None:
        """Check the lines `bodies` (without their newlines) of `block` (them with their newlines) and hand them to
        `sink` by key: the whole block when its lines all have one key (the usual case), else joined per key.

        Per line: `checked_event`, the chain (seq, writer, prev), the line's hash; the key is compared with the
        current run's (month prefix, class) and the run's time bounds kept in locals. Lines are grouped only
        where the key changes (`_hand_over`)."""
        expected, writer, last_hash = self.expected, self.writer, self.last_hash
        base = expected  # a line's index in the chunk is `expected - base`
        runs: list[_Run] = []
        month, retention, first, last, start = _NO_MONTH, "", "", "", 0
        values: tuple[Any, ...] = ()
        for body in bodies:
            checked = checked_event(body)
            if checked is None:
                raise self._damaged(body, expected, last_hash)
            values = checked[1]
            if (values[SEQ_INDEX] != expected or values[WRITER_INDEX] != writer
                    or (last_hash is not None and values[PREV_INDEX] != last_hash)):
                raise self._damaged(body, expected, last_hash)
            occurred_at = values[OCCURRED_AT_INDEX]
            if not occurred_at.startswith(month) or values[RETENTION_INDEX] != retention:
                if expected != base:
                    runs.append(_Run(start, expected - base, (month, retention), first, last))
                month, retention, start = occurred_at[:7], values[RETENTION_INDEX], expected - base
                first = last = occurred_at
            elif occurred_at < first:
                first = occurred_at
            elif occurred_at > last:
                last = occurred_at
            expected += 1
            last_hash = sha256(body).hexdigest()
        self.expected, self.last_hash, self.last_values = expected, last_hash, values
        runs.append(_Run(start, len(bodies), (month, retention), first, last))
        _hand_over(runs, bodies, block, sink)

    def _damaged(self, body: bytes, expected: int, last_hash: str | None) -> DamagedSegmentError:
        """The error for `body`, the line after the chain state (`expected`, `last_hash`) `check` reached."""
        self.expected, self.last_hash = expected, last_hash  # what `problem` compares with
        return DamagedSegmentError(self.path, self.problem(body + b"\n"))

    def problem(self, line: bytes) -> str:
        """Why `line`, the next line, is not a valid continuation of the chain."""
        return _shipping_problem(line, self.writer, self.expected, self.last_hash, self.index)

    def end(self) -> SegmentEnd:
        """The writer position after the last line."""
        lines = self.index
        closed = bool(self.last_values) and self.last_values[EVENT_TYPE_INDEX] == WRITER_CLOSED
        return SegmentEnd(lines, self.expected - 1 if lines else None, self.last_hash, closed)


@dataclass(frozen=True)
class _Run:
    """Consecutive lines [start, end) of a chunk with one (month, class) key, and their earliest and latest time."""

    start: int
    end: int
    key: tuple[str, str]
    first: str
    last: str


def _hand_over(runs: list[_Run], bodies: list[bytes], block: memoryview, sink: LineSink) -> None:
    """Hand a checked chunk to `sink`: the whole block for one run, else each key's runs joined in file order."""
    if len(runs) == 1:
        run = runs[0]
        sink.write(run.key, block, len(bodies), run.first, run.last)
        return
    groups: dict[tuple[str, str], list[_Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    for key, same in groups.items():
        lines = [body for run in same for body in bodies[run.start:run.end]]
        sink.write(key, b"\n".join(lines) + b"\n", len(lines), min(run.first for run in same),
                   max(run.last for run in same))


def _shipping_problem(line: bytes, writer: str, expected_seq: int, last_hash: str | None, index: int) -> str:
    where = f"line {index + 1}"
    if not line.endswith(b"\n"):
        return f"{where}: incomplete line (no newline)"
    parsed = parse_line(line)
    if parsed.event is None:
        return f"{where}: {parsed.problem}"
    event = parsed.event
    if event["writer"] != writer:
        return f"{where}: writer {event['writer']!r} does not match the file name's {writer!r}"
    if event["seq"] != expected_seq:
        return f"{where}: seq {event['seq']} where {expected_seq} was expected"
    return (f"{where}: prev {event['prev'][:12]}… does not match the previous line's hash {str(last_hash)[:12]}… "
            "(the line before it was changed)")


def parse_event(line: bytes) -> dict[str, Any] | None:
    """An event dict if the line is a valid `auditlock/1` line (`spool.lines`), else None."""
    return parse_line(line).event


def first_occurred_at(path: Path) -> str | None:
    """The `occurred_at` of a segment's first line, or None if it has no valid first line, is gone, or is not a
    regular file (never blocks on a FIFO, never follows a symlink)."""
    try:
        with open_spool_file(path) as f:
            event = parse_event(f.readline(_FIRST_LINE_MAX))
    except (FileNotFoundError, UnsafeSpoolFileError):
        return None
    return event["occurred_at"] if event is not None else None


_FIRST_LINE_MAX = 4 * 1024 * 1024  # longer than any line a writer writes with a sane max_event_bytes
