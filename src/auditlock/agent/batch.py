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
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

from auditlock.archive import layout
from auditlock.config.model import RetentionClass
from auditlock.spool.files import UnsafeSpoolFileError
from auditlock.spool.format import SEALED_SUFFIX, SegmentName, parse_segment_name
from auditlock.spool.reader import DamagedSegmentError, GroupedSegment, LineGroup, group_lines

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
            stat = path.lstat()
        except FileNotFoundError:
            continue
        if not S_ISREG(stat.st_mode):
            continue  # not a segment a writer wrote: quarantined by the agent's spool guard, never read here
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
    content_type: str = layout.CONTENT_TYPE

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


class _ObjectBuilder:
    """One object's gzip stream and content hash. Writes go through `compressor`, a single worker thread, in
    submission order: zlib and hashlib release the GIL on large buffers, so compression overlaps parsing."""

    def __init__(self, retention: str, compressor: _Compressor) -> None:
        self.retention = retention
        self.buffer = io.BytesIO()
        self.content = hashlib.sha256()
        self.gzip = gzip.GzipFile(fileobj=self.buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        self.compressor = compressor
        self.events = 0
        self.first = ""
        self.last = ""

    def add(self, group: LineGroup) -> None:
        data = b"".join(group.lines)
        self.events += len(group.lines)
        group.lines.clear()  # the joined copy is all that is needed now: keep peak memory near one segment
        self.content.update(data)  # here, not in the worker: hashlib also releases the GIL, so both run at once
        self.compressor.submit(self.gzip.write, data)
        self.first = min(self.first, group.first) if self.first else group.first
        self.last = max(self.last, group.last)

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


class _Compressor:
    """One worker thread running writes in submission order, at most `depth` queued (bounds memory)."""

    def __init__(self, depth: int = 1) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditlock-gzip")
        self.pending: deque[Future[None]] = deque()
        self.depth = depth

    def submit(self, write: Callable[[bytes], object], data: bytes) -> None:
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.executor.submit(write, data))  # type: ignore[arg-type]

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        self.executor.shutdown(wait=True)


@dataclass
class WriterRange:
    """The part of one writer's chain a batch holds (what a digest records about the writer)."""

    first_seq: int
    last_seq: int
    last_hash: str
    closed: bool

    def as_json(self) -> dict[str, object]:
        """The digest's form."""
        return {"first_seq": self.first_seq, "last_seq": self.last_seq, "last_hash": self.last_hash,
                "closed": self.closed}


@dataclass
class BuiltBatch:
    """The objects of a batch and its writers' ranges, or the damaged segments (then nothing may ship)."""

    objects: list[ArchiveObject]
    damaged: dict[Path, str]
    writers: dict[str, WriterRange] = field(default_factory=dict)


def build_objects(segments: list[SealedSegment], prefix: str, classes: Mapping[str, RetentionClass], *,
                  max_segment_bytes: int | None = None) -> BuiltBatch:
    """Read the segments in order and split their lines into objects per (month, retention class); a segment
    that is not a regular file of at most `max_segment_bytes`, or holds an invalid line, is damaged."""
    builders: dict[tuple[str, str], _ObjectBuilder] = {}
    damaged: dict[Path, str] = {}
    writers: dict[str, WriterRange] = {}
    compressor = _Compressor()
    try:
        for segment in segments:
            problem = _add_segment(segment, builders, classes, compressor, writers, max_bytes=max_segment_bytes)
            if problem is not None:
                damaged[segment.path] = problem
        compressor.drain()
    finally:
        compressor.close()
    if damaged:
        return BuiltBatch([], damaged)
    return BuiltBatch([builders[k].finish(prefix) for k in sorted(builders)], {}, writers)


def _add_segment(segment: SealedSegment, builders: dict[tuple[str, str], _ObjectBuilder],
                 classes: Mapping[str, RetentionClass], compressor: _Compressor,
                 writers: dict[str, WriterRange], *, max_bytes: int | None) -> str | None:
    try:
        grouped = group_lines(segment.path, max_bytes)
    except (DamagedSegmentError, UnsafeSpoolFileError) as exc:
        return exc.reason
    unknown = sorted({retention for _month, retention in grouped.groups} - set(classes))
    if unknown:
        return (f"retention class {unknown[0]!r} is not defined in [retention.classes]; define it and move "
                "the segment back into the spool")
    for key, group in grouped.groups.items():
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = _ObjectBuilder(key[1], compressor)
        builder.add(group)
    _extend_writer(writers, segment.name, grouped)
    return None


def _extend_writer(writers: dict[str, WriterRange], name: SegmentName, grouped: GroupedSegment) -> None:
    if grouped.last_seq is None or grouped.last_hash is None:
        return
    known = writers.get(name.writer)
    if known is None:
        writers[name.writer] = WriterRange(name.first_seq, grouped.last_seq, grouped.last_hash, grouped.closed)
        return
    known.first_seq = min(known.first_seq, name.first_seq)
    if grouped.last_seq > known.last_seq:
        known.last_seq, known.last_hash, known.closed = grouped.last_seq, grouped.last_hash, grouped.closed
