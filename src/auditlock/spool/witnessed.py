"""Comparing a segment with the agent's witness copy of it: for the agent at shipping and for `verify --spool`.

The witness (its format and invariants: `agent.witness`) keeps, in the agent's state directory, a copy of every
whole line of a segment it read, named like the segment (`<writer>.<first_seq:016x>.open.jsonl` while the witness
has not yet read the sealed segment to its end, `<writer>.<first_seq:016x>.jsonl` once it has). A segment agrees
with its witness when it begins with exactly the copy's bytes and, for a sealed copy, ends there too. Both files
are read as hostile (`spool.files.open_spool_file`), in bounded chunks. Imports only the spool's own modules.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, cast

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
    `UnsafeSpoolFileError` if either is not a regular file within `max_bytes`.

    The agent runs it on every segment it ships, so agreeing files cost two reads into two reused buffers and one
    `memcmp` per chunk; lines are counted only to describe a difference (`_described`)."""
    with open_spool_file(copy, max_bytes) as witnessed, open_spool_file(segment, max_bytes) as current:
        size = os.fstat(current.fileno()).st_size
        want, got = bytearray(COMPARE_CHUNK), bytearray(COMPARE_CHUNK)
        position = 0
        while wanted := _read_into(witnessed, want):
            if _read_into(current, memoryview(got)[:wanted]) != wanted or not _same(want, got, wanted):
                return _described(witnessed, current, position, size)
            position += wanted
        if sealed and size > position:
            lines = _lines_in(witnessed, position)
            return (f"{size - position} bytes after the end the witness saw of the sealed segment ({position} bytes, "
                    f"{lines} lines): lines were added after line {lines}")
    return None


def _read_into(file: BinaryIO, buffer: bytearray | memoryview) -> int:
    """Fill `buffer` from `file` (fewer bytes only at the end of the file); `open_spool_file` gives a buffered
    reader, whose `readinto` reads until the buffer is full."""
    return cast(io.BufferedReader, file).readinto(buffer)


def _same(want: bytearray, got: bytearray, length: int) -> bool:
    """Whether the first `length` bytes of the two buffers are equal (whole buffers: one memcmp, no copy)."""
    if length == len(want):
        return want == got
    return want[:length] == got[:length]


def _described(witnessed: BinaryIO, current: BinaryIO, position: int, size: int) -> str:
    """What differs in the chunk at `position`: both open files read again there (the slow path, once per
    finding; the same files the comparison read, whatever was renamed since)."""
    witnessed.seek(position)
    current.seek(position)
    want, got = witnessed.read(COMPARE_CHUNK), current.read(COMPARE_CHUNK)
    return _difference(want, got, _lines_in(witnessed, position), position, size)


def _lines_in(witnessed: BinaryIO, end: int) -> int:
    """How many lines the copy's first `end` bytes hold."""
    witnessed.seek(0)
    lines = position = 0
    while position < end and (block := witnessed.read(min(COMPARE_CHUNK, end - position))):
        lines += block.count(b"\n")
        position += len(block)
    return lines


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
