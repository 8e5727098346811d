"""What the spool writer promises about fsync and capacity, at the edges no other test reached.

- Durability `process`: written before the call returns, fsync'd only when sealing — the background flusher never
  fsyncs (docs/configuration.md), however many times it runs after an event.
- A failed fsync in the logging call (`sync`) is counted in `stats["errors"]` as well as `stats["sync_failures"]`.
- A seal whose fsync fails does not raise: counted in `stats["sync_failures"]`, the segment left `.open` for the
  agent to recover, and writing continues.
- A line torn by a full disk whose partial bytes cannot be truncated away ends the segment: the writer abandons it
  (left `.open`, never written again) and continues under a new writer id.
- `flush()` whose shared fsync fails (durability "sync") returns False, and the writer continues under a new id.
- A process forked while its writer has no open segment (after a seal) gives the child a writer id of its own.
- `[spool] max_bytes` is inclusive: an event that brings the spool to exactly `max_bytes` is written.
(The durability as configured and used: tests/test_spool_writer_durability.py.)

Written for surviving mutants of `spool/writer.py` (docs/mutation-survivors.md). Real files and a real writer;
`os.fsync`, `os.fdatasync`, `os.write` and `os.ftruncate` are wrapped to record or fail calls
(tests/support/writer_probes.py), the writes themselves stay real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock.spool.space import spool_size
from tests.support.held_fsync import HeldFdatasync
from tests.support.hostile_spool import sealed_segments
from tests.support.spool_child import REPO_ROOT, read_spool
from tests.support.waiting import wait_for
from tests.support.writer_probes import (
    CHILD_TIMEOUT_S,
    FLUSHER,
    TICKS_TIMEOUT_S,
    FlusherScans,
    audit_core,
    child_script,
    emit,
    fail_next,
    open_segments,
    record_calls,
    tear_next_line,
)

Closing = Callable[[Any], Any]
SMALLEST_MAX_BYTES = 65536  # the config's lower bound for [spool] max_bytes


class TestProcessModeFsyncsOnlyWhenSealing:
    """Durability "process": no fsync by the flusher; the seal makes the segment durable."""

    def test_flusher_never_fsyncs_an_unsealed_segment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      closing: Closing) -> None:
        """Two whole flusher ticks (10 ms apart) after three events: no fdatasync was made."""
        scans = FlusherScans()
        core = audit_core(tmp_path / "spool", measure=scans, durability="process", flush_interval_ms=10)
        closing(core.writer)
        fdatasyncs = record_calls(monkeypatch, "fdatasync")
        emit(core, 3)
        after = scans.ticks
        wait_for(lambda: scans.ticks >= after + 2, TICKS_TIMEOUT_S, what="two flusher ticks after the events")
        assert fdatasyncs == []

    def test_seal_makes_the_segment_durable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            closing: Closing) -> None:
        """`seal()` fsyncs the segment before it takes its sealed name."""
        core = audit_core(tmp_path / "spool", durability="process", flush_interval_ms=600_000)
        closing(core.writer)
        emit(core, 3)
        fsyncs = record_calls(monkeypatch, "fsync")
        core.writer.seal()
        assert fsyncs, "sealing made no fsync"
        assert len(sealed_segments(tmp_path / "spool")) == 1


class TestFsyncFailureAccounting:
    """A failed fsync is counted where it happened, and never stops the writer."""

    def test_failed_fsync_in_the_call_counts_an_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      closing: Closing) -> None:
        """Durability "sync": the call raises, and `stats` counts one error and one sync failure."""
        core = audit_core(tmp_path / "spool", segment_max_bytes=65536)
        closing(core.writer)
        emit(core, 3)
        fail_next(monkeypatch, "fdatasync")
        with pytest.raises(auditlock.SpoolError, match="I/O error"):
            emit(core, 1)
        assert (core.writer.stats["errors"], core.writer.stats["sync_failures"]) == (1, 1)

    def test_failed_seal_is_counted_and_writing_continues(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          closing: Closing) -> None:
        """`seal()` whose fsync fails does not raise: one sync failure, the segment left `.open`, the next event
        written into a new segment."""
        spool = tmp_path / "spool"
        core = audit_core(spool, durability="process", flush_interval_ms=600_000)
        writer = closing(core.writer)
        emit(core, 3)
        fail_next(monkeypatch, "fsync")
        writer.seal()
        assert (writer.stats["sync_failures"], writer.stats["segments_sealed"]) == (1, 0)
        [left_open] = open_segments(spool)
        emit(core, 1)
        assert open_segments(spool) != [left_open], "the next event opened a segment of its own"


class TestFlushWhoseFsyncFails:
    """Durability "sync": a `flush()` that settles lines whose shared fsync fails reports it, and the writer moves
    on under a new id."""

    def test_flush_returns_false_and_the_writer_moves_on(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          closing: Closing) -> None:
        """Caller A's fdatasync is held until `flush()` holds the writer lock, then fails: `flush()` returns False,
        A's call raises, and the writer continues under a new id."""
        core = audit_core(tmp_path / "spool", segment_max_bytes=65536, flush_interval_ms=600_000)
        writer = closing(core.writer)
        emit(core, 2)
        first = writer.writer_id
        flushing = threading.Event()

        def flush_holds_the_writer_lock() -> bool:
            if not flushing.is_set():
                return False
            if writer._lock.acquire(blocking=False):  # free: flush() has not taken it yet
                writer._lock.release()
                return False
            return True  # nobody else takes it: the flusher's interval is 10 minutes

        held = HeldFdatasync(flush_holds_the_writer_lock, fail_first=True)
        monkeypatch.setattr(os, "fdatasync", held)
        outcome: list[BaseException | None] = []

        def caller_a() -> None:
            try:
                emit(core, 1)
                outcome.append(None)
            except auditlock.SpoolError as exc:
                outcome.append(exc)

        a = threading.Thread(target=caller_a)
        a.start()
        wait_for(lambda: held.calls, TICKS_TIMEOUT_S, what="caller A's fdatasync started")
        flushing.set()
        flushed = writer.flush()
        a.join(timeout=2 * TICKS_TIMEOUT_S)
        assert not a.is_alive(), "caller A's logging call did not return"
        assert flushed is False
        assert isinstance(outcome[0], auditlock.SpoolError), outcome
        assert writer.writer_id != first


