"""The local cache of archive objects: list only the month partitions in range, download what is missing.

Layout (under `--cache-dir`, else `[query] cache_dir`, else `$XDG_CACHE_HOME/auditlock` or `~/.cache/auditlock`;
mode 0700):

    <cache>/archive/<endpoint>/<bucket>/<object key without .jsonl.gz>.<etag>.jsonl.gz
    <cache>/.lock, <cache>/.trim-pending      (see `eviction`)

Invariants
- An entry is keyed by the object's key *and* ETag. Archive objects are immutable (Object Lock; auditlock never
  overwrites); should a key ever hold another object (or be deleted once its retention ended), the old entry is
  stale: never read again, and the first to go when the cache is trimmed (`eviction`, which alone deletes).
- An entry is complete: it is written to a `.part-*` file, fsync'd and renamed into place, so a reader in any
  process sees a whole file or none; it is used only if its size equals the size S3 lists (a file cut short by
  a crash is fetched again).
- `fetch` stamps every entry it returns as used (`os.utime`): the least recently used are evicted first.
  Callers hold an `eviction.lease` from `fetch` until they are done reading the files.
- `<endpoint>` is `aws`, or the host and port of `[sink] endpoint_url`, so two servers never share entries.
- The archive holds personal data (hashed or not): directories are created 0700, files 0600.

Listing: a range with both ends and at most `MAX_ENUMERATED_MONTHS` months lists exactly its months' prefixes
(`<prefix>/events/year=YYYY/month=MM/`); any other range first discovers the partitions that exist with
delimiter listings (one request, plus one per year), so `--since 0001-01 --until 9999-12` costs what exists.

Hostile input (the bucket is read as an attacker with PutObject could have filled it):
- Only keys `layout.parse_events_key` accepts are read; the others are counted in `FetchReport.foreign` (the
  run notes them; `auditlock verify` reports them as `foreign object`). Local paths come from
  `confine.confined_path`, never from joining a raw key.
- A download is decompressed with a bound (`[sink] batch_max_bytes`) and each line checked
  (`content.unreadable_line`). An object that is too large or not gzip is not cached (`FetchReport.unreadable`);
  one with unreadable lines is cached without them and noted; its entry then differs in size from the object,
  so each run fetches and notes it again.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from auditlock.archive import content, layout
from auditlock.archive.client import make_s3_client
from auditlock.archive.timerange import TimeRange
from auditlock.config.model import SinkConfig
from auditlock.query.columns import events_root
from auditlock.query.confine import confined_path
from auditlock.query.errors import QueryError
from auditlock.query.eviction import DIR_MODE, mark_pending

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_PARTITION = re.compile(r"(?:year|month)=(\d+)/\Z")
MAX_ENUMERATED_MONTHS = 24  # a bounded range of more months discovers the partitions that exist instead


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/auditlock`, else `~/.cache/auditlock`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auditlock"


def make_client(sink: SinkConfig) -> S3Client:
    """A read-only S3 client for `[sink]`'s bucket, with room for parallel downloads."""
    return make_s3_client(sink, attempts=5, max_pool_connections=16)


@dataclass(frozen=True)
class ListedObject:
    """An events object as S3 lists it."""

    key: str
    etag: str
    size: int


@dataclass
class FetchReport:
    """What a fetch did: which partition prefixes it listed, what it downloaded, what it found cached, and the
    stale entries it saw in those partitions (cached, but no longer listed with that ETag)."""

    prefixes: list[str] = field(default_factory=list)
    downloaded: int = 0
    downloaded_bytes: int = 0
    reused: int = 0
    stale: list[Path] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # keys in the partitions that are not archive objects
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (key, what was skipped and why)

    @property
    def objects(self) -> int:
        """How many archive objects the range holds (downloaded or found cached)."""
        return self.downloaded + self.reused


@dataclass(frozen=True)
class Downloaded:
    """One download: its size, and what of it could not be read (None: all of it)."""

    size: int
    unreadable: str | None = None
    cached: bool = True


