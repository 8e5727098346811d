"""Probes of the spool writer's fsync and capacity behaviour, for the writer-promise tests: an audit core over a
writer of its own, `os.*` calls recorded or made to fail (the calls themselves stay real), the flusher's ticks.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock.config import build_config
from auditlock.handler.core import AuditCore
from auditlock.spool.format import OPEN_SUFFIX
from auditlock.spool.space import spool_size
from auditlock.spool.writer import SpoolWriter

FLUSHER = "auditlock-spool-flusher"  # the writer's background thread
TICKS_TIMEOUT_S = 30.0
CHILD_TIMEOUT_S = 120.0


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


_CHILD_PRELUDE = """
import os, sys, threading
import auditlock
from auditlock.config import build_config
from auditlock.handler.core import AuditCore

config = build_config({{"service": "writer-promises", "spool": {{"dir": sys.argv[1], {spool}}},
                       "events": {{"include": ["order.*"]}}, "targets": {{"Order": {{"fields": ["status"]}}}},
                       "retention": {{"default": "std", "classes": {{"std": {{"days": 1}}}}}}}})
core = AuditCore(config)
"""


def child_script(spool_options: str, body: str) -> str:
    """A script for `python -c`: an audit core over the spool `sys.argv[1]` with these `[spool]` options (the
    inside of a dict literal, e.g. `'"durability": "sync"'`), then `body`."""
    return _CHILD_PRELUDE.format(spool=spool_options) + body


def line_end(spool: Path, event_id: str) -> int:
    """The offset just past the line holding `event_id` in the spool's segment."""
    for path in spool.iterdir():
        if path.is_file():
            data = path.read_bytes()
            at = data.find(event_id.encode())
            if at >= 0:
                return data.index(b"\n", at) + 1
    raise AssertionError(f"event {event_id} is not in the spool")
