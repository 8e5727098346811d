"""What running writers still hold in their open segments: not shippable yet, and when it will be.

The agent ships sealed segments only; a live writer's `.open.jsonl` segment (its flock held) is sealed by that
writer when it reaches `[spool] segment_max_bytes`, when it is `segment_max_age_s` old (checked every
`flush_interval_ms`), at a change of UTC month, or when the writer closes. A segment is opened for its first
event, so `first occurred_at + segment_max_age_s` bounds when it will be sealed (plus one flush interval).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from auditlock.archive import layout
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import OPEN_SUFFIX, parse_segment_name
from auditlock.spool.reader import first_occurred_at

_CHUNK = 1 << 20


@dataclass(frozen=True)
class OpenSegmentsWaiting:
    """Events in open segments of running writers, and when the last of those segments is sealed at the latest."""

    segments: int = 0
    events: int = 0
    bytes: int = 0
    sealed_by: str | None = None  # RFC 3339 UTC, None without open segments

    def describe(self, segment_max_age_s: float) -> str:
        """The log line for an operator."""
        return (f"auditlock agent: {self.events} events ({self.bytes} bytes) wait in {self.segments} open segments "
                f"of running writers; their writers seal them by {self.sealed_by} at the latest ([spool] "
                f"segment_max_age_s = {segment_max_age_s:g}), sooner on rotation or exit; then they ship")


def open_segments_waiting(spool: Path, segment_max_age_s: float, flush_interval_s: float) -> OpenSegmentsWaiting:
    """Count the `.open` segments still in the spool (after recovery, only live writers' are left)."""
    segments = events = size = 0
    latest: dt.datetime | None = None
    for path in sorted(spool.glob(f"*{OPEN_SUFFIX}")):
        if parse_segment_name(path.name) is None:
            continue
        lines, length = _complete_lines(path)
        first = first_occurred_at(path)
        if length == 0 and first is None:
            continue  # gone (sealed or shipped) while we looked
        segments, events, size = segments + 1, events + lines, size + length
        if first is not None:
            due = layout.parse_occurred_at(first) + dt.timedelta(seconds=segment_max_age_s + flush_interval_s)
            latest = max(latest, due) if latest is not None else due
    sealed_by = latest.strftime("%Y-%m-%dT%H:%M:%SZ") if latest is not None else None
    return OpenSegmentsWaiting(segments, events, size, sealed_by)


def _complete_lines(path: Path) -> tuple[int, int]:
    lines = length = 0
    try:
        with open_spool_file(path) as f:
            while chunk := f.read(_CHUNK):
                lines += chunk.count(b"\n")
                length += len(chunk)
    except (FileNotFoundError, UnsafeSpoolFileError):
        return 0, 0  # gone, or not a regular file (the spool guard quarantines it)
    return lines, length
