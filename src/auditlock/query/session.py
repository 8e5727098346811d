"""One `auditlock query` run: spool events (if asked), then the archive's partitions, then DuckDB, then output.

The order matters: the spool is read before S3 is listed, so an event is either read from the spool or was
already in the archive when the listing began (see `spool`). Spool events are copied into a private temporary
directory (0700) that is removed when the run ends.

With spool events and no `[sink] bucket` (a spool read before the bucket exists) the archive is not read, and a
note says so. Without spool events, a range with no archive objects gets a note on `err` (never on `out`, which
is data) saying how many events the local spool holds that `--include-spool` would add.

The cache is held (`eviction.lease`) from the listing until the DuckDB view is closed; then, if this run or
another downloaded since the last trim, or this run saw stale entries, the cache is trimmed to
`[query] cache_max_bytes` (or the request's bound).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from auditlock.archive.timerange import TimeRange
from auditlock.config.model import Config
from auditlock.query import output
from auditlock.query.cache import ArchiveCache, FetchReport, make_client
from auditlock.query.engine import AuditDatabase
from auditlock.query.eviction import TrimReport, lease, trim, trim_pending
from auditlock.query.filters import EventFilter
from auditlock.query.spool import copy_spool_events, count_spool_events
from auditlock.textsafe import terminal_safe

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from auditlock.privacy.erasable import Revealer

log = logging.getLogger("auditlock.query")


@dataclass(frozen=True)
class QueryRequest:
    """What to query and how to print it."""

    filter: EventFilter
    cache_dir: Path
    sql: str | None = None
    fmt: str = "table"
    limit: int | None = None
    include_spool: bool = False
    cache_max_bytes: int | None = None  # None: [query] cache_max_bytes


@dataclass
class QueryReport:
    """What a run did: the archive fetch, spool events read, rows written, and the trim after it (None: none
    was due, or another query held the cache)."""

    fetch: FetchReport
    spool_events: int = 0
    rows: int = 0
    trim: TrimReport | None = None
    archive_read: bool = True


def execute(request: QueryRequest, config: Config, out: IO[str], err: IO[str], *,
            client: S3Client | None = None) -> QueryReport:
    """Run the query and write the result to `out` (progress and notes go to `err`)."""
    with open_database(config, request.filter.time_range, request.cache_dir, err,
                       include_spool=request.include_spool, client=client,
                       cache_max_bytes=request.cache_max_bytes) as (database, report):
        report.rows = _write(database, request, out)
    if not request.include_spool and report.fetch.objects == 0:
        _hint_spool(config, err)
    return report


@contextmanager
def open_database(config: Config, time_range: TimeRange, cache_dir: Path, err: IO[str] | None, *,
                  include_spool: bool = False, client: S3Client | None = None, cache_max_bytes: int | None = None,
                  ) -> Iterator[tuple[AuditDatabase, QueryReport]]:
    """The `audit` view over the range's archive objects (and spool events), closed when the block ends; then
    the cache is trimmed if due (to `cache_max_bytes`, default `[query] cache_max_bytes`).

    Progress and notes go to `err` (None: notes are logged, progress is not shown).
    """
    max_bytes = config.query.cache_max_bytes if cache_max_bytes is None else cache_max_bytes
    stale: list[Path] = []
    report: QueryReport | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="auditlock-query-") as tmp, lease(cache_dir):
            spool_file, spool_events = None, 0
            if include_spool:
                spool_file, spool_events = _copy_spool(config.spool.dir, Path(tmp), err)
            archive_read = not (include_spool and not config.sink.bucket)
            if archive_read:
                cache = ArchiveCache(client or make_client(config.sink), config.sink, cache_dir, progress=err)
                files, fetch = cache.fetch(time_range)
                _note_skipped(err, fetch)
            else:
                _note(err, "[sink] bucket is not set: the archive was not read; these are the spool's events only")
                files, fetch = [], FetchReport()
            stale = fetch.stale
            revealer = _revealer(config)
            database = AuditDatabase(files, spool_file=spool_file, time_range=time_range,
                                     reveal=None if revealer is None else revealer.payload_text)
            report = QueryReport(fetch, spool_events, archive_read=archive_read)
            try:
                yield database, report
            finally:
                database.close()
                if revealer is not None:
                    revealer.close()
                    _note_undecryptable(err, revealer)
    finally:  # the lease has ended: trim even after an error (a failed fetch may have downloaded)
        trimmed = _trim(cache_dir, max_bytes, stale, err)
        if report is not None:
            report.trim = trimmed


def _revealer(config: Config) -> Revealer | None:
    """The key store's revealer when `[erasure]` is configured (erasable values then show decrypted or erased)."""
    if not config.erasure.configured:
        return None
    from auditlock.privacy.erasable import revealer_for  # noqa: PLC0415 - cryptography only with [erasure]

    return revealer_for(config)


