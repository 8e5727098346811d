"""What `auditlock verify` tells a human: the text report's verdict and sections, and every quarantined segment
listed. Found by the mutation run (docs/mutation-survivors.md): the JSON report was pinned, the text one and a
quarantine holding more than one segment were not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

from auditlock.config import Config
from auditlock.spool.format import QUARANTINE_DIR
from auditlock.verify.findings import DAMAGED_SEGMENT, QUARANTINED_SEGMENT, OpenWriter, Report, write_text
from tests.support.spool_files import segment_paths
from tests.support.verify_env import kinds, subjects
from tests.test_verify_spool import check, emit

WRITER = OpenWriter("a" * 32, 41, "2026-01-02T03:04:05.000000Z")


def text_of(report: Report) -> list[str]:
    """The text report's lines."""
    out = StringIO()
    write_text(report, out)
    return out.getvalue().splitlines()


class TestTextReport:
    """Invariant: the text report's last line is the verdict, and it never says clean when nothing was checked."""

    def test_nothing_to_verify_is_not_clean(self) -> None:
        """Invariant (never `result: clean` for an empty archive): nothing checked → "nothing to verify"."""
        report = Report("directory x", nothing_to_verify=True)
        assert text_of(report)[-1] == "result: nothing to verify"

    def test_checked_without_findings_is_clean(self) -> None:
        """Invariant (clean only when something was checked): counts and no findings → "clean"."""
        report = Report("directory x")
        report.count("events", 3)
        assert text_of(report)[-1] == "result: clean"

    def test_open_writers_listed_only_when_there_are_some(self) -> None:
        """Open writers get their section with each writer's position; a report without any has no such section."""
        with_writer = text_of(Report("spool x", open_writers=[WRITER]))
        without = text_of(Report("spool x"))
        assert "open writers, not checked for a clean end (1)" in with_writer
        assert f"  writer {WRITER.writer}: last seq 41 at {WRITER.last_occurred_at}" in with_writer
        assert not any(line.startswith("open writers") for line in without)

    def test_skipped_and_notes_sections_only_when_not_empty(self) -> None:
        """A `skipped` or `notes` title appears with its lines, and never alone."""
        lines = text_of(Report("x", skipped=["signatures: no public key given"]))
        assert lines[lines.index("skipped") + 1] == "  signatures: no public key given"
        assert "notes" not in lines
        assert "skipped" not in text_of(Report("x"))


class TestQuarantineListing:
    """Invariant: `verify --spool` lists every segment in quarantine/, whatever else lies there."""

    def test_every_quarantined_segment_is_listed(self, make_config: Callable[..., Config], spool_dir: Path) -> None:
        """Invariant (nothing set aside goes unreported): two segments with their reason files are both findings."""
        emit(make_config(spool={"segment_max_bytes": 4096}), 40)
        quarantine = spool_dir / QUARANTINE_DIR
        quarantine.mkdir()
        moved = segment_paths(spool_dir)[:2]
        for segment in moved:
            segment.rename(quarantine / segment.name)
            (quarantine / f"{segment.name}.reason.txt").write_text("damaged sealed segment: line 3\n")

        _status, report = check(spool_dir)

        assert subjects(report, QUARANTINED_SEGMENT) == {f"quarantine/{segment.name}" for segment in moved}


def quarantined(config: Config, spool: Path) -> Path:
    """A sealed segment moved into quarantine/ (no reason file yet)."""
    emit(config, 5)
    [segment] = segment_paths(spool)
    (spool / QUARANTINE_DIR).mkdir()
    return segment.rename(spool / QUARANTINE_DIR / segment.name)


def details(report: dict[str, Any]) -> list[str]:
    """The details of a JSON report's findings."""
    return [f["detail"] for f in report["findings"]]


class TestQuarantineReasons:
    """Invariant: each quarantined segment is listed whatever its reason file is: missing, unsafe, or long."""

    def test_missing_reason_file(self, config: Config, spool_dir: Path) -> None:
        """Invariant (nothing set aside goes unreported): no reason file → listed, "no reason file"."""
        quarantined(config, spool_dir)
        _status, report = check(spool_dir)
        assert details(report) == ["not shipped: no reason file"]

    def test_reason_file_that_is_a_fifo_is_not_read(self, config: Config, spool_dir: Path) -> None:
        """Invariant (everything read is hostile): a FIFO reason file is named, never read (no hang)."""
        segment = quarantined(config, spool_dir)
        os.mkfifo(segment.with_name(f"{segment.name}.reason.txt"))
        _status, report = check(spool_dir)
        [detail] = details(report)
        assert detail.startswith("not shipped: reason file not read: ")

    def test_long_reason_shown_up_to_4_kib(self, config: Config, spool_dir: Path) -> None:
        """Invariant (bounded memory): at most 4096 bytes of a reason file are shown."""
        segment = quarantined(config, spool_dir)
        segment.with_name(f"{segment.name}.reason.txt").write_text("r" * 5000)
        _status, report = check(spool_dir)
        assert details(report) == ["not shipped: " + "r" * 4096]


class TestSpoolSegments:
    """`verify --spool` reads every segment safely and does not judge writers' ends (shipped tails are gone)."""

    def test_segment_name_on_a_fifo_is_damage(self, config: Config, spool_dir: Path) -> None:
        """Invariant (everything read is hostile): a FIFO under a segment's name is a damaged segment, not read."""
        emit(config, 3)
        fifo = spool_dir / f"{'c' * 32}.0000000000000000.jsonl"
        os.mkfifo(fifo)
        status, report = check(spool_dir)
        assert (status, kinds(report), subjects(report, DAMAGED_SEGMENT)) == (1, {DAMAGED_SEGMENT}, {fifo.name})

    def test_running_writer_is_not_an_open_writer_finding(self, config: Config, spool_dir: Path,
                                                          closing: Callable[[Any], Any]) -> None:
        """A writer without its clean end in the spool is not reported (its end is skipped, not checked)."""
        closing(emit(config, 3, close=False))
        status, report = check(spool_dir)
        assert (status, report["findings"], report["open_writers"]) == (0, [], [])

    def test_torn_open_segment_detail_says_open(self, config: Config, spool_dir: Path,
                                                closing: Callable[[Any], Any]) -> None:
        """The torn tail of an open segment is described as an open segment's."""
        closing(emit(config, 3, close=False))
        [open_segment] = segment_paths(spool_dir)
        with open_segment.open("ab") as f:
            f.write(b'{"schema":"auditlock/1"')
        _status, report = check(spool_dir)
        [detail] = details(report)
        assert detail.startswith("the open segment ends in an incomplete line of 23 bytes")
