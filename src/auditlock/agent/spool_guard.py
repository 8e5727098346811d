"""Refusing what sits in the spool under a segment's name but is no segment a writer wrote.

Anyone with write access to the spool can put a symlink, a FIFO, a directory or a huge file there under a
segment's name. Every reader opens spool files through `spool.files.open_spool_file`, which refuses them; this
pass, run by the agent before recovery and batching, moves them to `quarantine/` with the reason, so one such
entry is reported once and never blocks, crashes or stalls the agent on every pass and every restart.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from auditlock.agent.recovery import quarantine
from auditlock.spool.files import file_kind
from auditlock.spool.format import parse_segment_name


def quarantine_unsafe_segments(spool: Path, max_bytes: int) -> list[str]:
    """Quarantine every entry named like a segment that is not a regular file, and every sealed one larger than
    `max_bytes` (an open one is checked once recovery holds its lock: a live writer's is never touched).
    Returns the names moved."""
    moved = []
    with os.scandir(spool) as entries:
        found = sorted(entry.name for entry in entries)
    for name in found:
        reason = _refusal(spool / name, max_bytes)
        if reason is not None:
            quarantine(spool, spool / name, reason)
            moved.append(name)
    return moved


def _refusal(path: Path, max_bytes: int) -> str | None:
    parsed = parse_segment_name(path.name)
    if parsed is None:
        return None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None  # sealed, shipped or recovered meanwhile
    if not stat.S_ISREG(st.st_mode):
        return f"refused: {file_kind(st.st_mode)} named like a segment, not a regular file (never read, never followed)"
    if not parsed.is_open and st.st_size > max_bytes:
        return (f"refused: a sealed segment of {st.st_size} bytes, over the read bound of {max_bytes} bytes "
                "(twice the largest segment a writer with this config writes); it was not read")
    return None

