"""`auditlock verify --spool DIR`: the local spool's segments, chains and quarantine, read-only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock.config import Config
from auditlock.handler.core import AuditCore
from auditlock.spool.format import OPEN_SUFFIX, QUARANTINE_DIR, SEALED_SUFFIX
from auditlock.spool.writer import SpoolWriter
from tests.support.spool_files import segment_paths
from tests.support.verify_env import kinds, subjects, verify


@pytest.fixture
def small_segments(make_config: Callable[..., Config]) -> Config:
    """A config whose segments hold a handful of events each."""
    return make_config(spool={"segment_max_bytes": 4096})


def emit(config: Config, count: int, *, close: bool = True) -> SpoolWriter:
    """A writer that wrote `count` events (and its clean end, when closed)."""
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    core = AuditCore(config, writer=writer)
    with auditlock.actor("user#7"):
        for n in range(count):
            core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
    if close:
        writer.close()
    return writer


def check(spool: Path) -> tuple[int, dict[str, Any]]:
    """verify --spool."""
    return verify("--spool", str(spool))


class TestSpoolVerify:
    def test_clean_spool(self, small_segments: Config, spool_dir: Path) -> None:
        """Closed writers' sealed segments verify clean."""
        emit(small_segments, 40)
        emit(small_segments, 5)
        status, report = check(spool_dir)
        assert report["findings"] == []
        assert status == 0
        assert report["counts"]["events"] == 40 + 5 + 2
        assert report["counts"]["segments"] == len(segment_paths(spool_dir))

    def test_torn_tail(self, small_segments: Config, spool_dir: Path, closing: Callable[[Any], Any]) -> None:
        """An open segment ending in half a line (a writer killed mid-write) is a torn tail."""
        closing(emit(small_segments, 3, close=False))
        [open_segment] = spool_dir.glob(f"*{OPEN_SUFFIX}")
        with open_segment.open("ab") as f:
            f.write(b'{"schema":"auditlock/1","event_id":"01')
        status, report = check(spool_dir)
        assert status == 1
        assert kinds(report) == {"torn tail"}
        assert subjects(report, "torn tail") == {open_segment.name}

    def test_chain_break(self, small_segments: Config, spool_dir: Path) -> None:
        """A line edited inside a sealed segment breaks the chain at the line after it."""
        emit(small_segments, 20)
        segment = segment_paths(spool_dir)[0]
        lines = segment.read_bytes().split(b"\n")
        lines[1] = lines[1].replace(b'"user#7"', b'"user#8"')
        segment.write_bytes(b"\n".join(lines))
        status, report = check(spool_dir)
        assert status == 1
        assert kinds(report) == {"chain break"}
        [finding] = report["findings"]
        assert finding["detail"] == f"seq 2 in {segment.name}: prev does not match the hash of seq 1"

    def test_missing_middle_segment(self, small_segments: Config, spool_dir: Path) -> None:
        """A sealed segment removed from between two others is a seq gap naming the writer's range."""
        emit(small_segments, 40)
        segments = segment_paths(spool_dir)
        segments[1].unlink()
        status, report = check(spool_dir)
        assert status == 1
        assert kinds(report) == {"seq gap"}

    def test_shipped_start_is_not_a_finding(self, small_segments: Config, spool_dir: Path) -> None:
        """A writer whose first segments were shipped (deleted by the agent) starts mid-way: not a finding."""
        emit(small_segments, 40)
        segment_paths(spool_dir)[0].unlink()
        status, report = check(spool_dir)
        assert report["findings"] == []
        assert status == 0

    def test_quarantined_segment_listed(self, small_segments: Config, spool_dir: Path) -> None:
        """Segments the agent quarantined are listed with their reason."""
        emit(small_segments, 10)
        segment = segment_paths(spool_dir)[0]
        (spool_dir / QUARANTINE_DIR).mkdir()
        segment.rename(spool_dir / QUARANTINE_DIR / segment.name)
        (spool_dir / QUARANTINE_DIR / f"{segment.name}.reason.txt").write_text("damaged sealed segment: line 3\n")
        status, report = check(spool_dir)
        assert status == 1
        assert kinds(report) == {"quarantined segment"}
        assert "line 3" in report["findings"][0]["detail"]
        assert segment.name.endswith(SEALED_SUFFIX)
