"""The agent's ledger: the batch in flight, so a restarted agent finishes exactly that batch.

Format: `<state dir>/ledger.json`, written atomically (tmp, fsync, rename, fsync dir):

    {"version": 1, "state": "uploading" | "digesting" | "confirmed",
     "segments": ["<sealed segment file name>", ...],          # in batch order
     "objects": [{"key": "...", "content_sha256": "..."}, ...],
     "digest": {"key": "...", "body": "<the digest's JSON text>"} | null}   # from "digesting" on

Invariants
- The intent ("uploading") is durable before the first PUT of its batch. It is what makes a restart finish
  *that* batch: without it a restart plans afresh, and if other segments were sealed meanwhile the new plan
  builds other objects (keys come from the content), so an object that had already landed would stay in no
  digest and its events would be archived twice. An absent ledger means "nothing in flight" (only a damaged one
  sends the agent to the archive), so the archive cannot stand in for it
  (`tests/test_agent_invariants.py::TestUploadingIntent`).
- "digesting" (with the digest's exact bytes) is durable before the digest's PUT, so a restart re-sends the
  same digest rather than a second one for the same batch.
- "confirmed" is durable before the first segment of its batch is deleted; only then may segments go.
- The ledger is removed once every segment of the batch is deleted. At most one batch is in flight.
- Reading is hostile: a ledger that is not exactly this shape (truncated, garbage, another schema, a segment
  name that is not a sealed segment's, over `MAX_LEDGER_BYTES`) raises `LedgerDamagedError`; nothing it holds
  is used. The agent then recovers from the spool and the archive (see `agent.ledger_recovery`) and keeps the
  damaged file as `ledger.damaged-<UTC stamp>.json` beside it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditlock.errors import AuditlockError
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import fsync_dir, parse_segment_name

LEDGER_FILE = "ledger.json"
UPLOADING = "uploading"
DIGESTING = "digesting"
CONFIRMED = "confirmed"
STATES = (UPLOADING, DIGESTING, CONFIRMED)
DAMAGED_PREFIX = "ledger.damaged-"
MAX_LEDGER_BYTES = 64 * 1024 * 1024  # a batch's names and its digest body; far above any real ledger
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")


class LedgerDamagedError(AuditlockError):
    """The ledger file exists but is not a valid ledger; nothing in it may be trusted."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"agent ledger {path} is damaged ({reason}); it is set aside and the batch it named is "
                         "recovered from the spool and the archive")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Intent:
    """A batch in flight."""

    state: str
    segments: tuple[str, ...]
    objects: tuple[tuple[str, str], ...]  # (key, content_sha256)
    digest: tuple[str, bytes] | None = None  # (key, body)


class Ledger:
    """Reads and writes the one in-flight batch of an agent's state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LEDGER_FILE

    def read(self) -> Intent | None:
        """The batch in flight, or None."""
        try:
            raw = _read_bounded(self.path)
        except FileNotFoundError:
            return None
        try:
            return _parse_intent(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise LedgerDamagedError(self.path, f"not JSON: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LedgerDamagedError(self.path, f"not a version 1 ledger: {exc!r}") from exc

    def set_aside(self) -> Path:
        """Rename a damaged ledger to `ledger.damaged-<UTC stamp>.json` (kept for inspection); returns it."""
        return set_aside(self.path, DAMAGED_PREFIX)

    def write(self, intent: Intent) -> None:
        """Make an intent durable (atomically replaces the previous one)."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {
            "version": 1, "state": intent.state, "segments": list(intent.segments),
            "objects": [{"key": k, "content_sha256": c} for k, c in intent.objects],
            "digest": {"key": intent.digest[0], "body": intent.digest[1].decode()} if intent.digest else None,
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, orjson.dumps(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        fsync_dir(self.state_dir)

    def clear(self) -> None:
        """Forget the finished batch."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            fsync_dir(self.state_dir)


def set_aside(path: Path, prefix: str) -> Path:
    """Rename a damaged state file to `<prefix><UTC stamp>.json` in its directory (never over another one)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.parent / f"{prefix}{stamp}.json"
    suffix = 1
    while target.exists():
        target = path.parent / f"{prefix}{stamp}-{suffix}.json"
        suffix += 1
    os.rename(path, target)
    fsync_dir(path.parent)
    return target


def _read_bounded(path: Path) -> bytes:
    try:
        f = open_spool_file(path)  # no symlink followed, no FIFO waited on
    except UnsafeSpoolFileError as exc:
        raise LedgerDamagedError(path, exc.reason) from exc
    with f:
        raw = f.read(MAX_LEDGER_BYTES + 1)
    if len(raw) > MAX_LEDGER_BYTES:
        raise LedgerDamagedError(path, f"larger than {MAX_LEDGER_BYTES} bytes")
    return raw


def _parse_intent(data: Any) -> Intent:
    """The intent of a parsed ledger document; KeyError/TypeError/ValueError on anything else."""
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError("version is not 1")
    state = data["state"]
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    segments = tuple(_segment_name(name) for name in data["segments"])
    if not segments:
        raise ValueError("no segments")
    objects = tuple((_text(o["key"]), _sha256(o["content_sha256"])) for o in data["objects"])
    digest = data.get("digest")
    body = (_text(digest["key"]), _text(digest["body"]).encode()) if digest is not None else None
    if state == DIGESTING and body is None:
        raise ValueError("state digesting without a digest")
    return Intent(state, segments, objects, body)


def _segment_name(value: Any) -> str:
    # The ledger names files the agent deletes: only a sealed segment's plain file name is acceptable.
    name = parse_segment_name(_text(value))
    if name is None or name.is_open:
        raise ValueError(f"{value!r} is not a sealed segment name")
    return str(value)


def _sha256(value: Any) -> str:
    if not _SHA256_HEX.match(_text(value)):
        raise ValueError(f"{value!r} is not a hex SHA-256")
    return str(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, found {value!r}")
    return value
