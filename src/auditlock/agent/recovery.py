"""Recovering what dead writers left, and quarantining damaged segments.

An `.open.jsonl` segment whose flock can be taken has no live writer (writers rename a segment to that name
only once they hold its lock; see `spool.format`). Recovery truncates a torn *last* line, then seals the
segment like its writer would have. A bad line anywhere else is damage: the segment moves to `quarantine/`
with a reason file — never deleted, never shipped, never blocking the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from auditlock.spool.format import (
    NEW_SUFFIX,
    OPEN_SUFFIX,
    QUARANTINE_DIR,
    SegmentName,
    fsync_dir,
    parse_segment_name,
)
from auditlock.spool.reader import scan_segment

log = logging.getLogger("auditlock.agent")


@dataclass
class RecoveryReport:
    """What one recovery pass did."""

    sealed: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    removed_empty: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


def recover_dead_writers(spool: Path) -> RecoveryReport:
    """Seal every `.open` segment whose writer is gone; quarantine the damaged ones."""
    report = RecoveryReport()
    for path in sorted(spool.glob(f"*{OPEN_SUFFIX}")):
        name = parse_segment_name(path.name)
        if name is None:
            continue
        with _lock_if_dead(path) as fd:
            if fd is not None:
                _recover(spool, path, name, fd, report)
    _remove_dead_staging_files(spool, report)
    return report


@contextlib.contextmanager
def _lock_if_dead(path: Path) -> Iterator[int | None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None  # sealed or removed since we listed it
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # a live writer holds it
            return
        yield fd
    finally:
        os.close(fd)


def _recover(spool: Path, path: Path, name: SegmentName, fd: int, report: RecoveryReport) -> None:
    scan = scan_segment(path)
    if scan.damage is not None:
        quarantine(spool, path, f"damaged open segment of a dead writer: {scan.damage}")
        report.quarantined.append(path.name)
        return
    if scan.torn_tail:
        os.ftruncate(fd, scan.good_bytes)
        report.truncated.append(path.name)
        log.warning("auditlock agent: truncated the torn last line of %s (dead writer) at byte %d",
                    path.name, scan.good_bytes)
    if scan.lines == 0:
        path.unlink()
        fsync_dir(spool)
        report.removed_empty.append(path.name)
        return
    os.fsync(fd)
    os.rename(path, spool / name.sealed().filename)
    fsync_dir(spool)
    report.sealed.append(path.name)


def _remove_dead_staging_files(spool: Path, report: RecoveryReport) -> None:
    # A `.new` file is a segment its writer died creating; it never held an event.
    for path in spool.glob(f"*{NEW_SUFFIX}"):
        with _lock_if_dead(path) as fd:
            if fd is not None and os.fstat(fd).st_size == 0:
                path.unlink()
                report.removed_empty.append(path.name)


def quarantine(spool: Path, path: Path, reason: str) -> Path:
    """Move a segment to `quarantine/` with a `.reason.txt` beside it; log loudly."""
    target_dir = spool / QUARANTINE_DIR
    target_dir.mkdir(mode=0o700, exist_ok=True)
    target = target_dir / path.name
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (target_dir / f"{path.name}.reason.txt").write_text(f"{stamp} {reason}\n")
    os.rename(path, target)
    fsync_dir(target_dir)
    fsync_dir(spool)
    log.error("auditlock agent: QUARANTINED %s: %s (kept in %s; not shipped)", path.name, reason, target_dir)
    return target
