"""`compare_with_copy` (what the agent runs on every witnessed segment before shipping it, and `verify --spool`) on
copies several compare chunks long: a change, a removal, an insertion or an addition anywhere — in the first chunk,
across a chunk's edge, in the last — is found and described exactly as one pass over the whole files describes it.

The fast path reads both files into two reused buffers and counts no lines; it counts them only to describe a
difference. These tests hold its findings to a whole-file reference written here from the definition.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlock.spool.witnessed import COMPARE_CHUNK, compare_with_copy

LINE = b'{"seq":%07d,"payload":"' + b"x" * 90 + b'"}\n'
LINES = 3 * COMPARE_CHUNK // len(LINE % 0) + 17  # a copy three chunks and a bit long
COPY = b"".join(LINE % n for n in range(LINES))
NL = b"\n"
# Byte offsets to edit at: the first line, the last byte of the first chunk, the first of the second, mid-copy,
# the last line.
OFFSETS = {"first-line": 5, "end-of-chunk": COMPARE_CHUNK - 1, "start-of-chunk": COMPARE_CHUNK,
           "mid": 2 * COMPARE_CHUNK + 333, "last-line": len(COPY) - 7}


def files(tmp_path: Path, segment: bytes) -> tuple[Path, Path]:
    """The witness's copy (`COPY`) and a segment holding `segment`."""
    copy, current = tmp_path / "copy.jsonl", tmp_path / "segment.jsonl"
    copy.write_bytes(COPY)
    current.write_bytes(segment)
    return current, copy


def reference(segment: bytes, *, sealed: bool) -> str | None:
    """The finding by definition, from the whole files: the first differing byte names its line; a segment that
    ends inside the copy was truncated (the witness saw at least the end of the chunk holding that byte); a sealed
    copy's segment may hold nothing more."""
    at = next((i for i in range(min(len(COPY), len(segment))) if COPY[i] != segment[i]), None)
    if at is None and len(segment) < len(COPY):
        start = len(segment) // COMPARE_CHUNK * COMPARE_CHUNK
        seen = min(start + COMPARE_CHUNK, len(COPY))
        return (f"the segment ends at byte {len(segment)}, inside or before line {COPY[:len(segment)].count(NL) + 1}"
                f"; the witness saw at least {seen} bytes ({COPY[:seen].count(NL)}+ lines): lines were removed "
                "(truncated)")
    if at is not None:
        return f"line {COPY[:at].count(NL) + 1} (byte {at}) differs from what the witness saw"
    if sealed and len(segment) > len(COPY):
        lines = COPY.count(NL)
        return (f"{len(segment) - len(COPY)} bytes after the end the witness saw of the sealed segment ({len(COPY)} "
                f"bytes, {lines} lines): lines were added after line {lines}")
    return None


class TestAgreeingFiles:
    """A segment that begins with exactly the copy's bytes agrees (sealed: and ends there)."""

    def test_an_identical_segment_agrees(self, tmp_path: Path) -> None:
        """The same bytes, several chunks long: no finding, sealed or not."""
        assert compare_with_copy(*files(tmp_path, COPY), sealed=True) is None
        assert compare_with_copy(*files(tmp_path, COPY), sealed=False) is None

    def test_lines_after_an_open_copy_are_no_finding(self, tmp_path: Path) -> None:
        """An open copy is a prefix: the writer went on writing."""
        assert compare_with_copy(*files(tmp_path, COPY + LINE % LINES), sealed=False) is None


class TestFindingsAcrossChunks:
    """Invariant (one verdict): the chunked comparison names what the whole-file reference names."""

    @pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
    def test_a_changed_byte_is_named_by_its_line(self, tmp_path: Path, offset: int) -> None:
        """One byte rewritten anywhere (a chunk's edge included) names its line and byte."""
        segment = COPY[:offset] + b"#" + COPY[offset + 1:]

        found = compare_with_copy(*files(tmp_path, segment), sealed=True)

        assert found == reference(segment, sealed=True)
        assert found is not None
        assert f"(byte {offset})" in found

    @pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
    def test_a_truncated_segment_is_named(self, tmp_path: Path, offset: int) -> None:
        """A segment cut anywhere in the copy's extent is a removal, named with the line it ends in."""
        segment = COPY[:offset]

        found = compare_with_copy(*files(tmp_path, segment), sealed=False)

        assert found == reference(segment, sealed=False)
        assert found is not None
        assert found.endswith("lines were removed (truncated)")

    @pytest.mark.parametrize("offset", OFFSETS.values(), ids=OFFSETS.keys())
    def test_an_inserted_line_is_named(self, tmp_path: Path, offset: int) -> None:
        """A forged line inserted at a line start near any offset is named where the bytes first differ."""
        start = COPY.rfind(b"\n", 0, offset) + 1
        segment = COPY[:start] + b'{"forged":1}\n' + COPY[start:]

        assert compare_with_copy(*files(tmp_path, segment), sealed=False) == reference(segment, sealed=False)

    def test_a_removed_line_is_named(self, tmp_path: Path) -> None:
        """A line taken out of the third chunk: the segment differs from that line on."""
        start = COPY.index(LINE % (LINES - 20))
        segment = COPY[:start] + COPY[start + len(LINE % 0):]

        assert compare_with_copy(*files(tmp_path, segment), sealed=True) == reference(segment, sealed=True)

    def test_lines_added_after_a_sealed_copy_are_named(self, tmp_path: Path) -> None:
        """Bytes after the sealed end: counted, with the copy's line count."""
        segment = COPY + LINE % LINES + LINE % (LINES + 1)

        found = compare_with_copy(*files(tmp_path, segment), sealed=True)

        assert found == reference(segment, sealed=True)
        assert found is not None
        assert found.endswith(f"lines were added after line {LINES}")
