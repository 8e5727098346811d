"""What the spool writer promises about fsync and capacity, at the edges no other test reached.

- Durability `process`: written before the call returns, fsync'd only when sealing — the background flusher never
  fsyncs (docs/configuration.md), however many times it runs after an event — nor after a seal, a `flush()` or an
  abandoned segment.
- A failed fsync in the logging call (`sync`) is counted in `stats["errors"]` as well as `stats["sync_failures"]`.
- A seal whose fsync fails does not raise: counted in `stats["sync_failures"]`, the segment left `.open` for the
  agent to recover, and writing continues.
- A line torn by a full disk whose partial bytes cannot be truncated away ends the segment: the writer abandons it
  (left `.open`, never written again) and continues under a new writer id.
- `flush()` whose shared fsync fails (durability "sync") returns False, and the writer continues under a new id.
- A process forked while its writer has no open segment (after a seal) gives the child a writer id of its own.
- `[spool] max_bytes` is inclusive: an event that brings the spool to exactly `max_bytes` is written.
- The durability a config file names is honoured: "sync" fsyncs in the call, "group" in the background (TOML
  gives an equal string, never the literal object itself).
- `flush(timeout)` that cannot take the writer lock in time returns False.
- A writer closed and then used again still seals its segment at exit (its `atexit` hook registered again).
- Durability "group" in a process whose stdin (descriptor 0) is closed still fsyncs in the background.

Written for surviving mutants of `spool/writer.py` (docs/mutation-survivors.md). Real files and a real writer;
`os.fsync`, `os.fdatasync`, `os.write` and `os.ftruncate` are wrapped to record or fail calls (as
tests/support/held_fsync.py does), the writes themselves stay real.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.config import build_config, load_config
from auditlock.handler.core import AuditCore
from auditlock.spool.format import OPEN_SUFFIX
from auditlock.spool.space import spool_size
from auditlock.spool.writer import SpoolWriter
from tests.support.held_fsync import HeldFdatasync
from tests.support.hostile_spool import sealed_segments
from tests.support.spool_child import REPO_ROOT, read_spool
from tests.support.waiting import wait_for

Closing = Callable[[Any], Any]
FLUSHER = "auditlock-spool-flusher"  # the writer's background thread
TICKS_TIMEOUT_S = 30.0
CHILD_TIMEOUT_S = 120.0
SMALLEST_MAX_BYTES = 65536  # the config's lower bound for [spool] max_bytes


def audit_core(spool: Path, *, measure: Callable[[Path], int] | None = None, **spool_options: Any) -> AuditCore:
    """An audit core over a writer of its own on `spool` (durability "sync", 4 KiB segments, unless given)."""
    config = build_config({
        "service": "writer-promises",
        "spool": {"dir": str(spool), "durability": "sync", "segment_max_bytes": 4096, **spool_options},
        "events": {"include": ["order.*"]},
        "targets": {"Order": {"fields": ["status"]}},
        "retention": {"default": "std", "classes": {"std": {"days": 1}}},
    })
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes, measure=measure)
    return AuditCore(config, writer=writer)


def emit(core: AuditCore, count: int) -> None:
    """Emit `count` events through the core (each of the same length, whatever the count)."""
    with auditlock.actor("user#1"):
        for _ in range(count):
            assert core.emit("order.updated", {"target_type": "Order", "target_id": 0, "status": "paid"}) is not None


def fail_next(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the next call of `os.<name>` (`fsync`, `fdatasync`) fail with EIO, as a failing disk would; later calls
    work again."""
    real = getattr(os, name)

    def failing(fd: int) -> None:
        monkeypatch.setattr(os, name, real)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, name, failing)


def record_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Every later call of `os.<name>` (its descriptor); the calls run for real."""
    real = getattr(os, name)
    calls: list[int] = []

    def recording(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, name, recording)
    return calls


class FlusherScans:
    """The writer's `measure`: the real `spool_size`, counting the calls the flusher makes (one per tick, after
    its fsync step), so a test can wait for ticks that began after something it did."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self, directory: Path) -> int:
        if threading.current_thread().name == FLUSHER:
            self.ticks += 1
        return spool_size(directory)


def open_segments(spool: Path) -> list[Path]:
    """The open segments in the spool, by name."""
    return sorted(spool.glob(f"*{OPEN_SUFFIX}"))


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


def tear_next_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next `os.write` writes half its bytes, the one after fails with ENOSPC (a disk filling mid-line), and the
    next `os.ftruncate` fails with EIO, so the partial line cannot be taken back; later calls work again."""
    real_write, real_ftruncate = os.write, os.ftruncate
    writes = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal writes
        writes += 1
        if writes == 1:
            return real_write(fd, data[:len(data) // 2])
        monkeypatch.setattr(os, "write", real_write)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def ftruncate(fd: int, length: int) -> None:
        monkeypatch.setattr(os, "ftruncate", real_ftruncate)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)


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


FORK_WITHOUT_A_SEGMENT = """
import os, sys
import auditlock
from auditlock.config import build_config, load_config
from auditlock.handler.core import AuditCore

