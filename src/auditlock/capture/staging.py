"""Capture's staging directory: its spool writer's segments until the position file covers them.

See `capture.position` for the invariants. Only capture writes here, under `capture.lock`; a segment moves into
the spool (a rename on the same file system, then an fsync of both directories) once it is sealed and covered.
At start, what a killed capture left is recovered like the agent recovers a dead writer: a torn last line cut off,
the segment sealed; a damaged one stops capture (its changes would otherwise be written twice or lost).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from auditlock.capture.pgoutput import parse_lsn
from auditlock.capture.position import CaptureError, Position
from auditlock.spool.files import open_spool_file
from auditlock.spool.format import (
    NEW_SUFFIX,
    OPEN_SUFFIX,
    SEALED_SUFFIX,
    ensure_spool_dir,
    fsync_dir,
    parse_segment_name,
)
from auditlock.spool.reader import iter_lines, parse_event, scan_segment

LOCK_FILE = "capture.lock"


class Staging:
    """The staging directory of one capture process and the spool it publishes to."""

    def __init__(self, directory: Path, spool: Path) -> None:
        self.directory = directory
        self.spool = spool

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold capture's single-instance lock, or raise `CaptureError` naming the holder."""
        ensure_spool_dir(self.spool)
        ensure_spool_dir(self.directory)
        if os.stat(self.directory).st_dev != os.stat(self.spool).st_dev:
            raise CaptureError(f"[capture] state_dir {self.directory} is not on the file system of [spool] dir "
                               f"{self.spool}: segments move by rename; put state_dir under the spool's volume")
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise CaptureError(f"another auditlock capture (pid {holder}) uses {self.directory}; run one "
                                   "capture per slot") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def recover(self) -> Position | None:
        """Seal what a dead capture left open; the last change any staged event holds (None if none)."""
        for path in sorted(self.directory.glob(f"*{NEW_SUFFIX}")):
            if parse_segment_name(path.name.removesuffix(NEW_SUFFIX)) is not None:
                path.unlink()  # debris of a writer that died creating a segment: holds no events
        for path in sorted(self.directory.glob(f"*{OPEN_SUFFIX}")):
            if parse_segment_name(path.name) is not None:
                self._seal_dead(path)
        last: Position | None = None
        for path in self.sealed():
            found = _last_position(path)
            if found is not None:
                last = found.later(last)
        return last

    def sealed(self) -> list[Path]:
        """Sealed segments waiting in staging, oldest first."""
        names = [p for p in self.directory.glob(f"*{SEALED_SUFFIX}") if not p.name.endswith(OPEN_SUFFIX)]
        return sorted(p for p in names if parse_segment_name(p.name) is not None)

    def publish(self) -> int:
        """Move every sealed staging segment into the spool (the position file covers them); returns how many."""
        moved = 0
        for path in self.sealed():
            os.rename(path, self.spool / path.name)
            moved += 1
        if moved:
            fsync_dir(self.spool)
            fsync_dir(self.directory)
        return moved

    def _seal_dead(self, path: Path) -> None:
        scan = scan_segment(path)
        if scan.damage is not None:
            raise CaptureError(f"staging segment {path} is damaged ({scan.damage}); capture stops rather than write "
                               "its changes twice or lose them: inspect it, move it into the spool's quarantine/ "
                               "and run `auditlock capture` again")
        with open_spool_file(path, write=True) as f:
            if scan.torn_tail:
                os.ftruncate(f.fileno(), scan.good_bytes)
            os.fsync(f.fileno())
        if scan.lines == 0:
            path.unlink()
        else:
            name = parse_segment_name(path.name)
            assert name is not None
            os.rename(path, path.with_name(name.sealed().filename))
        fsync_dir(self.directory)


def _last_position(path: Path) -> Position | None:
    last: Position | None = None
    for line in iter_lines(path):
        event = parse_event(line)
        if event is None:
            continue
        payload = event["payload"]
        lsn, index = payload.get("commit_lsn"), payload.get("change_index")
        if isinstance(lsn, str) and type(index) is int:
            last = Position(parse_lsn(lsn), index).later(last)
    return last
