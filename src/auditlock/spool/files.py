"""Opening a spool file to read it: the one way every reader of the spool does it (agent, query, verify).

Anyone who can write to the spool directory can put anything there under a segment's name: a symlink (to a file
the agent would then truncate, or to /dev/zero), a FIFO (a read blocks forever), a directory, a file of any size.
`open_spool_file` refuses all of that before a byte is read: it opens with O_NOFOLLOW (a symlink is refused, not
followed) and O_NONBLOCK (opening a FIFO never waits for a writer), then checks with fstat — on the descriptor, so
nothing can be swapped in between — that it holds a regular file within the size bound. The error names what the
file is, so the agent can quarantine it with that reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from auditlock.errors import SpoolError

# The agent refuses a segment larger than this many times the largest one a writer with its config writes
# (`largest_segment_bytes`): the writer may have run with a larger `segment_max_bytes`, but not hugely larger.
SEGMENT_SIZE_FACTOR = 2
# Readers without a config (`verify --spool`, `query --include-spool`) refuse a segment or line larger than this.
UNCONFIGURED_MAX_SEGMENT_BYTES = 1024 * 1024 * 1024


class UnsafeSpoolFileError(SpoolError):
    """A file in the spool is not something a reader may read (a symlink, FIFO, directory, device, or too large);
    `reason` says which, in words fit for a quarantine reason file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def refuse_world_writable(spool: Path) -> None:
    """Raise `SpoolError` if every local user may write into the spool directory: anyone could then plant segments
    the agent would ship as genuine audit events. A group-writable spool is allowed (the group is trusted: an
    application and an agent under different users share it)."""
    mode = os.stat(spool).st_mode
    if mode & stat.S_IWOTH:
        raise SpoolError(
            f"spool directory {spool} is writable by every local user (mode {stat.S_IMODE(mode):04o}): anyone could "
            f"plant segments that would be shipped as audit events. Run `chmod 0700 {spool}` (or 3770 for a group "
            "the application and the agent share: docs/operations.md, \"Two identities\"), or point [spool] dir at "
            "a subdirectory, which auditlock creates 3770")


def largest_segment_bytes(segment_max_bytes: int, max_event_bytes: int) -> int:
    """The read bound for segments of a spool with this config: `SEGMENT_SIZE_FACTOR` times the largest segment
    its writers write (a writer rotates before a line would pass `segment_max_bytes`; one line fills a segment on
    its own, at most `max_event_bytes`)."""
    return SEGMENT_SIZE_FACTOR * max(segment_max_bytes, max_event_bytes)


def open_spool_file(path: Path, max_bytes: int | None = None, *, write: bool = False) -> BinaryIO:
    """Open a regular file of the spool without following a symlink or blocking on a FIFO; `max_bytes` bounds its
    size. Raises `UnsafeSpoolFileError` naming what it is instead, `FileNotFoundError` if it is gone."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refusal(path, exc) from exc
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "r+b" if write else "rb")
    except BaseException:
        os.close(fd)
        raise


def _refusal(path: Path, exc: OSError) -> Exception:
    # O_NOFOLLOW fails a symlink with ELOOP, O_RDWR a directory with EISDIR: lstat says what it is.
    if isinstance(exc, FileNotFoundError):
        return exc
    kind = _lstat_kind(path)
    if kind is not None:
        return UnsafeSpoolFileError(path, f"{kind}, not a regular file")
    return exc


def _lstat_kind(path: Path) -> str | None:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else file_kind(mode)


def _check_regular(path: Path, st: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeSpoolFileError(path, f"{file_kind(st.st_mode)}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise UnsafeSpoolFileError(path, f"{st.st_size} bytes, over the read bound of {max_bytes} bytes (larger than "
                                         "any segment a writer with this config writes)")


def file_kind(mode: int) -> str:
    """What a file of this `st_mode` is, in words (\"a FIFO\")."""
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")
