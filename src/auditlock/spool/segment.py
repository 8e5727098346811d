"""One open segment file of a writer: create + flock, append whole lines, seal.

See `auditlock.spool.format` for the invariants this upholds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from auditlock.spool.format import NEW_SUFFIX, SEGMENT_FILE_MODE, SegmentName, fsync_dir

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC


class OpenSegment:
    """A segment this process created, holds the flock of, and appends to."""

    def __init__(self, directory: Path, name: SegmentName, fd: int, month: int) -> None:
        self.directory = directory
        self.name = name
        self.fd = fd
        self.month = month
        self.size = 0
        self.opened_at = time.monotonic()
        self.seal_at = float("inf")  # the monotonic time from which its writer seals it for age
        # durability "sync" (spool/commit.py): lines appended, what of them an fdatasync made durable, a failed
        # fdatasync not yet settled, and the failure the unsynced lines' callers get once they are taken back
        self.lines = 0
        self.durable_size = 0
        self.durable_lines = 0
        self.sync_error: OSError | None = None
        self.failure: OSError | None = None

    @classmethod
    def create(cls, directory: Path, writer_id: str, first_seq: int, month: int) -> OpenSegment:
        """Create, lock and make durable a new empty open segment.

        The file is created under a `.new` name and renamed only once locked, so the agent never sees an
        unlocked `.open` segment of a live writer (it would take it for a dead writer's and seal it).
        """
        name = SegmentName(writer_id, first_seq, is_open=True)
        staging = directory / (name.filename + NEW_SUFFIX)
        fd = os.open(staging, _CREATE_FLAGS, SEGMENT_FILE_MODE)
        try:
            os.fchmod(fd, SEGMENT_FILE_MODE)  # group-readable for the agent whatever the application's umask
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(staging, directory / name.filename)
            fsync_dir(directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                staging.unlink()
            raise
        return cls(directory, name, fd, month)

    @property
    def path(self) -> Path:
        """Where the open segment is."""
        return self.directory / self.name.filename

    def append(self, data: bytes) -> None:
        """Append whole lines; on failure nothing of `data` stays behind (or `TornSegmentError` is raised)."""
        written = 0
        try:
            written = os.write(self.fd, data)
            while written < len(data):  # a short write: a signal, a nearly full disk
                written += os.write(self.fd, data[written:])
        except OSError as exc:
            if written:
                self._truncate_back(exc)
            raise
        self.size += written

    def _truncate_back(self, cause: OSError) -> None:
        try:
            os.ftruncate(self.fd, self.size)
        except OSError as exc:
            raise TornSegmentError(self.path, cause) from exc

    def sync(self) -> None:
        """Make the appended lines durable (data and the file's size)."""
        os.fdatasync(self.fd)

    def seal(self) -> SegmentName:
        """fsync, rename to the sealed name, fsync the directory, release the lock."""
        try:
            os.fsync(self.fd)
            sealed = self.name.sealed()
            os.rename(self.path, self.directory / sealed.filename)
            fsync_dir(self.directory)
        finally:
            self.abandon()
        return sealed

    def abandon(self) -> None:
        """Close without sealing: the agent will recover the segment as a dead writer's."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptor so the parent's lock dies with the parent."""
        self.abandon()


class TornSegmentError(OSError):
    """A partial line could not be truncated away; the segment must not be written again."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, f"partial line left in {path}: {cause.strerror}")
        self.path = path
