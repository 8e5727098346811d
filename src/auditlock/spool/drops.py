"""Drop counts: events an application dropped under `[spool] on_error = "drop"`, kept where the agent reads them.

A drop happens exactly when writing the spool failed, so the event itself cannot say so. Each writer that drops
keeps a small counter file in the spool directory (format in `spool.format`, "Drop counts"):

    <spool>/drops/<writer>.json = {"writer": "<32 hex>", "dropped": {"<reason>": n, ...},
                                   "first_dropped_at": "<RFC 3339>", "last_dropped_at": "<RFC 3339>"}

`dropped` holds this writer's totals since it started (monotonic), written whole (tmp, fsync, rename, fsync dir).
The file may fail to write for the same reason the events did (a full disk): the counts stay in memory and the
next write attempt — the next drop, or the flusher's next tick — writes the totals again. Writes are at most one
per `MIN_WRITE_INTERVAL_S` while drops keep coming, so a crash loses at most that last second of counting from the
file (the process's own `auditlock.events_dropped` event, written at the next successful write, is the exact count
in the trail). Reasons are a fixed, short vocabulary: `REASONS`.

The agent reads these files (`read_drop_totals`) and exports `auditlock_app_events_dropped_total{reason}`.
Only the standard library and orjson: this module runs in the application.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from auditlock.errors import SpoolError
from auditlock.spool.files import open_spool_file
from auditlock.spool.format import DROPS_DIR, SEGMENT_FILE_MODE, ensure_shared_dir, fsync_dir

SPOOL_FULL = "spool_full"  # over [spool] max_bytes
DISK_FULL = "disk_full"
IO_ERROR = "io_error"
PERMISSION = "permission"
OTHER = "other"
REASONS = (SPOOL_FULL, DISK_FULL, IO_ERROR, PERMISSION, OTHER)
_BY_ERRNO = {errno.EDQUOT: SPOOL_FULL, errno.ENOSPC: DISK_FULL, errno.EIO: IO_ERROR, errno.EACCES: PERMISSION,
             errno.EPERM: PERMISSION, errno.EROFS: PERMISSION}

MIN_WRITE_INTERVAL_S = 1.0
MAX_DROP_FILES = 10_000  # read by the agent; a directory holding more is read no further
MAX_DROP_FILE_BYTES = 64 * 1024
_WRITER = re.compile(r"^[0-9a-f]{32}\Z")


def drop_reason(exc: BaseException) -> str:
    """The reason label of a failed spool write: from the OSError behind the `SpoolError`."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    return _BY_ERRNO.get(getattr(cause, "errno", None) or 0, OTHER)


class DropFile:
    """One writer's drop counts, kept in memory and written to `<spool>/drops/<writer>.json` (no I/O until a drop)."""

    def __init__(self, spool: Path, writer_id: str) -> None:
        self.path = spool / DROPS_DIR / f"{writer_id}.json"
        self.writer_id = writer_id
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._first: str | None = None
        self._last: str | None = None
        self._unwritten = False
        self._written_at = float("-inf")

    def add(self, reason: str) -> None:
        """Count one dropped event; write the totals unless they were written less than a second ago."""
        now = _utc_now()
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            self._first = self._first or now
            self._last = now
            self._unwritten = True
        if time.monotonic() - self._written_at >= MIN_WRITE_INTERVAL_S:
            self.flush()

    def flush(self) -> bool:
        """Write the totals if some are unwritten; False if that failed (they stay for the next attempt)."""
        with self._lock:
            if not self._unwritten:
                return True
            document = {"writer": self.writer_id, "dropped": dict(self._counts), "first_dropped_at": self._first,
                        "last_dropped_at": self._last}
            self._unwritten = False
            self._written_at = time.monotonic()
        try:
            _write_atomically(self.path, orjson.dumps(document))
        except OSError:
            with self._lock:
                self._unwritten = True
            return False
        return True


def _write_atomically(path: Path, data: bytes) -> None:
    ensure_shared_dir(path.parent)  # 3770 like the spool: every writer's user creates its own file there
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, SEGMENT_FILE_MODE)
    try:
        os.fchmod(fd, SEGMENT_FILE_MODE)  # the agent reads it through the group, whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)


def read_drop_totals(spool: Path) -> dict[str, int]:
    """Dropped events by reason, summed over every writer's drop file (hostile files are skipped)."""
    totals: dict[str, int] = {}
    for document in read_drop_files(spool).values():
        for reason, n in document["dropped"].items():
            totals[reason] = totals.get(reason, 0) + n
    return totals


def read_drop_files(spool: Path) -> dict[str, dict[str, Any]]:
    """Every valid drop file of the spool by writer: {"dropped": {reason: n}, "first_dropped_at", "last_dropped_at"}
    (at most `MAX_DROP_FILES`; a file that is not this shape, or whose name is not its writer's, is skipped)."""
    try:
        entries = sorted(os.scandir(spool / DROPS_DIR), key=lambda e: e.name)[:MAX_DROP_FILES]
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for entry in entries:
        document = _read_drop_file(Path(entry.path))
        if document is not None and entry.name == f"{document['writer']}.json":
            found[document["writer"]] = document
    return found


def _read_drop_file(path: Path) -> dict[str, Any] | None:
    try:
        with open_spool_file(path, MAX_DROP_FILE_BYTES) as f:  # no symlink followed, no FIFO waited on
            document: Any = orjson.loads(f.read())
    except (OSError, SpoolError, orjson.JSONDecodeError):
        return None
    if not isinstance(document, dict) or not _WRITER.match(str(document.get("writer"))):
        return None
    dropped = document.get("dropped")
    if not isinstance(dropped, dict):
        return None
    counts = {reason: n for reason, n in dropped.items()
              if reason in REASONS and isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**53}
    return {"writer": document["writer"], "dropped": counts,
            "first_dropped_at": _stamp(document.get("first_dropped_at")),
            "last_dropped_at": _stamp(document.get("last_dropped_at"))}


def _stamp(value: Any) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value) else None


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
