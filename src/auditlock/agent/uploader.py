"""Putting archive objects into S3 with Object Lock — write-once, idempotent, never overwriting.

For each object: HEAD the key. Present with our content hash → already delivered (a retry after a crash or a
lost answer); the object then takes the landed bytes' SHA-256 and size from that HEAD, so the digest names what is
stored even when the rebuilt gzip bytes differ (another compressor version between the crash and the restart: the
key and the check rest on the uncompressed content, never on the gzip bytes). Present with another hash →
`ObjectConflictError` (an alarm; nothing is overwritten). Absent → PUT with `If-None-Match: *` (servers that
honour it answer 412 if someone raced us; RADOS Gateway ignores it in versioned buckets, hence the HEAD first),
Content-MD5, the lock mode and retain-until of the class, tags, metadata and SSE-KMS when configured. A 200 from
the PUT is the confirmation.

Retain-until is `layout.lock_until` at the PUT's time: never before now + `layout.LATE_LOCK_FLOOR`. A floored
(late) object is reported to `on_floored` once its PUT returned 200 — not when HEAD found it already delivered,
since its lock was decided by the PUT that stored it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import ClientError

from auditlock.agent import failpoints
from auditlock.agent.batch import ArchiveObject
from auditlock.archive import layout
from auditlock.archive.client import is_not_found
from auditlock.config.model import RetentionClass, SinkConfig
from auditlock.errors import UploadError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DELIVERED = "uploaded"
ALREADY_PRESENT = "already-present"

OnFloored = Callable[["ArchiveObject", dt.datetime], None]


def utc_now() -> dt.datetime:
    """The current time, aware UTC (the default clock of the retain-until floor)."""
    return dt.datetime.now(dt.UTC)


class ObjectConflictError(UploadError):
    """A different object already sits at a key derived from our content: an alarm, never overwritten."""


class Uploader:
    """Delivers archive objects to the sink bucket exactly once."""

    def __init__(self, sink: SinkConfig, classes: Mapping[str, RetentionClass], client: S3Client, *,
                 clock: Callable[[], dt.datetime] = utc_now, on_floored: OnFloored | None = None) -> None:
        """`clock` dates the retain-until floor; `on_floored` hears of every object locked to the floor."""
        if not sink.bucket:
            raise UploadError("[sink] bucket is not set; set it in auditlock.toml or AUDITLOCK_SINK_BUCKET")
        self.bucket = sink.bucket
        self.sink = sink
        self.classes = classes
        self.client = client
        self.clock = clock
        self.on_floored = on_floored

    def deliver(self, obj: ArchiveObject) -> str:
        """Make sure `obj` is in the bucket; returns DELIVERED or ALREADY_PRESENT."""
        existing = self._head(obj.key)
        if existing is not None:
            return self._same_or_conflict(obj, existing)
        failpoints.hit("before_put")
        retention = self.classes[obj.retention]
        until, floored = layout.lock_until(obj.last_occurred_at, retention.days, self.clock())
        try:
            self._put(obj, retention, until)
        except ClientError as exc:
            if _status(exc) != 412:
                raise
            return self._same_or_conflict(obj, self._head(obj.key) or {})
        failpoints.hit("after_put")
        if floored and self.on_floored is not None:
            self.on_floored(obj, until)
        return DELIVERED

    def _head(self, key: str) -> Mapping[str, Any] | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return response

    def _same_or_conflict(self, obj: ArchiveObject, head: Mapping[str, Any]) -> str:
        metadata: Mapping[str, str] = head.get("Metadata", {})
        found = metadata.get(layout.META_CONTENT_SHA256)
        if found == obj.content_sha256:
            _take_landed_bytes(obj, metadata.get(layout.META_SHA256), head.get("ContentLength"))
            return ALREADY_PRESENT
        raise ObjectConflictError(
            f"s3://{self.bucket}/{obj.key} already exists with content sha256 {found!r}, not "
            f"{obj.content_sha256!r}; it was not overwritten and its segments stay in the spool — investigate "
            "who wrote that object"
        )

    def _put(self, obj: ArchiveObject, retention: RetentionClass, until: dt.datetime) -> None:
        """PUT the object; a staged body is streamed from its file (botocore reads it in chunks)."""
        if obj.staged is None:
            self.client.put_object(**self._put_arguments(obj, retention, until, obj.body))
            return
        with obj.staged.open("rb") as body:
            self.client.put_object(**self._put_arguments(obj, retention, until, body))

    def _put_arguments(self, obj: ArchiveObject, retention: RetentionClass, until: dt.datetime,
                       body: bytes | BinaryIO) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "Bucket": self.bucket, "Key": obj.key, "Body": body, "ContentLength": obj.size,
            "ContentMD5": obj.md5_b64,
            "ContentType": obj.content_type, "Metadata": obj.metadata(), "IfNoneMatch": "*",
            "ObjectLockMode": retention.mode,
            "ObjectLockRetainUntilDate": until,
            "Tagging": layout.object_tags(obj.retention),
        }
        if self.sink.kms_key_id:
            arguments["ServerSideEncryption"] = "aws:kms"
            arguments["SSEKMSKeyId"] = self.sink.kms_key_id
        return arguments


def _take_landed_bytes(obj: ArchiveObject, sha256: str | None, size: object) -> None:
    """Describe `obj` by the bytes that landed (its digest entry): the same content, but perhaps other gzip bytes
    than this build's. A HEAD without a well-formed SHA-256 and size leaves `obj` as built (verify then compares)."""
    if isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256) and type(size) is int and size >= 0:
        obj.sha256, obj.size = sha256, size


def _status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = exc.response.get("Error", {}).get("Code", "")
    if is_not_found(exc):
        return 404
    if code in ("412", "PreconditionFailed"):
        return 412
    return int(status)
