"""The agent's ledger: the batch in flight, so a restarted agent finishes exactly that batch.

Format: `<state dir>/ledger.json`, written atomically (tmp, fsync, rename, fsync dir):

    {"version": 1, "state": "uploading" | "digesting" | "confirmed",
     "segments": ["<sealed segment file name>", ...],          # in batch order
     "objects": [{"key": "...", "content_sha256": "..."}, ...],
     "digest": {"key": "...", "body": "<the digest's JSON text>"} | null}   # from "digesting" on

Invariants
- The intent ("uploading") is durable before the first PUT of its batch.
- "digesting" (with the digest's exact bytes) is durable before the digest's PUT, so a restart re-sends the
  same digest rather than a second one for the same batch.
- "confirmed" is durable before the first segment of its batch is deleted; only then may segments go.
- The ledger is removed once every segment of the batch is deleted. At most one batch is in flight.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditlock.spool.format import fsync_dir

LEDGER_FILE = "ledger.json"
UPLOADING = "uploading"
DIGESTING = "digesting"
CONFIRMED = "confirmed"


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
            data: dict[str, Any] = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        objects = tuple((o["key"], o["content_sha256"]) for o in data["objects"])
        digest = data.get("digest")
        body = (digest["key"], digest["body"].encode()) if digest else None
        return Intent(data["state"], tuple(data["segments"]), objects, body)

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
