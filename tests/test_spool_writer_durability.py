"""What each durability mode promises about fsync, and how a failed fsync outside the usual place is accounted.

- `process`: written before the call returns, fsync'd only when sealing — the background flusher never fsyncs
  (docs/configuration.md), however many times it runs after an event.
- A failed fsync in the logging call (`sync`) is counted in `stats["errors"]` as well as `stats["sync_failures"]`.
- A seal whose fsync fails does not raise: counted in `stats["sync_failures"]`, the segment left `.open` for the
  agent to recover, and writing continues.

Written for surviving mutants of `spool/writer.py` (docs/mutation-survivors.md). Real files; `os.fsync` and
`os.fdatasync` are wrapped to record or fail calls (as tests/support/held_fsync.py does), the writes stay real.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import auditlock
from auditlock.config import build_config
from auditlock.handler.core import AuditCore
from auditlock.spool.format import OPEN_SUFFIX
from auditlock.spool.space import spool_size
from auditlock.spool.writer import SpoolWriter
from tests.support.hostile_spool import sealed_segments
from tests.support.waiting import wait_for
from tests.test_spool_enospc import Audit

FLUSHER = "auditlock-spool-flusher"  # the writer's background thread
TICKS_TIMEOUT_S = 30.0


def fail_next(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the next call of `os.<name>` (`fsync`, `fdatasync`) fail with EIO, as a failing disk would; later calls
    work again."""
    real = getattr(os, name)

    def failing(fd: int) -> None:
        monkeypatch.setattr(os, name, real)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, name, failing)


class FlusherScans:
    """The writer's `measure`: the real `spool_size`, counting the calls the flusher makes (one per tick, after
    its fsync step), so a test can wait for ticks that began after something it did."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self, directory: Path) -> int:
        if threading.current_thread().name == FLUSHER:
            self.ticks += 1
        return spool_size(directory)


@pytest.fixture
def recorded_fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every `os.fdatasync` call from now on (its descriptor); the calls run for real."""
    real = os.fdatasync
    calls: list[int] = []

    def recording(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    return calls


@pytest.fixture
def process_writer(tmp_path: Path) -> Iterator[tuple[AuditCore, FlusherScans]]:
    """An audit core over a writer in durability "process" whose flusher ticks every 10 ms."""
    config = build_config({
        "service": "durability-test",
        "spool": {"dir": str(tmp_path / "spool"), "durability": "process", "flush_interval_ms": 10},
        "events": {"include": ["order.*"]},
        "targets": {"Order": {"fields": ["status"]}},
        "retention": {"default": "std", "classes": {"std": {"days": 1}}},
    })
    scans = FlusherScans()
    core = AuditCore(config, writer=SpoolWriter(config.spool, measure=scans))
    try:
        yield core, scans
    finally:
        core.writer.close()


def emit(core: AuditCore, count: int) -> None:
    """Emit `count` events through the core."""
    with auditlock.actor("user#1"):
        for n in range(count):
            assert core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"}) is not None


def open_segments(spool: Path) -> list[Path]:
    """The open segments in the spool, by name."""
    return sorted(spool.glob(f"*{OPEN_SUFFIX}"))


class TestProcessModeFsyncsOnlyWhenSealing:
    """Durability "process": no fsync by the flusher; the seal makes the segment durable."""

    def test_flusher_never_fsyncs_an_unsealed_segment(self, process_writer: tuple[AuditCore, FlusherScans],
                                                      recorded_fdatasyncs: list[int]) -> None:
        """Two whole flusher ticks after three events: no fdatasync was made."""
        core, scans = process_writer
        emit(core, 3)
        after = scans.ticks
        wait_for(lambda: scans.ticks >= after + 2, TICKS_TIMEOUT_S, what="two flusher ticks after the events")
        assert recorded_fdatasyncs == []

    def test_seal_makes_the_segment_durable(self, process_writer: tuple[AuditCore, FlusherScans],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
        """`seal()` fsyncs the segment before it takes its sealed name."""
        core, _scans = process_writer
        emit(core, 3)
        real = os.fsync
        synced: list[int] = []

        def recording(fd: int) -> None:
            synced.append(fd)
            real(fd)

        monkeypatch.setattr(os, "fsync", recording)
        core.writer.seal()
        assert synced, "sealing made no fsync"
        assert len(sealed_segments(core.writer.directory)) == 1


class TestFsyncFailureAccounting:
    """A failed fsync is counted where it happened, and never stops the writer."""

    def test_failed_fsync_in_the_call_counts_an_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Durability "sync": the call raises, and `stats` counts one error and one sync failure."""
        audit = Audit(tmp_path / "spool", segment_max_bytes=65536)
        try:
            audit.events(3)
            fail_next(monkeypatch, "fdatasync")
            with pytest.raises(auditlock.SpoolError, match="I/O error"):
                audit.event()
            stats = audit.core.writer.stats
            assert (stats["errors"], stats["sync_failures"]) == (1, 1)
        finally:
            audit.close()

    def test_failed_seal_is_counted_and_writing_continues(self, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """`seal()` whose fsync fails does not raise: one sync failure, the segment left `.open`, the next event
        written into a new segment."""
        audit = Audit(tmp_path / "spool", durability="process", flush_interval_ms=600_000)
        writer = audit.core.writer
        try:
            audit.events(3)
            fail_next(monkeypatch, "fsync")
            writer.seal()
            assert (writer.stats["sync_failures"], writer.stats["segments_sealed"]) == (1, 0)
            [left_open] = open_segments(audit.spool)
            audit.events(1)
            assert open_segments(audit.spool) != [left_open], "the next event opened a segment of its own"
        finally:
            audit.close()