class ArchiveCache:
    """Downloads the archive objects of a time range into the local cache and returns their paths."""

    def __init__(self, client: S3Client, sink: SinkConfig, root: Path, *, progress: IO[str] | None = None,
                 workers: int = 8) -> None:
        if not sink.bucket:
            raise QueryError("[sink] bucket is not set; set it in auditlock.toml or AUDITLOCK_SINK_BUCKET")
        self.client = client
        self.bucket = sink.bucket
        self.prefix = sink.prefix
        self.cache_dir = root
        self.root = root / "archive" / _endpoint_tag(sink.endpoint_url) / sink.bucket
        self.progress = progress
        self.workers = workers
        self.max_object_bytes = sink.batch_max_bytes

    def fetch(self, time_range: TimeRange) -> tuple[list[Path], FetchReport]:
        """Every cached file of the range's partitions (downloading the missing ones) and a report."""
        report = FetchReport()
        self.cache_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # 0700 here protects all below
        listed_at = time.time()
        try:
            objects = [obj for prefix in self._prefixes(time_range, report) for obj in self._list(prefix, report)]
            report.stale = self._stale(report.prefixes, objects, listed_at)
            missing = [obj for obj in objects if not self._use(obj)]
            report.reused = len(objects) - len(missing)
            self._download_all(missing, report)
        except (ClientError, BotoCoreError) as exc:
            raise QueryError(f"cannot read s3://{self.bucket}/{self.prefix}: {exc}; check [sink] and the "
                             "AWS credentials in this environment") from exc
        paths = [self.local_path(obj) for obj in objects]
        return [path for path in paths if path.exists()], report

    def local_path(self, obj: ListedObject) -> Path:
        """Where an object is cached (see the module docstring)."""
        stem = obj.key.removesuffix(layout.OBJECT_SUFFIX)
        return confined_path(self.root, f"{stem}.{obj.etag}{layout.OBJECT_SUFFIX}")

    def _prefixes(self, time_range: TimeRange, report: FetchReport) -> list[str]:
        few = time_range.bounded and time_range.month_count() <= MAX_ENUMERATED_MONTHS
        months = time_range.months() if few else self._discover(time_range)
        report.prefixes = [layout.partition_prefix(self.prefix, year, month) for year, month in months]
        return report.prefixes

    def _discover(self, time_range: TimeRange) -> Iterator[tuple[int, int]]:
        root = events_root(self.prefix)
        for year_prefix, year in self._children(root):
            if not 1 <= year <= 9999:  # not a partition any agent writes (and no datetime has it)
                continue
            for _, month in self._children(year_prefix):
                if 1 <= month <= 12 and time_range.contains_month(year, month):
                    yield year, month

    def _children(self, prefix: str) -> Iterator[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix,
                                                                       Delimiter="/")
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                match = _PARTITION.search(common["Prefix"])
                if match:
                    yield common["Prefix"], int(match[1])

    def _list(self, prefix: str, report: FetchReport) -> Iterator[ListedObject]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = layout.strip_prefix(self.prefix, item["Key"])
                if relative is None or layout.parse_events_key(relative) is None:
                    report.foreign.append(item["Key"])
                    continue
                yield ListedObject(item["Key"], _clean_etag(item["ETag"]), item["Size"])

    def _use(self, obj: ListedObject) -> bool:
        """Whether the object is cached whole; if so, stamp the entry as used now."""
        path = self.local_path(obj)
        try:
            if path.stat().st_size != obj.size:
                return False
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    def _stale(self, prefixes: list[str], objects: list[ListedObject], listed_at: float) -> list[Path]:
        """Entries in the listed partitions that the listing no longer holds. One used since the listing began
        is spared: another process may have listed (and downloaded) an object that arrived after ours."""
        current = {self.local_path(obj) for obj in objects}
        stale = []
        for prefix in prefixes:
            for path in (self.root / prefix).rglob(f"*{layout.OBJECT_SUFFIX}"):
                with suppress(FileNotFoundError):
                    if path not in current and path.stat().st_mtime < listed_at:
                        stale.append(path)
        return stale

    def _download_all(self, objects: list[ListedObject], report: FetchReport) -> None:
        if objects:
            mark_pending(self.cache_dir)
        progress = DownloadProgress(len(objects), sum(o.size for o in objects), self.progress)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="auditlock-download") as pool:
            for obj, done in zip(objects, pool.map(self._download, objects), strict=True):
                report.downloaded += done.cached
                report.downloaded_bytes += done.size
                if done.unreadable is not None:
                    report.unreadable.append((obj.key, done.unreadable))
                progress.advance(done.size)
        progress.finish()

    def _download(self, obj: ListedObject) -> Downloaded:
        target = self.local_path(obj)
        if obj.size > self.max_object_bytes:
            return Downloaded(0, f"object too large: {obj.size} bytes stored, over [sink] batch_max_bytes", False)
        body = self.client.get_object(Bucket=self.bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')["Body"]
        data = body.read(self.max_object_bytes + 1)
        try:
            kept, unreadable = readable_content(data, self.max_object_bytes)
        except (content.ObjectTooLarge, OSError, EOFError, zlib.error) as exc:
            detail = str(exc) if isinstance(exc, content.ObjectTooLarge) else f"not gzip: {exc}"
            return Downloaded(obj.size, detail, False)
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _write_entry(target, kept)
        return Downloaded(obj.size, unreadable)


def readable_content(data: bytes, limit: int) -> tuple[bytes, str | None]:
    """The object's bytes to cache (as stored, or re-compressed without its unreadable lines) and what was left
    out (None: nothing). Raises `ObjectTooLarge` or a gzip error for an object that cannot be read at all."""
    if len(data) > limit:
        raise content.ObjectTooLarge(f"object too large: over {limit} bytes stored")
    bad: list[str] = []
    kept: list[bytes] = []
    for number, line in enumerate(content.split_lines(content.gunzip_bounded(data, limit)), 1):
        problem = content.unreadable_line(line)
        if problem is None:
            kept.append(line)
        else:
            bad.append(f"{number} ({problem})")
    if not bad:
        return data, None
    shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    return gzip.compress(b"".join(line + b"\n" for line in kept), mtime=0), f"skipped lines {shown}"


def _write_entry(target: Path, data: bytes) -> None:
    """Write a whole cache entry: a `.part-*` file, fsync'd, renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # the rename must not publish a file whose data a crash can still lose
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _endpoint_tag(endpoint_url: str | None) -> str:
    if not endpoint_url:
        return "aws"
    return re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(endpoint_url).netloc or endpoint_url)


def _clean_etag(etag: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", etag)


class DownloadProgress:
    """Progress of a long download on a stream (stderr): nothing for the first second, then a line at most
    twice a second (rewritten in place on a terminal), and a closing line if anything was shown."""

    def __init__(self, total_objects: int, total_bytes: int, stream: IO[str] | None, *,
                 clock: Callable[[], float] = time.monotonic, delay_s: float = 1.0, interval_s: float = 0.5) -> None:
        self.total_objects, self.total_bytes = total_objects, total_bytes
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.next_at = self.started + delay_s
        self.interval_s = interval_s
        self.objects = self.bytes = 0
        self.shown = False
        self._lock = threading.Lock()

    def advance(self, nbytes: int) -> None:
        """One more object of `nbytes` is in the cache."""
        with self._lock:
            self.objects += 1
            self.bytes += nbytes
            now = self.clock()
            if self.stream is not None and now >= self.next_at:
                self.next_at = now + self.interval_s
                self._show(now, final=False)

    def finish(self) -> None:
        """End the progress display (a final line, only if progress was shown)."""
        if self.shown:
            self._show(self.clock(), final=True)

    def _show(self, now: float, *, final: bool) -> None:
        assert self.stream is not None
        elapsed = now - self.started
        text = (f"auditlock query: downloaded {self.objects}/{self.total_objects} objects, "
                f"{self.bytes / 2**20:.1f}/{self.total_bytes / 2**20:.1f} MiB, {elapsed:.0f} s")
        tty = self.stream.isatty()
        end = "\n" if final or not tty else ""
        self.stream.write(("\r" if tty else "") + text + end)
        self.stream.flush()
        self.shown = True