def _note_undecryptable(err: IO[str] | None, revealer: Revealer) -> None:
    """Notes for values shown as `[undecryptable]`: each names the event, the field and the cause."""
    for finding in revealer.findings:
        _note(err, f"finding: {finding}")
    if revealer.finding_count > len(revealer.findings):
        _note(err, f"{revealer.finding_count - len(revealer.findings)} more values could not be decrypted")


def _note_skipped(err: IO[str] | None, fetch: FetchReport) -> None:
    """Notes for what the archive holds but the run did not read: foreign keys, unreadable objects and lines."""
    if fetch.foreign:
        shown = ", ".join(fetch.foreign[:3]) + (f" and {len(fetch.foreign) - 3} more" if len(fetch.foreign) > 3
                                                else "")
        _note(err, f"not read: {len(fetch.foreign)} keys in these partitions are not archive objects ({shown}); "
                   "run `auditlock verify`, which reports them as foreign objects")
    for key, detail in fetch.unreadable[:20]:
        _note(err, f"{key}: {detail}; the rest of the range is shown (`auditlock verify` checks this object)")
    if len(fetch.unreadable) > 20:
        _note(err, f"{len(fetch.unreadable) - 20} more objects with unreadable parts were skipped")


def _trim(cache_dir: Path, max_bytes: int, stale: list[Path], err: IO[str] | None) -> TrimReport | None:
    if not stale and not trim_pending(cache_dir):
        return None
    try:
        return trim(cache_dir, max_bytes, stale=stale)
    except OSError as exc:  # the answer stands; the next run trims again
        _note(err, f"could not trim the cache {cache_dir}: {exc}")
        return None


def _write(database: AuditDatabase, request: QueryRequest, out: IO[str]) -> int:
    if request.sql is not None:
        result = database.sql(request.sql)
    else:
        where, params = request.filter.where()
        result = database.events(where, params, limit=request.limit)
    width = shutil.get_terminal_size((120, 24)).columns
    return output.write(result, request.fmt, out, events=request.sql is None, width=width)


def _copy_spool(spool_dir: Path, tmp: Path, err: IO[str] | None) -> tuple[Path | None, int]:
    if not spool_dir.is_dir():
        _note(err, f"spool directory {spool_dir} does not exist here; no spool events")
        return None, 0
    path = tmp / "spool.jsonl"
    with path.open("wb") as f:
        read = copy_spool_events(spool_dir, f)
    if read.skipped:
        _note(err, f"skipped {read.skipped} incomplete or unreadable spool lines")
    return path, read.events


def _hint_spool(config: Config, err: IO[str]) -> None:
    """A note that the archive has nothing for the range, and what the local spool holds unshipped."""
    where = f"s3://{config.sink.bucket}/{config.sink.prefix}"
    spool_dir = config.spool.dir
    try:
        pending = count_spool_events(spool_dir).events if spool_dir.is_dir() else None
    except OSError:
        pending = None
    if pending is None:
        _note(err, f"the archive ({where}) has no objects for this period; events not shipped yet are in the "
                   f"agent's spool ({spool_dir}, not readable here): run with --include-spool where it is")
    elif pending:
        _note(err, f"the archive ({where}) has no objects for this period; the spool {spool_dir} holds "
                   f"{pending} events not shipped yet: add --include-spool to see them")
    else:
        _note(err, f"the archive ({where}) has no objects for this period, and the spool {spool_dir} is empty")


def _note(err: IO[str] | None, text: str) -> None:
    if err is None:
        log.info("auditlock query: %s", text)
    else:
        err.write(f"auditlock query: note: {terminal_safe(text)}\n")