config = build_config({"service": "writer-promises", "spool": {"dir": sys.argv[1], "durability": "sync"},
                       "events": {"include": ["order.*"]}, "targets": {"Order": {"fields": ["status"]}},
                       "retention": {"default": "std", "classes": {"std": {"days": 1}}}})
core = AuditCore(config)
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
"""


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


CONFIG_FILE = """
service = "writer-promises"
[spool]
dir = {dir}
durability = "{durability}"
flush_interval_ms = {flush_interval_ms}
[events]
include = ["order.*"]
[targets.Order]
fields = ["status"]
[retention]
default = "std"
[retention.classes.std]
days = 1
"""


def core_from_config_file(directory: Path, durability: str, flush_interval_ms: int,
                          measure: Callable[[Path], int] | None = None) -> AuditCore:
    """An audit core whose config is loaded from a TOML file written in `directory` (spool `directory/spool`)."""
    path = directory / "auditlock.toml"
    path.write_text(CONFIG_FILE.format(dir=json.dumps(str(directory / "spool")), durability=durability,
                                       flush_interval_ms=flush_interval_ms))
    config = load_config(path, environ={})
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes, measure=measure)
    return AuditCore(config, writer=writer)


class TestDurabilityFromAConfigFile:
    """The durability read from a TOML file (an equal string, not the literal) selects the mode it names."""

    def test_sync_from_a_file_fsyncs_in_the_call(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 closing: Closing) -> None:
        """durability = "sync" in a config file: the event is fdatasync'd before the logging call returns."""
        core = core_from_config_file(tmp_path, "sync", flush_interval_ms=600_000)
        closing(core.writer)
        fdatasyncs = record_calls(monkeypatch, "fdatasync")
        emit(core, 1)
        assert fdatasyncs, "the logging call returned before its line was fdatasync'd"

    def test_group_from_a_file_fsyncs_in_the_background(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        closing: Closing) -> None:
        """durability = "group" in a config file: two whole flusher ticks after the events, one fdatasync'd them."""
        scans = FlusherScans()
        core = core_from_config_file(tmp_path, "group", flush_interval_ms=10, measure=scans)
        closing(core.writer)
        fdatasyncs = record_calls(monkeypatch, "fdatasync")
        emit(core, 3)
        after = scans.ticks
        wait_for(lambda: scans.ticks >= after + 2, TICKS_TIMEOUT_S, what="two flusher ticks after the events")
        assert fdatasyncs, "the flusher never fdatasync'd the events of a group-mode writer"


class FirstScanHeld:
    """The writer's `measure`: the scan of its first event (under the writer lock, in the logging thread) waits
    until released; the flusher's scans run at once."""

    def __init__(self) -> None:
        self.waiting, self.release = threading.Event(), threading.Event()

    def __call__(self, directory: Path) -> int:
        if threading.current_thread().name != FLUSHER and not self.waiting.is_set():
            self.waiting.set()
            self.release.wait(TICKS_TIMEOUT_S)
        return spool_size(directory)


class TestFlushThatCannotTakeTheLock:
    """`flush(timeout)` reports a writer lock it could not take in time as False, never as made durable."""

    def test_flush_returns_false_while_the_lock_is_held(self, tmp_path: Path, closing: Closing) -> None:
        """A logging call holds the writer lock (its first capacity scan held): `flush(timeout=0.01)` is False;
        once the call is done, `flush()` is True."""
        scans = FirstScanHeld()
        core = audit_core(tmp_path / "spool", measure=scans, durability="group", flush_interval_ms=600_000)
        writer = closing(core.writer)
        caller = threading.Thread(target=emit, args=(core, 1))
        caller.start()
        try:
            wait_for(scans.waiting.is_set, TICKS_TIMEOUT_S, what="the logging call's scan under the writer lock")
            assert writer.flush(timeout=0.01) is False
        finally:
            scans.release.set()
            caller.join(timeout=2 * TICKS_TIMEOUT_S)
        assert not caller.is_alive(), "the logging call did not return"
        assert writer.flush() is True


CLOSE_THEN_WRITE_AGAIN = """
import sys
import auditlock
from auditlock.config import build_config
from auditlock.handler.core import AuditCore

config = build_config({"service": "writer-promises", "spool": {"dir": sys.argv[1], "durability": "sync"},
                       "events": {"include": ["order.*"]}, "targets": {"Order": {"fields": ["status"]}},
                       "retention": {"default": "std", "classes": {"std": {"days": 1}}}})
core = AuditCore(config)
with auditlock.actor("user#1"):
    core.emit("order.updated", {"target_type": "Order", "target_id": 1, "status": "paid"})
    core.writer.close()
    core.emit("order.updated", {"target_type": "Order", "target_id": 2, "status": "paid"})
# exits without close(): the writer's atexit hook must seal the reopened segment
"""


