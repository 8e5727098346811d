"""Comparing a segment with the agent's witness copy of it: for the agent at shipping and for `verify --spool`.

The witness (its format and invariants: `agent.witness`) keeps, in the agent's state directory, a copy of every
whole line of a segment it read, named like the segment (`<writer>.<first_seq:016x>.open.jsonl` while the witness
has not yet read the sealed segment to its end, `<writer>.<first_seq:016x>.jsonl` once it has). A segment agrees
with its witness when it begins with exactly the copy's bytes and, for a sealed copy, ends there too. Both files
are read as hostile (`spool.files.open_spool_file`), in bounded chunks. Imports only the spool's own modules.
"""

from __future__ import annotations

import os
from pathlib import Path

from auditlock.spool.files import open_spool_file
from auditlock.spool.format import SegmentName

WITNESS_DIR = "witness"  # under the agent's state directory
# The findings of a segment that disagrees with its witness (the agent's, `verify --spool`'s and the archive's).
REWRITTEN = "rewritten before shipping"
MISSING = "witnessed segment missing"
COMPARE_CHUNK = 1024 * 1024


def copy_names(name: SegmentName) -> tuple[str, str]:
    """The two names a segment's copy can have: (while open or not read to its end, once read to the sealed end)."""
    return SegmentName(name.writer, name.first_seq, is_open=True).filename, name.sealed().filename


def compare_with_copy(segment: Path, copy: Path, *, sealed: bool, max_bytes: int | None = None) -> str | None:
    """None if `segment` begins with exactly `copy`'s bytes (and, if `sealed`, holds nothing after them); otherwise
    what differs, naming the first line that does (1-based). Raises `FileNotFoundError` if either is gone and
    `UnsafeSpoolFileError` if either is not a regular file within `max_bytes`."""
    with open_spool_file(copy, max_bytes) as witnessed, open_spool_file(segment, max_bytes) as current:
        size = os.fstat(current.fileno()).st_size
        lines = position = 0
        while want := witnessed.read(COMPARE_CHUNK):
            got = current.read(len(want))
            if got != want:
                return _difference(want, got, lines, position, size)
            lines += want.count(b"\n")
            position += len(want)
    if sealed and size > position:
        return (f"{size - position} bytes after the end the witness saw of the sealed segment ({position} bytes, "
                f"{lines} lines): lines were added after line {lines}")
    return None


def _difference(want: bytes, got: bytes, lines: int, position: int, size: int) -> str:
    at = _first_difference(want, got)
    line = lines + want.count(b"\n", 0, at) + 1
    if at == len(got):
        witnessed_lines = lines + want.count(b"\n")
        return (f"the segment ends at byte {size}, inside or before line {line}; the witness saw at least "
                f"{position + len(want)} bytes ({witnessed_lines}+ lines): lines were removed (truncated)")
    return f"line {line} (byte {position + at}) differs from what the witness saw"


def _first_difference(want: bytes, got: bytes) -> int:
    """The first index where the two differ (`len(got)` if `got` is a proper prefix of `want`): a binary search on
    slice equality, so no Python loop runs per byte."""
    low, high = 0, min(len(want), len(got))
    if want[:high] == got[:high]:
        return high
    while low < high:  # invariant: want[:low] == got[:low] and want[:high] != got[:high]
        middle = (low + high + 1) // 2
        if want[:middle] == got[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
