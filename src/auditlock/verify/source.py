"""Where verify reads the archive from: the S3 bucket itself, or a downloaded copy of the prefix in a directory.

Keys are handled *relative to the prefix* (`events/year=2026/month=11/….jsonl.gz`, `digests/…`), because a
downloaded copy does not know the prefix it came from; digests record full keys, which `relative_key` maps.
A directory source has no Object Lock state or tags: its `head` is always None and `checks_locks` False.
Nor has it versions: `list_versions` raises `VersionsUnavailable`, as it does on a server that cannot list them
(or a role without `s3:ListBucketVersions`); verify then reads current versions only and says so.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from auditlock.archive import layout
from auditlock.archive.client import is_not_found, make_s3_client
from auditlock.config.model import SinkConfig
from auditlock.errors import AuditlockError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_RELATIVE = re.compile(r"(?:^|/)((?:events|digests)/year=\d{4}/month=\d{2}/[^/]+)\Z")
MAX_MONTH_LISTINGS = 120  # beyond this, one listing of the whole tree beats a request per month
_MONTH = re.compile(r"year=(\d{4})/month=(\d{2})/")


class SourceError(AuditlockError):
    """The archive could not be read (credentials, bucket, directory); verification could not run."""


class VersionsUnavailable(SourceError):
    """The source cannot list object versions and delete markers (a directory, or the server refused)."""


def relative_key(key: str) -> str | None:
    """The part of an archive key after the prefix (`events/year=…/…`), or None for any other key."""
    match = _RELATIVE.search(key)
    return match[1] if match else None


def key_month(key: str) -> tuple[int, int] | None:
    """The (year, month) partition a key lies in."""
    match = _MONTH.search(key)
    return (int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class ObjectHead:
    """What S3 says about an object besides its bytes: its lock, its tags, whether a legal hold is on it."""

    lock_mode: str | None
    retain_until: dt.datetime | None
    tags: dict[str, str] = field(default_factory=dict)
    legal_hold: bool = False


@dataclass
class KeyVersions:
    """Every version of one key as ListObjectVersions reports it: data versions and delete markers, newest first."""

    key: str
    data: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    deleted: bool = False  # the latest version is a delete marker: readers see no object

    @property
    def plain(self) -> bool:
        """One data version and no delete marker on top: the current version is the only one."""
        return len(self.data) <= 1 and not self.deleted


class ArchiveSource(Protocol):
    """The archive as verify sees it (keys relative to the prefix)."""

    description: str
    checks_locks: bool

    def list_keys(self, kind: str, months: Iterable[tuple[int, int]] | None) -> list[str]:
        """Keys under `kind` (`events` or `digests`) in the given months (None: all), sorted."""
        ...

    def list_versions(self, kind: str, months: Iterable[tuple[int, int]] | None) -> dict[str, KeyVersions]:
        """Every key under `kind` in the months that has versions or delete markers; `VersionsUnavailable` if the
        source cannot tell."""
        ...

    def list_everything(self, kind: str, months: Iterable[tuple[int, int]] | None) -> list[str]:
        """Every key under `kind` in the months' partitions (None: the whole tree), nested or not, sorted: what
        `list_keys` leaves out is what `verify.archive` reports as foreign."""
        ...

    def read(self, key: str, version_id: str | None = None) -> bytes | None:
        """The bytes of the object (its current version, or `version_id`), or None if there is no such object."""
        ...

    def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        """The object's lock and tags (None when the source cannot tell, or the object is gone)."""
        ...