class TestExitAfterCloseAndReuse:
    """A writer closed, then written to again (a later append reopens), is closed again by its `atexit` hook."""

    def test_reopened_segment_is_sealed_at_exit(self, tmp_path: Path) -> None:
        """Event, close(), event, exit without close(): no segment left `.open`, and each of the two segments ends
        with its clean-end record."""
        spool = tmp_path / "spool"
        done = subprocess.run([sys.executable, "-c", CLOSE_THEN_WRITE_AGAIN, str(spool)], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert done.returncode == 0, done.stderr
        assert open_segments(spool) == [], "the reopened segment was left open at exit"
        last_events = [orjson.loads(path.read_bytes().splitlines()[-1])["event_type"]
                       for path in sealed_segments(spool)]
        assert last_events == ["auditlock.writer_closed"] * 2


class TestProcessModeFlusherAfterSealFlushOrAbandon:
    """Durability "process": a seal, a `flush()` or an abandoned segment leaves nothing for the flusher to fsync."""

    @staticmethod
    def fdatasyncs_in_two_ticks(core: AuditCore, scans: FlusherScans, monkeypatch: pytest.MonkeyPatch,
                                step: Callable[[], None]) -> list[int]:
        """Run `step` and start recording fdatasync under the writer lock (no tick in between), then the
        fdatasyncs of the next two whole flusher ticks."""
        with core.writer._lock:
            step()
            fdatasyncs = record_calls(monkeypatch, "fdatasync")
            after = scans.ticks
        wait_for(lambda: scans.ticks >= after + 2, TICKS_TIMEOUT_S, what="two flusher ticks after the step")
        return fdatasyncs

    def test_no_fsync_of_the_segment_after_a_seal(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  closing: Closing) -> None:
        """Events, `seal()`, an event into a new segment: two ticks later, no fdatasync."""
        scans = FlusherScans()
        core = audit_core(tmp_path / "spool", measure=scans, durability="process", flush_interval_ms=10)
        closing(core.writer)
        emit(core, 3)

        def seal_and_write() -> None:
            core.writer.seal()
            emit(core, 1)

        assert self.fdatasyncs_in_two_ticks(core, scans, monkeypatch, seal_and_write) == []

    def test_no_fsync_after_a_flush(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closing: Closing) -> None:
        """Events, `flush()` (its own fdatasync): two ticks later, no further fdatasync."""
        scans = FlusherScans()
        core = audit_core(tmp_path / "spool", measure=scans, durability="process", flush_interval_ms=10)
        closing(core.writer)
        emit(core, 3)

        def flush_only() -> None:
            assert core.writer.flush() is True

        assert self.fdatasyncs_in_two_ticks(core, scans, monkeypatch, flush_only) == []

    def test_no_fsync_of_the_next_segment_after_an_abandoned_one(self, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 closing: Closing) -> None:
        """A torn line abandons the segment; the next event opens another: two ticks later, no fdatasync."""
        scans = FlusherScans()
        core = audit_core(tmp_path / "spool", measure=scans, durability="process", flush_interval_ms=10,
                          segment_max_bytes=65536)
        closing(core.writer)
        emit(core, 3)

        def tear_then_write() -> None:
            tear_next_line(monkeypatch)
            with pytest.raises(auditlock.SpoolError):
                emit(core, 1)
            emit(core, 1)

        assert self.fdatasyncs_in_two_ticks(core, scans, monkeypatch, tear_then_write) == []


GROUP_MODE_WITHOUT_STDIN = """
import os, sys, threading
import auditlock
from auditlock.config import build_config
from auditlock.handler.core import AuditCore

config = build_config({"service": "writer-promises",
                       "spool": {"dir": sys.argv[1], "durability": "group", "flush_interval_ms": 10},
                       "events": {"include": ["order.*"]}, "targets": {"Order": {"fields": ["status"]}},
                       "retention": {"default": "std", "classes": {"std": {"days": 1}}}})
core = AuditCore(config)
real_fdatasync, synced = os.fdatasync, threading.Event()

def recording(fd):
    real_fdatasync(fd)
    synced.set()

os.fdatasync = recording
with auditlock.actor("user#1"):
    core.emit("order.updated", {"target_type": "Order", "target_id": 1, "status": "paid"})
    first = synced.wait(float(sys.argv[2]))
    synced.clear()
    os.close(0)  # descriptor 0 is now the lowest free one: the flusher's dup of the segment gets it
    core.emit("order.updated", {"target_type": "Order", "target_id": 2, "status": "paid"})
    second = synced.wait(float(sys.argv[2]))
print(first, second)
core.writer.close()
"""


class TestGroupModeWithStdinClosed:
    """Durability "group" in a process whose descriptor 0 is closed: the flusher still fsyncs (its duplicate of the
    segment's descriptor may be 0)."""

    def test_flusher_fsyncs_through_descriptor_zero(self, tmp_path: Path) -> None:
        """An event, its fdatasync, stdin closed, another event: the flusher fdatasyncs that one too."""
        done = subprocess.run([sys.executable, "-c", GROUP_MODE_WITHOUT_STDIN, str(tmp_path / "spool"),
                               str(CHILD_TIMEOUT_S / 4)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "True"], done.stderr
