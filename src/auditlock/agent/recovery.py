"""Recovering what dead writers left, and quarantining damaged segments.

An `.open.jsonl` segment whose flock can be taken has no live writer (writers rename a segment to that name
only once they hold its lock; see `spool.format`). Recovery drops a torn *last* line, then seals the segment like
its writer would have. The agent never writes a writer's file (it is the application user's, 0640): a torn tail
is dropped by replacing the segment with a copy of its whole lines, through the spool directory the agent owns.
A bad line anywhere else is damage: the segment moves to `quarantine/` with a reason file — never deleted, never
shipped, never blocking the rest.
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
from typing import BinaryIO

from auditlock.agent.identity import ensure_private_dir
from auditlock.errors import SpoolError
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import (
    FILE_MODE,
    NEW_SUFFIX,
    OPEN_SUFFIX,
    QUARANTINE_DIR,
    RECOVERING_SUFFIX,
    SEGMENT_FILE_MODE,
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


def recover_dead_writers(spool: Path, max_bytes: int | None = None) -> RecoveryReport:
    """Seal every `.open` segment whose writer is gone; quarantine the damaged ones, and those that are not a
    regular file or are larger than `max_bytes` (see `spool.files`)."""
    report = RecoveryReport()
    for path in sorted(spool.glob(f"*{OPEN_SUFFIX}")):
        name = parse_segment_name(path.name)
        if name is None:
            continue
        try:
            with _lock_if_dead(path, max_bytes) as f:
                if f is not None:
                    _recover(spool, path, name, f, report)
        except UnsafeSpoolFileError as exc:
            quarantine(spool, path, f"refused open segment: {exc.reason}")
            report.quarantined.append(path.name)
    _remove_dead_staging_files(spool, report)
    return report


@contextlib.contextmanager
def _lock_if_dead(path: Path, max_bytes: int | None = None) -> Iterator[BinaryIO | None]:
    """The segment, opened safely and flock'd, if no live writer holds it. The size bound is checked only once
    the lock is ours: a live writer's segment is never refused."""
    try:
        f = open_spool_file(path)  # read-only: flock needs no write access, and the file is the writer's
    except FileNotFoundError:
        yield None  # sealed or removed since we listed it
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # a live writer holds it
            return
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise UnsafeSpoolFileError(path, f"{size} bytes, over the read bound of {max_bytes} bytes (larger "
                                             "than any segment a writer with this config writes)")
        yield f


def _recover(spool: Path, path: Path, name: SegmentName, f: BinaryIO, report: RecoveryReport) -> None:
    fd = f.fileno()
    scan = scan_segment(path, source=f)
    if scan.damage is not None:
        quarantine(spool, path, f"damaged open segment of a dead writer: {scan.damage}")
        report.quarantined.append(path.name)
        return
    if scan.torn_tail:
        _drop_torn_tail(spool, path, fd, scan.good_bytes)
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


def _drop_torn_tail(spool: Path, path: Path, fd: int, good_bytes: int) -> None:
    """Replace the segment by a copy of its first `good_bytes` (its whole lines): written to `<name>.recovering`,
    fsync'd, renamed over the segment. A crash leaves the torn segment or the copy, and a stale copy is replaced."""
    copy = spool / (path.name + RECOVERING_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        copy.unlink()  # a copy an earlier pass left when it crashed (or anything planted under its name)
    out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, SEGMENT_FILE_MODE)
    try:
        os.fchmod(out, SEGMENT_FILE_MODE)
        _copy_prefix(fd, out, good_bytes)
        os.fsync(out)
    finally:
        os.close(out)
    os.rename(copy, path)
    fsync_dir(spool)


def _copy_prefix(src: int, dst: int, length: int, chunk: int = 1 << 20) -> None:
    offset = 0
    while offset < length:
        data = os.pread(src, min(chunk, length - offset), offset)
        if not data:
            raise SpoolError(f"segment shrank to {offset} bytes while its torn tail was being dropped")
        os.write(dst, data)
        offset += len(data)


def _remove_dead_staging_files(spool: Path, report: RecoveryReport) -> None:
    # A `.recovering` copy whose segment is gone (sealed or quarantined since) is debris of a crashed pass.
    for path in spool.glob(f"*{OPEN_SUFFIX}{RECOVERING_SUFFIX}"):
        if not os.path.lexists(spool / path.name.removesuffix(RECOVERING_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    # A `.new` file is a segment its writer died creating; it never held an event.
    for path in spool.glob(f"*{NEW_SUFFIX}"):
        try:
            with _lock_if_dead(path) as f:
                if f is not None and os.fstat(f.fileno()).st_size == 0:
                    path.unlink()
                    report.removed_empty.append(path.name)
        except UnsafeSpoolFileError:
            continue  # not a writer's: left alone (it holds no events and is never read)


def quarantine(spool: Path, path: Path, reason: str) -> Path:
    """Move a segment (or whatever sits under a segment's name) to `quarantine/` with a `.reason.txt` beside it
    (mode 0600 whatever the umask); log loudly. A name already quarantined gets a `.N` suffix: nothing in
    quarantine is ever replaced."""
    target_dir = _quarantine_dir(spool)
    target = _free_name(target_dir, path.name)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_private(target_dir / f"{target.name}.reason.txt", f"{stamp} {reason}\n".encode())
    os.rename(path, target)
    fsync_dir(target_dir)
    fsync_dir(spool)
    log.error("auditlock agent: QUARANTINED %s: %s (kept in %s; not shipped)", path.name, reason, target_dir)
    return target


def _quarantine_dir(spool: Path) -> Path:
    # The agent's alone: a symlink or a directory a writer planted there would take segments out of its reach.
    return ensure_private_dir(spool / QUARANTINE_DIR, "its quarantine directory")


def _free_name(directory: Path, name: str) -> Path:
    target, n = directory / name, 1
    while os.path.lexists(target) or os.path.lexists(f"{target}.reason.txt"):
        target, n = directory / f"{name}.{n}", n + 1
    return target


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, FILE_MODE)  # explicit: not whatever the umask left
        f.write(data)
        f.flush()
        os.fsync(fd)
