"""The spool: the on-disk contract between the in-process writer and the agent.

Layout (DESIGN.md, "The spool"):

    <spool dir>/                                    agent:<spool group> 3770 (setgid, sticky)
        <writer>.<first_seq:016x>.open.jsonl        open segment: appended by its writer, flock'd (LOCK_EX); 0640
        <writer>.<first_seq:016x>.jsonl             sealed segment: complete, fsync'd, never written again; 0640
        <writer>.<first_seq:016x>.open.jsonl.new    being created (empty, renamed once locked)
        <writer>.<first_seq:016x>.open.jsonl.recovering   the agent's copy of a dead writer's segment (torn tail)
        .agent.lock, .agent/                        the agent's single-instance lock (0600) and its state (0700)
        quarantine/<segment name> + .reason.txt     damaged segments the agent refused to ship; agent's, 0700
        drops/<writer>.json                         drop counts of a writer under on_error = "drop"; dir 3770, 0640

Invariants
- A segment belongs to exactly one writer (one process start, or one fork of it). No two processes ever
  append to one file. `writer` is 32 lowercase hex digits (a UUIDv7, so names sort by start time) and
  never contains a dot; `first_seq` is the seq of the segment's first line, fixed-width hex so that
  lexical order is numeric order.
- A line is one `auditlock/1` event as compact JSON, keys in schema order, terminated by "\n".
  `seq` counts 0, 1, 2, ... per writer without gaps across that writer's segments; `prev` is the hex
  SHA-256 of the previous line of the same writer, *without* its trailing newline (64 zeros for seq 0).
- Only the last line of an open segment can be incomplete ("torn"): the writer never writes a line after a
  partial one (it truncates back, or abandons the segment).
- Durability "sync" acknowledges a line once an fdatasync that began after the line was written succeeded; one
  fdatasync covers every line written before it (group commit, `spool.commit`). After a failed fdatasync the
  writer truncates the open segment back to its last durable line — taking back lines no caller was told were
  written — and abandons the segment. So the lines of an open segment after its last fdatasync are provisional
  for its readers (`query --include-spool`, `verify --spool`); a sealed segment never changes.
- A writer creates a segment as `<name>.open.jsonl.new`, takes the flock, then renames it to `.open.jsonl`:
  an `.open.jsonl` file without a lock therefore always belongs to a dead writer. An unlocked `.new` file is
  debris of a writer that died while creating it (it holds no events).
- Sealing is: fsync the file, rename `.open.jsonl` -> `.jsonl`, fsync the directory. A sealed segment is
  never modified. All events in one segment share one UTC month of `occurred_at`.
- An `.open` segment whose flock can be taken has no live writer; the agent recovers it (truncates a torn
  last line, seals it). Only the agent deletes segments, and only after S3 confirmed every object made from
  them. Damaged segments are moved to `quarantine/`, never deleted.

Two identities (issue #16): who may do what
- The application (the writers) and the agent run as different users that share one group, the spool's group,
  which holds no one else. The spool directory belongs to the agent's user, group the spool's group, mode 3770:
  the group may create files (the writers' segments); setgid gives every file in it the spool's group whoever
  creates it; the sticky bit lets a user delete or rename only the files it owns — so the application can create
  and seal (rename) its own segments but never delete or rename another writer's, the agent's lock, the agent's
  `.agent/`, `quarantine/` or anything in them, while the agent, owning the directory, renames (seals, quarantines)
  and deletes everyone's.
- Writers create their segments and drop files 0640 (set with fchmod: not whatever the application's umask
  left): the agent reads them through the group and never writes them. A dead writer's torn tail is therefore not
  truncated in place: the agent writes the whole lines to `<name>.recovering` (its own file), renames that over the
  open segment (an atomic replace: a crash leaves the old file or the copy, never neither), then seals it.
- The agent's own directories (`quarantine/`, its state directory, `.agent/` by default) are the agent's alone:
  0700 and owned by the agent's user; the agent refuses one owned by anyone else (planted by a writer before the
  agent created it) and narrows one a volume's fsGroup widened.
- Same-user deployments still work (every permission above then holds trivially), but give up what this buys:
  the application could rewrite sealed, unshipped segments and the agent's state (its ledger, its witness) to
  match. The agent says so at start (`agent.identity`). auditlock creates a missing spool directory 3770 as
  above; it never changes the mode of one that exists (a single-user deployment may keep its spool 0700).

Reading the spool (everything in it is hostile: anyone who can write the directory can plant anything)
- Only the application's and the agent's users may write the spool: the agent refuses a world-writable spool
  directory (`spool.files.refuse_world_writable`); a group-writable one is trusted (the spool's group, above).
- Every reader opens a spool file with `spool.files.open_spool_file`: no symlink followed, no FIFO waited on,
  regular files only, within a size bound (the agent's: `largest_segment_bytes`, twice the largest segment a
  writer with its config writes). A valid line is what `spool.lines` defines (the writer's exact JSON form).
- Names are the only paths: the agent reads, moves and deletes only entries of this directory whose names are
  segment names (and its own state files under `.agent/`); a name from a state file (the ledger) is checked to be
  a sealed segment's file name before it is used. Entries named like a segment that are not regular files, are
  over the bound or hold an invalid line are moved to `quarantine/` with a reason (0600); nothing in quarantine
  is ever replaced (a repeated name gets a `.N` suffix). Files with other names are never read or moved.

Drop counts (`spool.drops`)
- A writer whose caller drops events (`[spool] on_error = "drop"`) keeps `drops/<writer>.json`:
  {"writer": "<32 hex>", "dropped": {"<reason>": n}, "first_dropped_at": ..., "last_dropped_at": ...}, its totals
  since it started, rewritten whole (tmp, fsync, rename, fsync dir) at most once a second while drops continue and
  at every flusher tick or close while some are unwritten. Reasons: spool_full, disk_full, io_error, permission,
  other. The writer never deletes it; the agent only reads it (`auditlock_app_events_dropped_total{reason}`).
  Limit: the file may fail to write like the events did; the counts then wait in memory for the next attempt,
  and a process that dies first takes its unwritten counts with it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

SCHEMA = "auditlock/1"
WRITER_CLOSED = "auditlock.writer_closed"  # a writer's last event when it closes cleanly
ZERO_HASH = "0" * 64
OPEN_SUFFIX = ".open.jsonl"
NEW_SUFFIX = ".new"  # a segment being created: renamed to .open.jsonl once its writer holds the lock
SEALED_SUFFIX = ".jsonl"
QUARANTINE_DIR = "quarantine"
DROPS_DIR = "drops"
RECOVERING_SUFFIX = ".recovering"  # the agent's copy of a dead writer's open segment without its torn tail
SPOOL_DIR_MODE = 0o3770  # the spool and drops/: setgid (the spool's group), sticky (delete only your own), rwx group
SEGMENT_FILE_MODE = 0o640  # segments and drop files: written by their writer, read by the agent through the group
DIR_MODE = 0o700  # the agent's own directories (quarantine/, its state)
FILE_MODE = 0o600  # the agent's own files (reasons, ledger, digests, its lock)

# The schema's keys in their required order.
EVENT_KEYS = (
    "schema", "event_id", "event_type", "occurred_at", "actor_id", "actor_type", "actor_ip",
    "target_type", "target_id", "payload", "service", "host", "retention", "trace_id", "span_id",
    "writer", "seq", "prev",
)

_NAME = re.compile(r"^(?P<writer>[0-9a-f]{32})\.(?P<seq>[0-9a-f]{16})(?P<open>\.open)?\.jsonl\Z")


@dataclass(frozen=True, order=True)
class SegmentName:
    """The parts of a segment file name."""

    writer: str
    first_seq: int
    is_open: bool = False

    @property
    def filename(self) -> str:
        """The file name these parts spell."""
        suffix = OPEN_SUFFIX if self.is_open else SEALED_SUFFIX
        return f"{self.writer}.{self.first_seq:016x}{suffix}"

    def sealed(self) -> SegmentName:
        """The name the segment has once sealed."""
        return SegmentName(self.writer, self.first_seq, is_open=False)


def parse_segment_name(filename: str) -> SegmentName | None:
    """The parts of a segment file name, or None for any other file."""
    match = _NAME.match(filename)
    if match is None:
        return None
    return SegmentName(match["writer"], int(match["seq"], 16), is_open=match["open"] is not None)


def line_hash(line: bytes | memoryview) -> str:
    """The `prev` value the next line carries: hex SHA-256 of a line without its newline."""
    return hashlib.sha256(line).hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a create or a rename) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_spool_dir(path: Path) -> None:
    """Create the spool directory (mode 3770, see "Two identities") if it does not exist; an existing one keeps its
    owner and mode."""
    ensure_shared_dir(path, parents=True)


def ensure_shared_dir(path: Path, *, parents: bool = False) -> None:
    """Create a directory writers and the agent share, mode `SPOOL_DIR_MODE` whatever the umask (mkdir drops setgid
    and the umask may drop the group's bits); leave an existing one as it is."""
    try:
        path.mkdir(mode=DIR_MODE, parents=parents)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    os.chmod(path, SPOOL_DIR_MODE)
