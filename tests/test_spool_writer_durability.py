"""What the spool writer promises about durability as it is configured and used, at the edges no other test reached
(the rest: tests/test_spool_writer_promises.py).

- The durability a config file names is honoured: "sync" fsyncs in the call, "group" in the background (TOML
  gives an equal string, never the literal object itself).
- `flush(timeout)` that cannot take the writer lock in time returns False.
- A writer closed and then used again still seals its segment at exit (its `atexit` hook registered again).
- Durability `process`: the background flusher never fsyncs after a seal, a `flush()` or an abandoned segment.
- Durability "group" in a process whose stdin (descriptor 0) is closed still fsyncs in the background.

Written for surviving mutants of `spool/writer.py` (docs/mutation-survivors.md). Real files and a real writer;
`os.*` calls are wrapped to record or fail them (tests/support/writer_probes.py), the writes themselves stay real.
"""

from __future__ import annotations

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
from auditlock.config import load_config
from auditlock.handler.core import AuditCore
from auditlock.spool.space import spool_size
from auditlock.spool.writer import SpoolWriter
from tests.support.hostile_spool import sealed_segments
from tests.support.spool_child import REPO_ROOT
from tests.support.waiting import wait_for
from tests.support.writer_probes import (
    CHILD_TIMEOUT_S,
    FLUSHER,
    TICKS_TIMEOUT_S,
    FlusherScans,
    audit_core,
    child_script,
    emit,
    open_segments,
    record_calls,
    tear_next_line,
)

Closing = Callable[[Any], Any]
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


CLOSE_THEN_WRITE_AGAIN = child_script('"durability": "sync"', """\
with auditlock.actor("user#1"):
    core.emit("order.updated", {"target_type": "Order", "target_id": 1, "status": "paid"})
    core.writer.close()
    core.emit("order.updated", {"target_type": "Order", "target_id": 2, "status": "paid"})
# exits without close(): the writer's atexit hook must seal the reopened segment
""")


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


GROUP_MODE_WITHOUT_STDIN = child_script('"durability": "group", "flush_interval_ms": 10', """\
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
""")


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
