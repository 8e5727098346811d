"""What `auditlock verify` tells a human: the text report's verdict and sections, and every quarantined segment
listed. Found by the mutation run (docs/mutation-survivors.md): the JSON report was pinned, the text one and a
quarantine holding more than one segment were not.
"""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from pathlib import Path

from auditlock.config import Config
from auditlock.spool.format import QUARANTINE_DIR
from auditlock.verify.findings import QUARANTINED_SEGMENT, OpenWriter, Report, write_text
from tests.support.spool_files import segment_paths
from tests.support.verify_env import subjects
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
