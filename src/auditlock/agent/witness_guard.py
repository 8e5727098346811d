"""The witness at shipping: a segment that disagrees with what the agent witnessed is set aside, never shipped.

Before a batch is built, `WitnessGuard.screen` compares each of its segments with the witness's copy
(`agent.witness`) and looks for witnessed segments that vanished. Each finding —
- `rewritten before shipping`: a witnessed line changed, removed or inserted, a chain recomputed, lines added after
  the witnessed end of a sealed segment;
- `witnessed segment missing`: a witnessed segment gone from the spool without the agent shipping or setting it
  aside —
is handled the same way: the segment (if still there) moves to `quarantine/` with the finding as its reason, the
witness's copy moves next to it as `<quarantined name>.witnessed` (what the agent saw, the original lines), and
`<quarantined name>.witness.json` records the finding (`EVIDENCE_KEYS`); it is counted
(`auditlock_segments_rewritten_total{finding}`), logged at ERROR, recorded in the trail (`auditlock.spool_rewritten`,
shipped like any event) and kept in `findings.jsonl` until a delivered digest carries it (`witness.findings`).
Digests also carry the witnessed heads of the writers they cover (`witness.heads`), see `archive.digest`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from auditlock.agent.batch import SealedSegment
from auditlock.agent.metrics import AgentMetrics
from auditlock.agent.recovery import quarantine
from auditlock.agent.trail import SPOOL_REWRITTEN, AgentTrail
from auditlock.agent.witness import Copy, Witness
from auditlock.spool.chain import uuid7_hex
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import DIR_MODE, FILE_MODE, QUARANTINE_DIR, fsync_dir, parse_segment_name
from auditlock.spool.witnessed import MISSING, REWRITTEN

log = logging.getLogger("auditlock.agent")

FINDINGS_FILE = "findings.jsonl"
MAX_FINDINGS_BYTES = 16 * 1024 * 1024
EVIDENCE_KEYS = ("id", "finding", "segment", "detail", "writer", "witnessed_seq", "witnessed_hash", "witnessed_bytes",
                 "detected_at")


class WitnessGuard:
    """Screens batches against the witness and reports what disagrees."""

    def __init__(self, witness: Witness, metrics: AgentMetrics, trail: Callable[[], AgentTrail | None]) -> None:
        self.witness = witness
        self.spool = witness.spool
        self.metrics = metrics
        self.trail = trail
        self.pending = PendingFindings(witness.dir / FINDINGS_FILE)

    def screen(self, batch: list[SealedSegment]) -> list[SealedSegment]:
        """The batch without the segments that disagree with the witness (those are set aside and reported);
        witnessed segments that vanished are reported first."""
        for copy in self.witness.missing():
            self._report(MISSING, copy, "the witness saw it in the spool; it is gone, and the agent neither "
                                        "shipped nor set it aside", copy.name.filename)
        kept = []
        for segment in batch:
            try:
                problem = self.witness.compare(segment.path, segment.name)
            except FileNotFoundError:
                continue  # gone since planned: the next screen reports it if it was witnessed
            except UnsafeSpoolFileError:
                kept.append(segment)  # batch building quarantines it with that reason
                continue
            if problem is None:
                kept.append(segment)
            else:
                self._set_aside(segment, problem)
        return kept

    def _set_aside(self, segment: SealedSegment, problem: str) -> None:
        copy = self.witness.copy_of(segment.name)
        assert copy is not None  # compare found a difference, so there is a copy
        reason = (f"{REWRITTEN}: {problem}. The witness's copy of what the agent saw is {segment.path.name}.witnessed "
                  "beside it; do not ship this segment")
        self._report(REWRITTEN, copy, problem, lambda: quarantine(self.spool, segment.path, reason).name)

    def release(self, names: Iterable[str]) -> None:
        """The agent deleted these segments (shipped) or set them aside itself: their copies go."""
        self.witness.release(names)

    def quarantined(self, names: Iterable[str]) -> None:
        """Segments recovery or the spool guard quarantined: a witnessed one is compared with its copy there (a
        difference is a finding), and its copy is kept beside it as evidence either way."""
        for filename in names:
            copy, target = self._witnessed_in_quarantine(filename)
            if copy is None or target is None:
                continue
            try:
                problem = self.witness.compare(target, copy.name)
            except (FileNotFoundError, UnsafeSpoolFileError):
                problem = None
            if problem is not None:
                self._report(REWRITTEN, copy, problem, target.name)
            else:
                self._keep_copy(copy, target.name)

    def _witnessed_in_quarantine(self, filename: str) -> tuple[Copy | None, Path | None]:
        name = parse_segment_name(filename)
        copy = self.witness.copy_of(name) if name is not None else None
        if copy is None:
            return None, None
        return copy, _latest_quarantined(self.spool / QUARANTINE_DIR, filename)

    def _keep_copy(self, copy: Copy, base: str) -> Path:
        """Move the copy into quarantine/ as `<base>.witnessed` (`base`: the quarantined segment's name, or the
        vanished segment's own)."""
        directory = self.spool / QUARANTINE_DIR
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        return self.witness.move_copy(copy, _free(directory, f"{base}.witnessed"))

    def _report(self, finding: str, copy: Copy, detail: str, set_aside: str | Callable[[], str]) -> None:
        """Record the finding in the pending findings (durable first: a crash after it repeats the rest as a
        `witnessed segment missing`, never loses it); set the segment aside (`set_aside` does it and returns its
        name in quarantine/, or is that name: already there, or gone); keep the evidence beside it (the copy and
        the finding); count, log, record in the trail."""
        record = {"id": uuid7_hex(time.time_ns()), "finding": finding, "segment": copy.name.filename,
                  "detail": detail, "writer": copy.name.writer, "witnessed_seq": copy.head_seq,
                  "witnessed_hash": copy.head_hash, "witnessed_bytes": copy.size,
                  "detected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.pending.add(record)
        base = set_aside if isinstance(set_aside, str) else set_aside()
        evidence = self._keep_copy(copy, base)
        _write_private(_free(evidence.parent, f"{base}.witness.json"), orjson.dumps(record, option=orjson.OPT_INDENT_2))
        self.metrics.segments_rewritten.labels(finding=finding).inc()
        log.error("auditlock agent: %s: %s: %s (not shipped; the agent's copy of what it saw is %s)",
                  finding.upper(), copy.name.filename, detail, evidence)
        trail = self.trail()
        if trail is not None:
            trail.record(SPOOL_REWRITTEN, **{k: record[k] for k in EVIDENCE_KEYS if k not in ("id", "detected_at")})

    # --- digests -------------------------------------------------------------------------------------

    def digest_record(self, segments: Iterable[str]) -> dict[str, Any] | None:
        """What the next digest carries: the batch's witnessed heads per writer, and the findings not yet in a
        delivered digest (None when there is neither)."""
        heads = self.witness.heads(segments)
        findings = self.pending.read()
        if not heads and not findings:
            return None
        return {"heads": {w: {"seq": seq, "hash": h} for w, (seq, h) in sorted(heads.items())},
                "findings": findings}

    def delivered(self, digest_body: bytes) -> None:
        """A digest was delivered: the findings it carries are on record in the archive."""
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            carried = {f.get("id") for f in orjson.loads(digest_body).get("witness", {}).get("findings", [])}
            self.pending.remove(carried)


class PendingFindings:
    """`findings.jsonl`: one finding per line, appended and fsync'd; rewritten without the delivered ones."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """Every pending finding (lines that are not a finding object are skipped, logged)."""
        try:
            with open_spool_file(self.path, MAX_FINDINGS_BYTES) as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        except UnsafeSpoolFileError as exc:
            log.error("auditlock agent: pending witness findings %s not read: %s", self.path, exc.reason)
            return []
        findings = []
        for line in raw.splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and set(record) == set(EVIDENCE_KEYS):
                    findings.append(record)
        return findings

    def add(self, record: dict[str, Any]) -> None:
        """Append one finding durably."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, orjson.dumps(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)

    def remove(self, ids: set[Any]) -> None:
        """Drop the findings with these ids (tmp, fsync, rename, fsync dir)."""
        findings = self.read()
        left = [f for f in findings if f["id"] not in ids]
        if len(left) == len(findings):
            return
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _write_private(tmp, b"".join(orjson.dumps(f) + b"\n" for f in left))
        os.rename(tmp, self.path)
        fsync_dir(self.path.parent)


def _latest_quarantined(directory: Path, filename: str) -> Path | None:
    """Where `quarantine()` last put `filename` (it adds `.N` to a name already there)."""
    best: tuple[int, Path] | None = None
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            suffix = entry.name.removeprefix(filename)
            if entry.name.startswith(filename) and (suffix == "" or (suffix[:1] == "." and suffix[1:].isdigit())):
                n = int(suffix[1:]) if suffix else 0
                if best is None or n > best[0]:
                    best = (n, Path(entry.path))
    return best[1] if best is not None else None


def _free(directory: Path, name: str) -> Path:
    target, n = directory / name, 1
    while os.path.lexists(target):
        target, n = directory / f"{name}.{n}", n + 1
    return target


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(fd)

