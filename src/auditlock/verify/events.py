"""Per-writer `seq` continuity and `prev` chains, and duplicate event ids, over events fed object by object.

Memory stays lean: inside one object (or segment) a writer's consecutive lines collapse into a *run*
(first_seq, first_prev, last_seq, last_hash, …) after their `prev` links were checked line by line; only runs
and event ids are kept. `finish` sorts each writer's runs and checks that they are contiguous and linked.
The lines whose hash a digest recorded (a writer's last line per batch, `last_hash`, `closed`) are *watched*:
their hash and type are kept as they stream by, and `finish` compares them with the digests' records.
A writer's events of different retention classes live in different objects, so runs are short where classes
interleave — correct, only more runs.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from auditlock.handler.event_types import CAPTURE_GAP as CAPTURE_GAP_EVENT
from auditlock.spool.format import WRITER_CLOSED, ZERO_HASH
from auditlock.verify.findings import (
    CAPTURE_GAP,
    CHAIN_BREAK,
    DIGEST_CLOSED_MISMATCH,
    DIGEST_HASH_MISMATCH,
    DUPLICATE_EVENT,
    SEQ_GAP,
    WRITER_TAIL_MISSING,
    OpenWriter,
    Report,
)

SHOWN_BAD_LINES = 10


@dataclass
class Run:
    """Consecutive lines of one writer inside one object or segment, their links already checked."""

    first_seq: int
    first_prev: str
    last_seq: int
    last_hash: str
    first_occurred_at: str
    last_occurred_at: str
    last_type: str
    where: str


@dataclass
class FedObject:
    """What one fed object held: its line count, unreadable lines and latest `occurred_at`."""

    events: int = 0
    bad_lines: list[int] = field(default_factory=list)  # the first `SHOWN_BAD_LINES` of them
    bad_count: int = 0
    last_occurred_at: str = ""


@dataclass(frozen=True)
class LineRecord:
    """What a digest says about one line: a writer's last line of a batch hashes to `last_hash`, and is (or is
    not, `closed`) the writer's clean-end record."""

    digest: str
    writer: str
    seq: int
    last_hash: str | None
    closed: bool | None


@dataclass(frozen=True)
class TailPolicy:
    """How `finish` judges a writer's start and end.

    `require_start`: a writer must start at seq 0 (False for the spool, whose shipped segments are gone; and
    for writers whose first event is in `since_month`, the first month of a `--since` range).
    `check_tail`: a writer must end with its clean-end record unless its last event is newer than
    `open_after` (or in `until_month`, the last month of an `--until` range).
    """

    require_start: bool = True
    check_tail: bool = True
    open_after: str = ""
    since_month: str | None = None
    until_month: str | None = None


