"""Capture's position: which row changes are durable in the spool, so none is written twice or lost.

Design (the invariants that make capture exactly-once across crashes)

- A row change is identified by `(commit_lsn, change_index)`: the commit LSN of its transaction (transactions are
  decoded in commit order, so commit LSNs only grow) and its place among the events capture writes for that
  transaction (0, 1, 2, …; decoding a transaction again yields the same events in the same order). Every event
  carries both (`payload.commit_lsn`, `payload.change_index`).
- Capture writes events into its **staging directory** (`[capture] state_dir`, by default `<spool>/.capture`, on
  the spool's file system) with its own `SpoolWriter`. Only capture writes there, under its lock file; the agent
  never reads it (it reads only segment names at the top of the spool).
- The **position file** (`position.json`, written tmp → fsync → rename → fsync the directory) records the last
  durable change: `{"version": 1, "slot", "commit_lsn", "end_lsn", "change_index", "slot_lsn"}`, `change_index`
  null when the whole transaction is durable (then `end_lsn` is where the slot may advance to); `slot_lsn` the
  furthest capture itself has advanced (or is about to advance) the slot to — written *before* the advance.
- Order of a batch: events appended → writer fsync'd → position file written → sealed staging segments renamed
  into the spool → slot advanced to the last complete transaction's `end_lsn`. Hence:
  * an event leaves staging (and can be shipped and deleted by the agent) only once the position file covers it;
  * the slot never advances past a transaction whose events are not all durable, so PostgreSQL keeps every change
    capture has not yet made durable;
  * whatever staging still holds after a crash is read back at start: the position is the greater of the file's
    and the last event found in staging (a torn last line is cut off, as the agent does for a dead writer).
- At start, changes at or before the position are skipped, the rest written: each change exactly once. A crash
  between the position file and the slot advance only makes PostgreSQL send those transactions again; they are
  skipped.
- A slot whose confirmed position is beyond `slot_lsn` was moved by someone else, or dropped and created again (a
  lost slot, `max_slot_wal_keep_size`): the changes in between are gone. Capture records that gap as an
  `auditlock.capture_gap` event (which `auditlock verify` reports) and goes on from the slot's position.
- The position file is read as hostile: bounded, strict JSON, every field typed; a damaged file stops capture with
  a message naming the fix (never a guess, which could lose or repeat changes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditlock.capture.pgoutput import format_lsn, parse_lsn
from auditlock.errors import AuditlockError
from auditlock.spool.format import FILE_MODE, fsync_dir

POSITION_FILE = "position.json"
_MAX_BYTES = 4096


class CaptureError(AuditlockError):
    """`auditlock capture` cannot run: the database, the slot or capture's own state needs a fix (named)."""


@dataclass(frozen=True, order=True)
class Position:
    """The last durable change: `change_index` None when the whole transaction at `commit_lsn` is durable."""

    commit_lsn: int
    change_index: int | None = None
    end_lsn: int | None = None

    def covers(self, commit_lsn: int, change_index: int) -> bool:
        """Whether the change `(commit_lsn, change_index)` is already durable."""
        if commit_lsn != self.commit_lsn:
            return commit_lsn < self.commit_lsn
        return self.change_index is None or change_index <= self.change_index

    def later(self, other: Position | None) -> Position:
        """The one of the two that covers more."""
        if other is None:
            return self
        mine = (self.commit_lsn, float("inf") if self.change_index is None else self.change_index)
        theirs = (other.commit_lsn, float("inf") if other.change_index is None else other.change_index)
        return other if theirs > mine else self


START = Position(0, None, None)


@dataclass(frozen=True)
class Saved:
    """What the position file holds: the last durable change and how far capture moved the slot."""

    position: Position
    slot_lsn: int | None


class PositionFile:
    """`position.json` in the state directory (see the module's design comment)."""

    def __init__(self, state_dir: Path, slot: str) -> None:
        self.path = state_dir / POSITION_FILE
        self.slot = slot

    def read(self) -> Saved | None:
        """The recorded position, None when there is no file; `CaptureError` when it is damaged."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._damaged(f"cannot open it ({exc.strerror})") from exc
        with os.fdopen(fd, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
        if len(raw) > _MAX_BYTES:
            raise self._damaged(f"it is over {_MAX_BYTES} bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._damaged("it is not JSON") from None
        return self._position(data)

    def _position(self, data: Any) -> Saved:
        if not isinstance(data, dict) or data.get("version") != 1 or set(data) != {
                "version", "slot", "commit_lsn", "end_lsn", "change_index", "slot_lsn"}:
            raise self._damaged("its fields are not those of version 1")
        if data["slot"] != self.slot:
            raise CaptureError(f"{self.path} belongs to slot {data['slot']!r}, not [capture] slot = {self.slot!r}: "
                               "give each slot its own [capture] state_dir")
        index = data["change_index"]
        if index is not None and (type(index) is not int or index < 0):
            raise self._damaged("change_index is not a non-negative integer")
        try:
            commit = parse_lsn(data["commit_lsn"])
            end = None if data["end_lsn"] is None else parse_lsn(data["end_lsn"])
            slot_lsn = None if data["slot_lsn"] is None else parse_lsn(data["slot_lsn"])
        except (ValueError, TypeError):
            raise self._damaged("an LSN is not like 16/B374D848") from None
        return Saved(Position(commit, index, end), slot_lsn)

    def write(self, position: Position, slot_lsn: int | None) -> None:
        """Replace the file durably (tmp, fsync, rename, fsync the directory)."""
        body = orjson.dumps({
            "version": 1, "slot": self.slot, "commit_lsn": format_lsn(position.commit_lsn),
            "end_lsn": None if position.end_lsn is None else format_lsn(position.end_lsn),
            "change_index": position.change_index,
            "slot_lsn": None if slot_lsn is None else format_lsn(slot_lsn),
        })
        tmp = self.path.with_name(POSITION_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def _damaged(self, why: str) -> CaptureError:
        return CaptureError(
            f"capture position file {self.path} is damaged: {why}. Capture will not guess where it stopped (that "
            "could lose or repeat row changes): restore the file from a backup, or move it aside and run "
            "`auditlock capture` again — it then resumes from what staging and the slot hold, and `auditlock verify` "
            "shows any change recorded twice"
        )