class DirectorySource:
    """A downloaded copy of the prefix: DIR/events/year=YYYY/month=MM/…, DIR/digests/…."""

    checks_locks = False

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SourceError(f"--source {root}: not a directory; give the downloaded copy of the archive prefix")
        self.root = root
        self.description = f"directory {root} (a copy: Object Lock and tags cannot be checked)"

    def list_keys(self, kind: str, months: Iterable[tuple[int, int]] | None) -> list[str]:
        """Files under DIR/<kind>/year=…/month=…/ in the given months."""
        wanted = None if months is None else set(months)
        keys = []
        for path in (self.root / kind).glob("year=*/month=*/*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and (wanted is None or key_month(key) in wanted):
                keys.append(key)
        return sorted(keys)

    def list_everything(self, kind: str, months: Iterable[tuple[int, int]] | None) -> list[str]:
        """Every file under DIR/<kind>/ (at any depth; symlinks are not followed) in the given months."""
        wanted = None if months is None else set(months)
        keys = []
        for path in (self.root / kind).rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if not path.is_dir() and (wanted is None or key_month(key) in wanted):
                keys.append(key)
        return sorted(keys)

    def list_versions(self, kind: str, months: Iterable[tuple[int, int]] | None) -> dict[str, KeyVersions]:
        """Always `VersionsUnavailable`: a copy holds current versions only."""
        raise VersionsUnavailable("a directory copy holds current versions only")

    def read(self, key: str, version_id: str | None = None) -> bytes | None:
        """The file's bytes (a copy has one version of each key)."""
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        """Always None: a copy has no lock or tags."""
        return None


class S3Source:
    """The sink bucket and prefix of the config, read with a boto3 client (thread-safe; shared by workers)."""

    checks_locks = True

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.description = f"s3://{bucket}/{self.base}"

    def list_keys(self, kind: str, months: Iterable[tuple[int, int]] | None) -> list[str]:
        """Keys under each month's partition (or the whole `<prefix>/<kind>/` tree)."""
        wanted = None if months is None else set(months)
        return sorted(k for k in self._listed(kind, wanted) if self._selected(k, wanted))

    def list_everything(self, kind: str, months: Iterable[tuple[int, int]] | None) -> list[str]:
        """Every key under each month's partition (or the whole `<prefix>/<kind>/` tree), nested or not."""
        wanted = None if months is None else set(months)
        return sorted(k for k in self._listed(kind, wanted) if wanted is None or key_month(k) in wanted)

    def _listed(self, kind: str, wanted: set[tuple[int, int]] | None) -> list[str]:
        """Every key (relative to the prefix) ListObjectsV2 returns under the months' partitions of `kind`."""
        keys = []
        for prefix in self._prefixes(kind, wanted):
            for page in self._call(self.client.get_paginator("list_objects_v2").paginate,
                                   Bucket=self.bucket, Prefix=prefix):
                keys += [item["Key"][len(self.base):] for item in page.get("Contents", [])]
        return keys

    def list_versions(self, kind: str, months: Iterable[tuple[int, int]] | None) -> dict[str, KeyVersions]:
        """ListObjectVersions under each month's partition; S3 lists a key's versions newest first."""
        wanted = None if months is None else set(months)
        found: dict[str, KeyVersions] = {}
        for prefix in self._prefixes(kind, wanted):
            try:
                pages = list(self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                                        Prefix=prefix))
            except Exception as exc:
                raise VersionsUnavailable(f"ListObjectVersions failed ({exc}); it needs s3:ListBucketVersions") \
                    from exc
            for page in pages:
                self._add_versions(found, page, wanted)
        return found

    def _add_versions(self, found: dict[str, KeyVersions], page: Mapping[str, Any],
                      wanted: set[tuple[int, int]] | None) -> None:
        for entry, is_marker in [(v, False) for v in page.get("Versions", [])] + \
                                [(m, True) for m in page.get("DeleteMarkers", [])]:
            key = entry["Key"][len(self.base):]
            if not self._selected(key, wanted):
                continue
            versions = found.get(key) or found.setdefault(key, KeyVersions(key))
            (versions.markers if is_marker else versions.data).append(str(entry.get("VersionId") or "null"))
            if is_marker and entry.get("IsLatest"):
                versions.deleted = True

    def _prefixes(self, kind: str, wanted: set[tuple[int, int]] | None) -> list[str]:
        if wanted is None or len(wanted) > MAX_MONTH_LISTINGS:
            return [f"{self.base}{kind}/"]
        return [layout.partition_prefix(self.base, y, m, kind) for y, m in sorted(wanted)]

    def _selected(self, key: str, wanted: set[tuple[int, int]] | None) -> bool:
        return relative_key(key) == key and (wanted is None or key_month(key) in wanted)

    def read(self, key: str, version_id: str | None = None) -> bytes | None:
        """GET the object (or one version of it); None on 404."""
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.base + key,
                                                 **_version(version_id))["Body"].read()
        except Exception as exc:
            if is_not_found(exc) or _no_such_version(exc):
                return None
            raise SourceError(f"cannot read {self.description}{key}: {exc}") from exc
        return body

    def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        """HEAD the object (or one version of it) and GET its tags; None on 404."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.base + key, **_version(version_id))
            tag_set = self.client.get_object_tagging(Bucket=self.bucket, Key=self.base + key,
                                                     **_version(version_id))["TagSet"]
        except Exception as exc:
            if is_not_found(exc) or _no_such_version(exc):
                return None
            raise SourceError(f"cannot HEAD {self.description}{key}: {exc}") from exc
        return ObjectHead(head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate"),
                          {t["Key"]: t["Value"] for t in tag_set},
                          legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON")

    def _call(self, paginate: Any, **kwargs: Any) -> Iterable[dict[str, Any]]:
        try:
            return list(paginate(**kwargs))
        except Exception as exc:
            raise SourceError(f"cannot list {self.description}: {exc}; check [sink] and the AWS credentials "
                              "in this environment") from exc


def _version(version_id: str | None) -> dict[str, Any]:
    return {} if version_id is None else {"VersionId": version_id}


def _no_such_version(exc: BaseException) -> bool:
    """A version listed a moment ago is gone (removed since, e.g. an expired GOVERNANCE lock bypassed)."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "NoSuchVersion"


def s3_source(sink: SinkConfig) -> S3Source:
    """An `S3Source` over `[sink]` with a client made the boto3 way (env, profile, IRSA, instance role)."""
    if not sink.bucket:
        raise SourceError("[sink] bucket is not set; set it in auditlock.toml or AUDITLOCK_SINK_BUCKET")
    client = make_s3_client(sink, attempts=5, max_pool_connections=16)
    return S3Source(client, sink.bucket, sink.prefix)