class EventStreams:
    """Collects runs and event ids from fed lines; reports what breaks as it goes and in `finish`."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.runs: dict[str, list[Run]] = {}
        self.ids: set[int | str] = set()
        self.recorded: dict[str, tuple[int, int, str]] = {}
        self.line_records: list[LineRecord] = []
        self.watched: dict[tuple[str, int], list[tuple[str, str, str]]] = {}  # → (hash, event_type, where) seen

    def expect(self, writer: str, first_seq: int, last_seq: int, digest: str) -> None:
        """A digest says the archive holds seq first..last of a writer (checked in `finish`)."""
        known = self.recorded.get(writer)
        if known is None or last_seq > known[1]:
            self.recorded[writer] = (min(first_seq, known[0]) if known else first_seq, last_seq, digest)

    def expect_line(self, record: LineRecord) -> None:
        """A digest says what one line of the archive is (checked in `finish` if the line is there)."""
        self.line_records.append(record)
        self.watched.setdefault((record.writer, record.seq), [])

    def feed(self, where: str, lines: Iterable[bytes]) -> FedObject:
        """Check lines (without newlines) of one object or segment, in order; keep their runs.

        This loop runs for every verified event, hence its flat shape.
        """
        fed = FedObject()
        current: dict[str, Run] = {}
        ids, sha256, watched = self.ids, hashlib.sha256, self.watched
        for number, line in enumerate(lines, 1):
            event = _event(line)
            if event is None:
                fed.bad_count += 1
                if fed.bad_count <= SHOWN_BAD_LINES:  # a bomb of empty lines must not become a list
                    fed.bad_lines.append(number)
                continue
            writer, seq, prev, occurred_at, event_type, ident = event
            line_hash = sha256(line).hexdigest()
            if watched:
                seen = watched.get((writer, seq))
                if seen is not None:
                    seen.append((line_hash, event_type, where))
            run = current.get(writer)
            if run is not None and seq == run.last_seq + 1 and prev == run.last_hash:
                run.last_seq, run.last_hash = seq, line_hash
                run.last_occurred_at, run.last_type = occurred_at, event_type
            else:
                if run is not None:  # a jump in seq, or a broken link (reported by `finish`, with the others)
                    self.runs.setdefault(writer, []).append(run)
                current[writer] = Run(seq, prev, seq, line_hash, occurred_at, occurred_at, event_type, where)
            if ident in ids or event_type == CAPTURE_GAP_EVENT:
                self._noteworthy(ident, event_type, f"{where} (writer {writer} seq {seq})")
            else:
                ids.add(ident)
            fed.events += 1
            if occurred_at > fed.last_occurred_at:  # noqa: PLR1730 - max() costs a call per event
                fed.last_occurred_at = occurred_at
        for writer, run in current.items():
            self.runs.setdefault(writer, []).append(run)
        return fed

    def _noteworthy(self, ident: int | str, event_type: str, where: str) -> None:
        """A duplicate event id, or a capture gap (`auditlock.capture_gap`: database changes never captured)."""
        if ident in self.ids:
            self.report.add(DUPLICATE_EVENT, f"event {_id_text(ident)}", f"seen again in {where}")
            return
        self.ids.add(ident)
        self.report.add(CAPTURE_GAP, f"event {_id_text(ident)}",
                        f"in {where}: auditlock capture recorded a gap in its replication slot — database row "
                        "changes in that range were not captured (see the event's from_lsn / to_lsn)")

    def finish(self, policy: TailPolicy) -> None:
        """Check every writer's runs for gaps, broken links, overlaps, its start and its end."""
        for writer in sorted(self.runs):
            runs = sorted(self.runs[writer], key=lambda r: (r.first_seq, r.last_seq))
            self._check_start(writer, runs[0], policy)
            last = self._check_links(writer, runs)
            self._check_tail(writer, last, policy)
            self._check_recorded(writer, last)
        for writer, (first_seq, last_seq, digest) in sorted(self.recorded.items()):
            if writer not in self.runs:
                self.report.add(SEQ_GAP, f"writer {writer}", f"seq {first_seq}–{last_seq} missing: {digest} lists "
                                                             "them, and no event of this writer is in the archive")
        for record in self.line_records:
            self._check_line_record(record)
        self.report.count("writers", len(self.runs))

    def _check_line_record(self, record: LineRecord) -> None:
        """The recorded line hashes to `last_hash` and is a clean-end record exactly when `closed` says so.

        A line that is not in the archive is a seq gap (or lies outside the selected months), not this finding.
        """
        seen = self.watched.get((record.writer, record.seq))
        if not seen:
            return
        line = next((s for s in seen if s[0] == record.last_hash), seen[0])
        at = f"writer {record.writer} seq {record.seq}"
        if record.last_hash is not None and line[0] != record.last_hash:
            self.report.add(DIGEST_HASH_MISMATCH, record.digest,
                            f"{at}: it records last_hash {record.last_hash[:16]}…, the archive's line hashes to "
                            f"{line[0][:16]}… (in {line[2]})")
        if record.closed is not None and record.closed != (line[1] == WRITER_CLOSED):
            said = "closed (a clean end)" if record.closed else "not closed"
            self.report.add(DIGEST_CLOSED_MISMATCH, record.digest,
                            f"{at}: it records the writer {said}, the archive's line is {line[1]!r} (in {line[2]})")

    def _check_recorded(self, writer: str, last: Run) -> None:
        recorded = self.recorded.get(writer)
        if recorded is not None and recorded[1] > last.last_seq:
            self.report.add(SEQ_GAP, f"writer {writer}", f"seq {last.last_seq + 1}–{recorded[1]} missing: "
                                                         f"{recorded[2]} lists them, the archive ends at seq "
                                                         f"{last.last_seq} (in {last.where})")

    def _check_start(self, writer: str, first: Run, policy: TailPolicy) -> None:
        if first.first_seq == 0:
            if first.first_prev != ZERO_HASH:
                self.report.add(CHAIN_BREAK, f"writer {writer}", f"seq 0 in {first.where}: prev is not 64 zeros")
            return
        cut_by_since = policy.since_month is not None and first.first_occurred_at[:7] == policy.since_month
        if policy.require_start and not cut_by_since:
            # After the range's first month a late start is a missing head — or a writer idle all that month.
            idle = ("" if policy.since_month is None else f" — or the writer began before --since and wrote "
                    f"nothing in {policy.since_month}: verify from an earlier --since to tell")
            self.report.add(SEQ_GAP, f"writer {writer}",
                            f"seq 0–{first.first_seq - 1} missing (the first event present is seq "
                            f"{first.first_seq}, in {first.where}{idle})")

    def _check_links(self, writer: str, runs: list[Run]) -> Run:
        """Walk sorted runs; returns the run holding the writer's highest seq."""
        last = runs[0]
        for run in runs[1:]:
            if run.first_seq == last.last_seq + 1:
                if run.first_prev != last.last_hash:
                    there = "" if last.where == run.where else f" in {last.where}"
                    self.report.add(CHAIN_BREAK, f"writer {writer}",
                                    f"seq {run.first_seq} in {run.where}: prev does not match the hash of seq "
                                    f"{last.last_seq}{there}")
            elif run.first_seq > last.last_seq + 1:
                self.report.add(SEQ_GAP, f"writer {writer}",
                                f"seq {last.last_seq + 1}–{run.first_seq - 1} missing (between {last.where} "
                                f"and {run.where})")
            else:
                self.report.add(DUPLICATE_EVENT, f"writer {writer}",
                                f"seq {run.first_seq}–{min(run.last_seq, last.last_seq)} present more than once "
                                f"({run.where} and {last.where})")
                if run.last_seq <= last.last_seq:
                    continue
            last = run
        return last

    def _check_tail(self, writer: str, last: Run, policy: TailPolicy) -> None:
        if not policy.check_tail or last.last_type == WRITER_CLOSED:
            return
        cut_by_until = policy.until_month is not None and last.last_occurred_at[:7] == policy.until_month
        if last.last_occurred_at >= policy.open_after or cut_by_until:
            self.report.open_writers.append(OpenWriter(writer, last.last_seq, last.last_occurred_at))
            return
        self.report.add(WRITER_TAIL_MISSING, f"writer {writer}",
                        f"its last event (seq {last.last_seq} at {last.last_occurred_at}, in {last.where}) is not "
                        f"its clean-end record {WRITER_CLOSED}: later events are missing, or the writer crashed")


def _event(line: bytes) -> tuple[str, int, str, str, str, int | str] | None:
    """(writer, seq, prev, occurred_at, event_type, id) of a line, or None if it is not an event.

    The id is the event_id's UUID as a 128-bit int (a third of the memory of the string), else the string.
    """
    try:
        event = orjson.loads(line)
        fields = (event["writer"], event["seq"], event["prev"], event["occurred_at"], event["event_type"],
                  event["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    writer, seq, prev, occurred_at, event_type, event_id = fields
    if type(seq) is not int or type(writer) is not str or type(occurred_at) is not str or type(event_id) is not str:
        return None
    try:
        ident: int | str = int(event_id.replace("-", ""), 16)
    except ValueError:
        ident = event_id
    return writer, seq, str(prev), occurred_at, str(event_type), ident


def _id_text(ident: int | str) -> str:
    return str(uuid.UUID(int=ident)) if isinstance(ident, int) else ident
