"""`auditlock verify --spool DIR`: the local spool checked like the archive, read-only.

Every segment (open and sealed) is read line by line through the same `EventStreams` as archive objects, so
seq gaps, chain breaks and duplicate ids are found and named the same way — within a segment and across a
writer's segments. The agent deletes shipped segments, so a writer's chain may begin mid-way in the spool:
that is not a finding, and neither is a writer without its clean-end record (it may be running, or its tail
already shipped). An incomplete last line of an open segment is a `torn tail` (the writer died mid-write; the
agent will cut it off, and that event is lost); any other bad line is a `damaged segment`. Segments in
`quarantine/` are listed as findings: the agent refused to ship them, so their events are not in the archive.

Where the agent's witness (`spool.witnessed`; by default `<spool>/.agent/witness`, or under `--state-dir`) can be
read, every segment it copied is compared with its copy: one that no longer begins with what the agent saw is
`rewritten before shipping`, one gone from the spool while its copy is still there is `witnessed segment missing`
(the agent deletes a segment an instant before its copy: a segment shipped exactly then shows once, and not on
the next run). A witness this user may not read (it belongs to the agent's user) is a note, not a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from auditlock.spool.files import UNCONFIGURED_MAX_SEGMENT_BYTES, UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import QUARANTINE_DIR, SegmentName, parse_segment_name
from auditlock.spool.witnessed import WITNESS_DIR, compare_with_copy, copy_names
from auditlock.verify.events import EventStreams, TailPolicy
from auditlock.verify.findings import (
    DAMAGED_SEGMENT,
    QUARANTINED_SEGMENT,
    REWRITTEN_BEFORE_SHIPPING,
    TORN_TAIL,
    WITNESSED_SEGMENT_MISSING,
    Report,
)
from auditlock.verify.source import SourceError

AGENT_STATE_DIR = ".agent"  # the agent's default state directory in the spool (`[agent] state_dir`)


def verify_spool(spool: Path, state_dir: Path | None = None) -> Report:
    """Check every segment of a spool directory, compare it with the agent's witness (in `state_dir`, by default
    the spool's `.agent`) where readable, and list its quarantine."""
    if not spool.is_dir():
        raise SourceError(f"--spool {spool}: not a directory; give the spool directory ([spool] dir)")
    report = Report(f"spool {spool}")
    report.skipped.append("writers' starts and clean ends: shipped segments are no longer in the spool")
    streams = EventStreams(report)
    for path, name in _segments(spool):
        _check_segment(path, name, streams, report)
    streams.finish(TailPolicy(require_start=False, check_tail=False))
    _compare_with_witness(spool, (state_dir or spool / AGENT_STATE_DIR) / WITNESS_DIR, report)
    _list_quarantine(spool, report)
    return report


def _compare_with_witness(spool: Path, witness: Path, report: Report) -> None:
    try:
        copies = sorted(name for name in os.listdir(witness) if parse_segment_name(name) is not None)
    except FileNotFoundError:
        report.skipped.append(f"the agent's witness: none at {witness} (no agent ran here, or --state-dir is "
                              "elsewhere)")
        return
    except PermissionError:
        report.notes.append(f"the agent's witness {witness} is not readable by this user: the spool was not "
                            "compared with what the agent saw (run as the agent's user to compare)")
        return
    for filename in copies:
        _compare_copy(spool, witness / filename, report)


def _compare_copy(spool: Path, copy: Path, report: Report) -> None:
    name = parse_segment_name(copy.name)
    assert name is not None
    segment = next((spool / n for n in copy_names(name) if os.path.lexists(spool / n)), None)
    if segment is None:
        if os.path.lexists(copy):  # not shipped meanwhile: the agent removes the copy right after the segment
            report.add(WITNESSED_SEGMENT_MISSING, copy.name, "the agent's witness copied it; it is gone from the "
                                                             "spool without the agent shipping it")
        return
    try:
        problem = compare_with_copy(segment, copy, sealed=not name.is_open, max_bytes=UNCONFIGURED_MAX_SEGMENT_BYTES)
    except FileNotFoundError:
        return  # shipped (segment and copy removed) while we compared
    except (UnsafeSpoolFileError, PermissionError) as exc:
        report.notes.append(f"{segment.name}: not compared with the agent's witness ({exc})")
        return
    report.count("witnessed segments")
    if problem is not None:
        report.add(REWRITTEN_BEFORE_SHIPPING, segment.name, f"{problem}; the agent will set it aside, not ship it")


def _segments(spool: Path) -> Iterator[tuple[Path, SegmentName]]:
    found = []
    for path in spool.iterdir():
        name = parse_segment_name(path.name)
        if name is not None:  # what is not a regular file is reported by _check_segment, never followed
            found.append((name, path))
    for name, path in sorted(found):
        yield path, name


def _check_segment(path: Path, name: SegmentName, streams: EventStreams, report: Report) -> None:
    try:
        with open_spool_file(path, UNCONFIGURED_MAX_SEGMENT_BYTES) as f:
            content = f.read()
    except FileNotFoundError:
        return  # shipped and deleted by the agent since the listing
    except UnsafeSpoolFileError as exc:
        report.add(DAMAGED_SEGMENT, path.name, f"not read: {exc.reason}")
        return
    report.count("segments")
    lines = content.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    fed = streams.feed(path.name, lines)
    report.count("events", fed.events)
    if fed.bad_lines:
        report.add(DAMAGED_SEGMENT, path.name, f"lines {', '.join(map(str, fed.bad_lines[:10]))} are not "
                                               "auditlock/1 events")
    if torn:
        kind = TORN_TAIL if name.is_open else DAMAGED_SEGMENT
        what = "open segment" if name.is_open else "sealed segment (sealed segments are never torn)"
        report.add(kind, path.name, f"the {what} ends in an incomplete line of {len(torn)} bytes after line "
                                    f"{len(lines)}")


def _list_quarantine(spool: Path, report: Report) -> None:
    quarantine = spool / QUARANTINE_DIR
    if not quarantine.is_dir():
        return
    for path in sorted(quarantine.iterdir()):
        if path.name.endswith(".witness.json"):
            report.notes.append(f"quarantine/{path.name}: the agent's witness finding for the segment beside it "
                                "(its copy of what the agent saw: the `.witnessed` file)")
        if parse_segment_name(path.name) is None:
            continue
        reason_file = path.with_name(path.name + ".reason.txt")
        reason = _reason(reason_file)
        report.add(QUARANTINED_SEGMENT, f"quarantine/{path.name}", f"not shipped: {reason}")


def _reason(path: Path) -> str:
    """A quarantine reason file's text (opened like a segment: no symlink, no FIFO; at most 4 KiB shown)."""
    try:
        with open_spool_file(path) as f:
            return f.read(_REASON_MAX).decode(errors="replace").strip()
    except FileNotFoundError:
        return "no reason file"
    except UnsafeSpoolFileError as exc:
        return f"reason file not read: {exc.reason}"


_REASON_MAX = 4096
