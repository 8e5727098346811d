"""The agent's digest chain: one digest per delivered batch, chained, optionally signed (see archive.digest).

State: `<state dir>/digest-chain.json` = {"agent_id": "<32 hex>", "last_key": ..., "last_sha256": ...,
"state_recovery": {...} (only until the next digest records it)}, written atomically. The agent id is created
once and kept, so the chain continues across restarts. A state file that is not this shape is set aside as
`digest-chain.damaged-<stamp>.json` and a new chain (a new agent id) starts, loudly: the old chain simply ends.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from auditlock.agent.batch import ArchiveObject, WriterRange
from auditlock.agent.ledger import set_aside
from auditlock.agent.uploader import utc_now
from auditlock.archive import digest as digest_format
from auditlock.archive import layout
from auditlock.config.model import RetentionClass
from auditlock.spool.chain import uuid7_hex
from auditlock.spool.drops import read_drop_files
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import FILE_MODE, fsync_dir

log = logging.getLogger("auditlock.agent")

CHAIN_FILE = "digest-chain.json"
MAX_STATE_BYTES = 64 * 1024  # an agent id, the head key and a recovery note: far above any real state
DIGEST_CONTENT_TYPE = "application/json"


class DigestChain:
    """Builds the next digest of this agent's chain and remembers the chain's head."""

    def __init__(self, state_dir: Path, classes: Mapping[str, RetentionClass], prefix: str,
                 signing_key_pem: bytes | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / CHAIN_FILE
        self.classes = classes
        self.prefix = prefix
        self.signing_key_pem = signing_key_pem
        self.host = socket.gethostname()
        self.clock: Callable[[], dt.datetime] = utc_now  # dates each digest (`created_at`, hence its key)
        state = self._load()
        self.agent_id: str = state["agent_id"]
        self.last: tuple[str, str] | None = (state["last_key"], state["last_sha256"]) if state.get("last_key") else None
        self.state_recovery: dict[str, str] | None = state.get("state_recovery")
        self._drops_spool: Path | None = None
        self._recorded_drops: dict[str, dict[str, Any]] = {}

    def _load(self) -> dict[str, Any]:
        try:
            return _parse_state(orjson.loads(_read_state(self.path)))
        except FileNotFoundError:
            pass
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnsafeSpoolFileError) as exc:
            aside = set_aside(self.path, "digest-chain.damaged-")
            log.error("auditlock agent: DIGEST CHAIN STATE DAMAGED: %s (%r); kept as %s; starting a new chain under "
                      "a new agent id (the old chain ends at its last digest)", self.path, exc, aside)
            state: dict[str, Any] = {"agent_id": uuid7_hex(time.time_ns()), "state_recovery": {
                "damaged_file": aside.name, "recovered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            self._save(state)
            return state
        state = {"agent_id": uuid7_hex(time.time_ns())}
        self._save(state)
        return state

    def record_app_drops(self, spool: Path) -> None:
        """Put the applications' drop counts of `spool` (see `spool.drops`) into the digests as evidence: each
        digest carries the drop files that changed since the previous digest of this process (all after a start)."""
        self._drops_spool = spool

    def _new_app_drops(self) -> dict[str, Any]:
        if self._drops_spool is None:
            return {}
        current = read_drop_files(self._drops_spool)
        changed = {w: d for w, d in current.items() if self._recorded_drops.get(w) != d}
        self._recorded_drops = current  # recorded once this digest is delivered; a re-sent digest is the same bytes
        return {w: {k: v for k, v in d.items() if k != "writer"} for w, d in sorted(changed.items())}

    def note_state_recovery(self, record: dict[str, str]) -> None:
        """Record a recovery from a damaged state file; the next digest carries it (`state_recovery`)."""
        self.state_recovery = record
        self._save(self._state())

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"agent_id": self.agent_id}
        if self.last is not None:
            state.update(last_key=self.last[0], last_sha256=self.last[1])
        if self.state_recovery is not None:
            state["state_recovery"] = self.state_recovery
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # whatever was left there (even a symlink) is replaced, never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, orjson.dumps(state))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        fsync_dir(self.state_dir)

    def next_digest(self, objects: list[ArchiveObject], writers: Mapping[str, WriterRange],
                    witness: dict[str, Any] | None = None) -> ArchiveObject:
        """The digest object covering `objects`, chained to the last one (not yet delivered); `witness` is what the
        agent's witness records in it (`agent.witness_guard.WitnessGuard.digest_record`)."""
        created_at = self.clock().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        digest = {
            "schema": digest_format.DIGEST_SCHEMA,
            "agent": {"id": self.agent_id, "host": self.host},
            "created_at": created_at,
            "previous": {"key": self.last[0], "sha256": self.last[1]} if self.last else None,
            "objects": [_object_entry(o) for o in objects],
            "writers": {w: r.as_json() for w, r in sorted(writers.items())},
        }
        if self.state_recovery is not None:
            digest["state_recovery"] = self.state_recovery
        if witness is not None:
            digest["witness"] = witness
        drops = self._new_app_drops()
        if drops:
            digest["app_drops"] = drops
        if self.signing_key_pem is not None:
            digest = digest_format.sign(digest, self.signing_key_pem)
        return self.as_object(digest_format.digest_key(self.prefix, created_at, self.agent_id),
                              digest_format.encode(digest))

    def as_object(self, key: str, body: bytes) -> ArchiveObject:
        """The uploadable object of a digest body: locked as long as the longest-locked object it covers, and
        tagged with that object's class (also used to re-send a digest from the ledger)."""
        entries = orjson.loads(body)["objects"]
        longest = max(entries, key=lambda o: layout.retain_until(o["last_occurred_at"],
                                                                 self.classes[o["retention"]].days))
        sha256 = hashlib.sha256(body).hexdigest()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        return ArchiveObject(key=key, body=body, content_sha256=sha256, sha256=sha256, md5_b64=md5,
                             events=sum(o["events"] for o in entries),
                             first_occurred_at=longest["first_occurred_at"],
                             last_occurred_at=longest["last_occurred_at"], retention=longest["retention"],
                             content_type=DIGEST_CONTENT_TYPE)

    def advance(self, key: str, sha256: str) -> None:
        """Record a delivered digest as the chain's head (a recorded ledger recovery is then on record)."""
        self.last = (key, sha256)
        self.state_recovery = None
        self._save(self._state())


