"""Staging files: where the agent writes an object's gzip bytes before its PUT, so that its memory does not grow
with the size of a segment or a batch.

Layout: `<state dir>/staging/<n>.gz` (mode 0600), one per object of the batch being built, numbered in build
order. They hold nothing that is not in the spool: a batch's objects are rebuilt byte for byte from its segments
(see `agent.batch`), so a staging file is never trusted across builds. The directory is emptied before every
build, after every batch, and by recovery at the start of every pass (what a crashed agent left). Only the
agent (under its single-instance lock) writes there.

A staging file that cannot be written for lack of space (ENOSPC, EDQUOT) does not stop the agent — a full disk
is exactly when the spool must drain: that object's bytes continue in memory (bounded by the batch's compressed
size), logged once per object.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path

from auditlock.spool.format import DIR_MODE, FILE_MODE

log = logging.getLogger("auditlock.agent")

STAGING_DIR = "staging"
STAGED_SUFFIX = ".gz"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def clear_staging(directory: Path) -> int:
    """Remove every staging file in `directory` (absent: nothing to do); returns how many were removed."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        if entry.name.endswith(STAGED_SUFFIX) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            removed += 1
    return removed


class StagedBody:
    """An object's bytes as they are written, to a staging file (or to memory: no staging directory, or no space
    left in it), with their MD5, SHA-256 and size computed on the way."""

    def __init__(self, path: Path | None) -> None:
        """`path`: the staging file to create (it must not exist); None keeps the bytes in memory."""
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.path: Path | None = None
        self.memory: bytearray | None = bytearray()
        self.fd = -1
        if path is not None:
            self._create(path)

    def _create(self, path: Path) -> None:
        try:
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # read-write: on ENOSPC what was written is read back (`_move_to_memory`)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            log.warning("auditlock agent: no space for staging file %s (%s); this object is built in memory",
                        path, exc.strerror)
            return
        self.path, self.memory = path, None

    def write(self, data: bytes | memoryview) -> int:
        """Append `data` (what `gzip.GzipFile` calls)."""
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)
        if self.memory is None:
            self._write_file(memoryview(data))
        else:
            self.memory += data
        return len(data)

    def _write_file(self, view: memoryview) -> None:
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise
                self._move_to_memory(exc)
                assert self.memory is not None
                self.memory += view
                return
            view = view[written:]

    def _move_to_memory(self, exc: OSError) -> None:
        """Continue in memory: read back what the file holds, then remove it."""
        assert self.path is not None
        written = os.lseek(self.fd, 0, os.SEEK_CUR)
        self.memory = bytearray(os.pread(self.fd, written, 0))
        os.close(self.fd)
        self.fd = -1
        self.path.unlink()
        log.warning("auditlock agent: staging file %s: %s after %d bytes; the rest of this object is built in "
                    "memory", self.path, exc.strerror, written)
        self.path = None

    def flush(self) -> None:
        """Nothing is buffered here (`gzip.GzipFile` calls it)."""

    def close(self) -> None:
        """Close the staging file (kept on disk for the upload)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def in_memory(self) -> bytes | None:
        """The bytes, when they are kept in memory."""
        return bytes(self.memory) if self.memory is not None else None
