"""Batches: which sealed segments ship together, and the archive objects built from them.

A batch is a list of whole sealed segments (oldest first) up to `[sink] batch_max_bytes`. It becomes one
object per (UTC month, retention class) present in it. Building is deterministic: the same segments in the
same order give byte-identical objects and therefore the same keys (see `auditlock.archive.layout`), which
is what lets a restarted agent re-create exactly the batch its ledger names.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auditlock.archive import layout
from auditlock.config.model import RetentionClass
from auditlock.spool.format import SEALED_SUFFIX, SegmentName, parse_segment_name
from auditlock.spool.reader import DamagedSegmentError, read_events

GZIP_LEVEL = 6


@dataclass(frozen=True)
class SealedSegment:
    """A sealed segment waiting in the spool."""

    path: Path
    name: SegmentName
    size: int
    mtime: float


def list_sealed(spool: Path) -> list[SealedSegment]:
    """Sealed segments of a spool, oldest seal first (ties by name)."""
    found = []
    for path in spool.glob(f"*{SEALED_SUFFIX}"):
        name = parse_segment_name(path.name)
        if name is None or name.is_open:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        found.append(SealedSegment(path, name, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda s: (s.mtime, s.path.name))


def plan_batch(segments: list[SealedSegment], max_bytes: int) -> list[SealedSegment]:
    """The oldest segments whose total size stays within `max_bytes` (always at least one)."""
    batch: list[SealedSegment] = []
    total = 0
    for segment in segments:
        if batch and total + segment.size > max_bytes:
            break
        batch.append(segment)
        total += segment.size
    return batch


@dataclass
class ArchiveObject:
    """One gzip JSONL object ready to PUT, with everything its headers and the ledger need."""

    key: str
    body: bytes
    content_sha256: str
    sha256: str
    md5_b64: str
    events: int
    first_occurred_at: str
    last_occurred_at: str
    retention: str

    def metadata(self) -> dict[str, str]:
        """The object's x-amz-meta-* values."""
        return {
            layout.META_SHA256: self.sha256,
            layout.META_CONTENT_SHA256: self.content_sha256,
            layout.META_EVENTS: str(self.events),
            layout.META_FIRST: self.first_occurred_at,
            layout.META_LAST: self.last_occurred_at,
            layout.META_SCHEMA: "auditlock/1",
        }


@dataclass
class _ObjectBuilder:
    retention: str
    buffer: io.BytesIO = field(default_factory=io.BytesIO)
    content: hashlib._Hash = field(default_factory=hashlib.sha256)
    events: int = 0
    first: str = ""
    last: str = ""

    def __post_init__(self) -> None:
        self.gzip = gzip.GzipFile(fileobj=self.buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)

    def add(self, line: bytes, occurred_at: str) -> None:
        self.gzip.write(line)
        self.content.update(line)
        self.events += 1
        self.first = min(self.first, occurred_at) if self.first else occurred_at
        self.last = max(self.last, occurred_at)

    def finish(self, prefix: str) -> ArchiveObject:
        self.gzip.close()
        body = self.buffer.getvalue()
        content_sha256 = self.content.hexdigest()
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        return ArchiveObject(
            key=layout.object_key(prefix, self.first, self.retention, content_sha256),
            body=body, content_sha256=content_sha256, sha256=hashlib.sha256(body).hexdigest(),
            md5_b64=base64.b64encode(md5).decode("ascii"), events=self.events,
            first_occurred_at=self.first, last_occurred_at=self.last, retention=self.retention,
        )


@dataclass
class BuiltBatch:
    """The objects of a batch, or the segments that turned out damaged (then nothing may ship)."""

    objects: list[ArchiveObject]
    damaged: dict[Path, str]


def build_objects(segments: list[SealedSegment], prefix: str, classes: Mapping[str, RetentionClass]) -> BuiltBatch:
    """Read the segments in order and split their lines into objects per (month, retention class)."""
    builders: dict[tuple[str, str], _ObjectBuilder] = {}
    damaged: dict[Path, str] = {}
    for segment in segments:
        problem = _add_segment(segment.path, builders, classes)
        if problem is not None:
            damaged[segment.path] = problem
    if damaged:
        return BuiltBatch([], damaged)
    return BuiltBatch([builders[k].finish(prefix) for k in sorted(builders)], {})


def _add_segment(path: Path, builders: dict[tuple[str, str], _ObjectBuilder],
                 classes: Mapping[str, RetentionClass]) -> str | None:
    try:
        for line, event in read_events(path):
            retention = event.get("retention")
            if not isinstance(retention, str) or retention not in classes:
                return (f"line seq {event['seq']}: retention class {retention!r} is not defined in "
                        "[retention.classes]; define it and move the segment back into the spool")
            key = (event["occurred_at"][:7], retention)
            builder = builders.get(key)
            if builder is None:
                builder = builders[key] = _ObjectBuilder(retention)
            builder.add(line, event["occurred_at"])
    except DamagedSegmentError as exc:
        return exc.reason
    return None
