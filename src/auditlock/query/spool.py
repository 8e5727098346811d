"""Events not yet shipped (`--include-spool`): read from the spool's segments without touching them.

Sealed segments (`*.jsonl`) are complete. An open one (`*.open.jsonl`) is being appended to: its last line may
be torn, so only lines that end in a newline and parse as `auditlock/1` events are taken. A segment can be
sealed (renamed) or shipped and deleted while we look; a renamed one is read under its sealed name, a deleted
one is already in S3. The caller therefore reads the spool *before* listing S3: an event is then either read
here or was shipped before the listing began, never neither (the agent deletes a segment only after S3
confirmed it). An event found in both places is de-duplicated by `event_id` in the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from auditlock.spool.files import UNCONFIGURED_MAX_SEGMENT_BYTES, UnsafeSpoolFileError
from auditlock.spool.format import OPEN_SUFFIX, SEALED_SUFFIX, parse_segment_name
from auditlock.spool.reader import iter_lines, parse_event


@dataclass
class SpoolRead:
    """How many events the spool gave and how many lines were skipped (torn or unreadable)."""

    events: int = 0
    skipped: int = 0


def copy_spool_events(spool_dir: Path, out: IO[bytes] | _Discard) -> SpoolRead:
    """Write every complete event line of every segment in `spool_dir` to `out`, as JSONL."""
    result = SpoolRead()
    for path in sorted(spool_dir.glob(f"*{SEALED_SUFFIX}")):
        if parse_segment_name(path.name) is None:
            continue
        for line in _segment_lines(path):
            if line.endswith(b"\n") and parse_event(line) is not None:
                out.write(line)
                result.events += 1
            else:
                result.skipped += 1
    return result


def count_spool_events(spool_dir: Path) -> SpoolRead:
    """How many complete events the spool holds now (read as `copy_spool_events` reads them, nothing kept)."""
    return copy_spool_events(spool_dir, _Discard())


class _Discard:
    """A binary sink that keeps nothing."""

    def write(self, data: bytes) -> int:
        return len(data)


def _segment_lines(path: Path) -> Iterator[bytes]:
    """The segment's lines, streamed; a file that is no regular file (a symlink, a FIFO, a directory) or larger
    than any segment gives one unreadable line instead (counted as skipped), never a blocked or crashed query."""
    try:
        yield from iter_lines(path, UNCONFIGURED_MAX_SEGMENT_BYTES)
    except UnsafeSpoolFileError:
        yield b""
    except FileNotFoundError:
        if path.name.endswith(OPEN_SUFFIX):  # sealed meanwhile: read it under its new name
            sealed = path.with_name(path.name.removesuffix(OPEN_SUFFIX) + SEALED_SUFFIX)
            try:
                yield from iter_lines(sealed, UNCONFIGURED_MAX_SEGMENT_BYTES)
            except UnsafeSpoolFileError:
                yield b""
            except FileNotFoundError:
                return  # shipped and deleted: the archive listing (which comes later) has it
