"""Shapes an attacker with write access to the spool can leave there, for tests of the agent and the readers."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson

from auditlock.spool.format import QUARANTINE_DIR, SEALED_SUFFIX, parse_segment_name
from tests.support.archive_env import ArchiveEnv

PLANTED_WRITER = "ab" * 16  # a writer id no real writer has


def planted_name(seq: int = 0, *, is_open: bool = False) -> str:
    """A segment file name of the planted writer."""
    return f"{PLANTED_WRITER}.{seq:016x}{'.open' if is_open else ''}.jsonl"


def sealed_segments(spool: Path) -> list[Path]:
    """The sealed segments in the spool, by name."""
    return sorted(p for p in spool.glob(f"*{SEALED_SUFFIX}")
                  if (name := parse_segment_name(p.name)) is not None and not name.is_open)


def rechain(path: Path, index: int, edit: Callable[[bytes], bytes]) -> None:
    """Replace line `index` of a sealed segment by `edit(line)` and re-chain every later line's `prev` to it, as an
    attacker who knows the format would (the file keeps its name and mode)."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = edit(lines[index])
    for n in range(index + 1, len(lines)):
        event = orjson.loads(lines[n])
        event["prev"] = hashlib.sha256(lines[n - 1][:-1]).hexdigest()
        lines[n] = orjson.dumps(event) + b"\n"
    path.write_bytes(b"".join(lines))


def set_field(key: str, value: object) -> Callable[[bytes], bytes]:
    """An edit that sets one field of the line's event (the line stays in the writer's JSON form)."""
    def edit(line: bytes) -> bytes:
        event = orjson.loads(line)
        event[key] = value
        return orjson.dumps(event) + b"\n"
    return edit


def quarantine_reason(spool: Path, name: str) -> str:
    """The reason file's text of a quarantined name (fails if it is not in quarantine)."""
    assert os.path.lexists(spool / QUARANTINE_DIR / name), f"{name} is not in quarantine"
    return (spool / QUARANTINE_DIR / f"{name}.reason.txt").read_text()


def run_agent_once_limited(env: ArchiveEnv, memory_bytes: int,
                           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`auditlock agent --once` in a subprocess whose address space is capped at `memory_bytes`: an agent that
    reads a huge or endless file dies of it (MemoryError) instead of taking the machine's memory."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return subprocess.run(env.agent_command("--once"), env=env.env(), capture_output=True, text=True,
                          timeout=timeout, check=False, preexec_fn=cap)