def _object_entry(obj: ArchiveObject) -> dict[str, Any]:
    return {"key": obj.key, "sha256": obj.sha256, "content_sha256": obj.content_sha256, "bytes": obj.size,
            "events": obj.events, "first_occurred_at": obj.first_occurred_at,
            "last_occurred_at": obj.last_occurred_at, "retention": obj.retention}


def _read_state(path: Path) -> bytes:
    """The state file's bytes: a regular file (no symlink followed, no FIFO waited on) of at most MAX_STATE_BYTES."""
    with open_spool_file(path, MAX_STATE_BYTES) as f:
        return f.read()


def _parse_state(state: Any) -> dict[str, Any]:
    """The chain state, checked; ValueError/KeyError/TypeError when it is not the documented shape."""
    if not isinstance(state, dict) or not re.fullmatch(r"[0-9a-f]{32}", state["agent_id"]):
        raise ValueError("no 32-hex agent_id")
    if state.get("last_key") is not None and not (isinstance(state["last_key"], str)
                                                  and re.fullmatch(r"[0-9a-f]{64}", state["last_sha256"])):
        raise ValueError("last_key/last_sha256 malformed")
    recovery = state.get("state_recovery")
    if recovery is not None and not (isinstance(recovery, dict) and all(isinstance(v, str) for v in recovery.values())):
        raise ValueError("state_recovery malformed")
    return state
