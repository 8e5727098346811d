"""What a spool directory holds, and the error an event that could not be written raises."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from auditlock.errors import SpoolError
from auditlock.spool.format import OPEN_SUFFIX, SEALED_SUFFIX


def spool_size(directory: Path) -> int:
    """Bytes held by segment files (open and sealed) directly in the spool directory."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith((OPEN_SUFFIX, SEALED_SUFFIX)):
                    try:
                        total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # the agent deleted it while we looked
    except FileNotFoundError:
        return 0
    return total


def spool_error(exc: OSError, directory: Path) -> SpoolError:
    """The error a logging call raises when its event could not be made durable: the cause and what to do."""
    hints = {
        errno.ENOSPC: "the disk holding the spool is full; free space or ship the backlog (is the agent running?)",
        errno.EDQUOT: "the spool is over [spool] max_bytes; is the agent running and can it reach S3?",
        errno.EIO: "the disk reported an I/O error; check the volume",
        errno.EACCES: "the process may not write there; check ownership (spool dir 0700, files 0600)",
    }
    hint = hints.get(exc.errno or 0, "check the spool volume")
    return SpoolError(f"audit event not written to spool {directory}: {exc.strerror or exc}; {hint}")