FORK_WITHOUT_A_SEGMENT = child_script('"durability": "sync"', """\
with auditlock.actor("user#1"):
    core.emit("order.updated", {"target_type": "Order", "target_id": 1, "status": "paid"})
    core.writer.seal()  # the writer is in use, and has no open segment
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        core.emit("order.updated", {"target_type": "Order", "target_id": 2, "status": "paid"})
        os.write(write, core.writer.writer_id.encode())
        core.writer.close()
        os._exit(0)
    os.close(write)
    child = os.read(read, 1024).decode()
    _, status = os.waitpid(pid, 0)
    core.emit("order.updated", {"target_type": "Order", "target_id": 3, "status": "paid"})
print(core.writer.writer_id, child, os.waitstatus_to_exitcode(status))
core.writer.close()
""")


class TestForkWithoutAnOpenSegment:
    """A process forked while its writer has no open segment (after a seal) gives the child a writer of its own."""

    def test_child_writes_under_a_writer_id_of_its_own(self, tmp_path: Path) -> None:
        """Parent and child each write after the fork: two writer ids, every chain intact."""
        spool = tmp_path / "spool"
        done = subprocess.run([sys.executable, "-c", FORK_WITHOUT_A_SEGMENT, str(spool)], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert done.returncode == 0, done.stderr
        parent, child, child_status = done.stdout.split()
        assert child_status == "0", done.stderr
        assert child != parent, done.stderr
        contents = read_spool(spool)  # fails on a chain break or a line in another writer's segment
        assert sorted(contents.writers) == sorted([parent, child])


class TestTornLineEndsTheSegment:
    """A partial line that cannot be taken back: nothing is ever appended after it."""

    def test_torn_segment_is_abandoned_and_never_written_again(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               closing: Closing) -> None:
        """The call raises; the torn segment stays `.open` with its bytes as they were; the next event is written
        by a new writer id into a segment of its own."""
        spool = tmp_path / "spool"
        core = audit_core(spool, segment_max_bytes=65536)
        writer = closing(core.writer)
        emit(core, 3)
        first = writer.writer_id
        tear_next_line(monkeypatch)
        with pytest.raises(auditlock.SpoolError):
            emit(core, 1)
        [torn] = open_segments(spool)
        torn_bytes = torn.read_bytes()
        emit(core, 1)
        assert writer.writer_id != first
        assert torn.read_bytes() == torn_bytes, "a line was appended after the torn one"
        assert len(open_segments(spool)) == 2


class HeldFlusherScans:
    """The writer's `measure`: the real `spool_size`; once `hold()` is called, every scan of the flusher waits
    before it looks at the directory — the first until `release_first()`, the later ones until `release_all()` —
    so the test can write during the first scan and keep every later one from settling the count."""

    def __init__(self) -> None:
        self._held = False
        self._first_done = False
        self.first_waiting = threading.Event()
        self.next_waiting = threading.Event()  # a later scan began: the first one's tick has settled the count
        self._first = threading.Event()
        self._all = threading.Event()

    def hold(self) -> None:
        self._held = True

    def release_first(self) -> None:
        self._first.set()

    def release_all(self) -> None:
        self._first.set()
        self._all.set()

    def __call__(self, directory: Path) -> int:
        if self._held and threading.current_thread().name == FLUSHER:
            if not self._first_done:
                self._first_done = True
                self.first_waiting.set()
                self._first.wait(TICKS_TIMEOUT_S)
            else:
                self.next_waiting.set()
                self._all.wait(TICKS_TIMEOUT_S)
        return spool_size(directory)


def first_line_bytes(scratch: Path) -> int:
    """The length of a new writer's first line as `emit` writes it (measured in a scratch spool)."""
    core = audit_core(scratch)
    emit(core, 1)
    length = spool_size(scratch)
    core.writer.close()
    return length


def filled_spool(spool: Path, at_least: int) -> int:
    """Write events through a writer (then closed) until `spool` holds `at_least` bytes; what it holds."""
    filler = audit_core(spool, max_bytes=4 * SMALLEST_MAX_BYTES)
    while spool_size(spool) < at_least:
        emit(filler, 1)
    filler.writer.close()
    return spool_size(spool)


class TestMaxBytesIsInclusive:
    """The line that fills the spool to exactly `max_bytes` is accepted; the bound is not one byte lower."""

    def test_line_filling_the_spool_exactly_after_a_rescan_is_written(self, tmp_path: Path) -> None:
        """A writer whose count is not exact (a line written during the flusher's scan, counted twice) measures
        again before refusing, and writes the line that brings the spool to exactly `max_bytes`."""
        line = first_line_bytes(tmp_path / "scratch")  # every line below has this length (seq 0..2, same event)
        spool = tmp_path / "spool"
        held = filled_spool(spool, SMALLEST_MAX_BYTES - 3 * line)
        scans = HeldFlusherScans()
        core = audit_core(spool, measure=scans, max_bytes=held + 3 * line, segment_max_bytes=65536,
                          flush_interval_ms=10)
        try:
            emit(core, 1)
            scans.hold()
            wait_for(scans.first_waiting.is_set, TICKS_TIMEOUT_S, what="the flusher's scan")
            emit(core, 1)  # written while the flusher's scan waits: that scan will see it, and it is added again
            scans.release_first()
            wait_for(scans.next_waiting.is_set, TICKS_TIMEOUT_S, what="the first scan's tick over")
            emit(core, 1)  # over the inexact count, exactly at max_bytes for the spool: measured, then written
            assert spool_size(spool) == held + 3 * line, "the premise: three lines of that length filled the spool"
        finally:
            scans.release_all()
            core.writer.close()

    def test_first_event_filling_the_spool_exactly_is_written(self, tmp_path: Path) -> None:
        """A new writer on a spool holding `max_bytes - line` bytes writes its first line, reaching `max_bytes`.

        (`test_spool_enospc.py` fills the spool until a refusal, so no line landed on the bound itself.)"""
        line = first_line_bytes(tmp_path / "scratch")
        spool = tmp_path / "spool"
        held = filled_spool(spool, SMALLEST_MAX_BYTES - line)

        core = audit_core(spool, max_bytes=held + line)
        try:
            emit(core, 1)
            assert spool_size(spool) == held + line, "the premise: that line filled the spool exactly"
        finally:
            core.writer.close()
