"""Batches: which sealed segments ship together, and the archive objects built from them.

A batch is a list of whole sealed segments (oldest first) up to `[sink] batch_max_bytes`. It becomes one
object per (UTC month, retention class) present in it. Building is deterministic: the same segments in the
same order give byte-identical objects and therefore the same keys (see `auditlock.archive.layout`), which
is what lets a restarted agent re-create exactly the batch its ledger names.

The gzip is ISA-L's deflate (`isal.igzip`, level `GZIP_LEVEL`): standard gzip that every reader opens, about ten
times as fast as stdlib zlib level 6 at a similar size on audit lines. Exactly-once does not rest on the compressed
bytes: an object's key and the HEAD check name the SHA-256 of its *uncompressed* lines, so a batch rebuilt after a
crash by another ISA-L version (other gzip bytes) still finds the object that landed (see `agent.uploader`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

from isal.igzip import IGzipFile

from auditlock.agent.staging import STAGED_SUFFIX, StagedBody, clear_staging
from auditlock.archive import layout
from auditlock.config.model import RetentionClass
from auditlock.spool.files import UnsafeSpoolFileError
from auditlock.spool.format import SEALED_SUFFIX, SegmentName, parse_segment_name
from auditlock.spool.reader import DamagedSegmentError, SegmentEnd, stream_lines

GZIP_LEVEL = 2  # ISA-L's default (0-3); on JSON lines smaller than zlib level 6, on free text ~15% larger


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
    """One gzip JSONL object ready to PUT, with everything its headers and the ledger need. Its bytes are in
    `body`, or in the staging file `staged` (then `body` is empty): the uploader streams the file."""

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
    staged: Path | None = None
    size: int = -1  # the body's length in bytes (from `body` unless staged)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.body)

    def read_body(self) -> bytes:
        """The whole body in memory (tests and tools; the uploader streams a staged body)."""
        return self.staged.read_bytes() if self.staged is not None else self.body

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
    """One object's gzip stream (into a `StagedBody`) and content hash, fed whole lines in batch order."""

    def __init__(self, retention: str, body: StagedBody) -> None:
        self.retention = retention
        self.body = body
        self.content = hashlib.sha256()
        self.gzip = IGzipFile(fileobj=body, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)  # type: ignore[no-untyped-call]  # isal ships no annotations here
        self.events = 0
        self.first = ""
        self.last = ""

    def write(self, lines: bytes | memoryview, count: int, first: str, last: str) -> None:
        self.content.update(lines)
        self.gzip.write(lines)  # type: ignore[no-untyped-call]
        self.events += count
        self.first = min(self.first, first) if self.first else first
        self.last = max(self.last, last)

    def finish(self, prefix: str) -> ArchiveObject:
        self.gzip.close()
        self.body.close()
        content_sha256 = self.content.hexdigest()
        memory = self.body.in_memory()
        return ArchiveObject(
            key=layout.object_key(prefix, self.first, self.retention, content_sha256),
            body=memory if memory is not None else b"", content_sha256=content_sha256,
            sha256=self.body.sha256.hexdigest(), md5_b64=base64.b64encode(self.body.md5.digest()).decode("ascii"),
            events=self.events, first_occurred_at=self.first, last_occurred_at=self.last, retention=self.retention,
            staged=self.body.path, size=self.body.size,
        )


class _BatchSink:
    """Routes a batch's checked lines to one object builder per (month, class); notes classes it does not know.
    Once a segment is damaged nothing more is compressed (the batch will not ship)."""

    def __init__(self, classes: Mapping[str, RetentionClass], staging: Path | None) -> None:
        self.classes = classes
        self.staging = staging
        self.builders: dict[tuple[str, str], _ObjectBuilder] = {}
        self.unknown: set[str] = set()
        self.damaged = False

    def write(self, key: tuple[str, str], lines: bytes | memoryview, count: int, first: str, last: str) -> None:
        if self.damaged:
            return
        builder = self.builders.get(key)
        if builder is None:
            if key[1] not in self.classes:
                self.unknown.add(key[1])
                return
            path = None if self.staging is None else self.staging / f"{len(self.builders):06d}{STAGED_SUFFIX}"
            builder = self.builders[key] = _ObjectBuilder(key[1], StagedBody(path))
        builder.write(lines, count, first, last)


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
                  max_segment_bytes: int | None = None, staging: Path | None = None) -> BuiltBatch:
    """Read the segments in order and split their lines into objects per (month, retention class); a segment
    that is not a regular file of at most `max_segment_bytes`, or holds an invalid line, is damaged.

    Streamed: each segment is read in bounded chunks and each object gzipped into a staging file in `staging`
    (emptied first; None: in memory), so memory does not grow with segment or batch size."""
    if staging is not None:
        clear_staging(staging)
    sink = _BatchSink(classes, staging)
    damaged: dict[Path, str] = {}
    writers: dict[str, WriterRange] = {}
    try:
        for segment in segments:
            problem = _add_segment(segment, sink, writers, max_bytes=max_segment_bytes)
            if problem is not None:
                damaged[segment.path] = problem
                sink.damaged = True
    except BaseException:
        for builder in sink.builders.values():
            builder.body.close()
        raise
    objects = [sink.builders[k].finish(prefix) for k in sorted(sink.builders)]
    if damaged:
        if staging is not None:
            clear_staging(staging)
        return BuiltBatch([], damaged)
    return BuiltBatch(objects, {}, writers)


def _add_segment(segment: SealedSegment, sink: _BatchSink, writers: dict[str, WriterRange], *,
                 max_bytes: int | None) -> str | None:
    sink.unknown.clear()
    try:
        end = stream_lines(segment.path, sink, max_bytes)
    except (DamagedSegmentError, UnsafeSpoolFileError) as exc:
        return exc.reason
    if sink.unknown:
        return (f"retention class {sorted(sink.unknown)[0]!r} is not defined in [retention.classes]; define it and "
                "move the segment back into the spool")
    _extend_writer(writers, segment.name, end)
    return None


def _extend_writer(writers: dict[str, WriterRange], name: SegmentName, end: SegmentEnd) -> None:
    if end.last_seq is None or end.last_hash is None:
        return
    known = writers.get(name.writer)
    if known is None:
        writers[name.writer] = WriterRange(name.first_seq, end.last_seq, end.last_hash, end.closed)
        return
    known.first_seq = min(known.first_seq, name.first_seq)
    if end.last_seq > known.last_seq:
        known.last_seq, known.last_hash, known.closed = end.last_seq, end.last_hash, end.closed
