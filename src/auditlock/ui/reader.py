"""Reading the archive for the view, through the query room (`auditlock query`'s cache, DuckDB view and output).

Each request opens its own DuckDB view over the cached objects of its range (the cache downloads an object once;
archive objects never change) and closes it before the response is sent; one boto3 client is shared (boto3
clients are thread-safe). The cache is bounded as for `auditlock query` (`[query] cache_max_bytes`): a request
that downloaded trims it once its view is closed, never while another request (or process) reads it.
Nothing here records anything: the views record before they show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from auditlock.archive.timerange import TimeRange
from auditlock.config.model import Config
from auditlock.query import output
from auditlock.query.cache import make_client
from auditlock.query.engine import AuditDatabase
from auditlock.query.filters import EventFilter
from auditlock.query.paging import Cursor, Page, event_time_range, fetch_page, find_event
from auditlock.query.session import open_database

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson",
                  "ocsf": "application/x-ndjson"}  # OCSF: one OCSF record per line (query.ocsf)


@dataclass(frozen=True)
class SearchResult:
    """One page of a search and how many events match in all."""

    total: int
    page: Page


class ArchiveReader:
    """The archive of `[sink]`, queried with the same engine as `auditlock query`."""

    def __init__(self, config: Config, cache_dir: Path, *, client: S3Client | None = None) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.client = client or make_client(config.sink)

    @contextmanager
    def database(self, time_range: TimeRange, *, include_spool: bool = False) -> Iterator[AuditDatabase]:
        """The `audit` view over the range (and the spool), closed when the block ends."""
        with open_database(self.config, time_range, self.cache_dir, None, include_spool=include_spool,
                           client=self.client) as (database, _report):
            yield database

    def search(self, event_filter: EventFilter, size: int, *, include_spool: bool = False,
               older: Cursor | None = None, newer: Cursor | None = None) -> SearchResult:
        """The page asked for and the total count."""
        with self.database(event_filter.time_range, include_spool=include_spool) as database:
            where, params = event_filter.where()
            total = database.count(where, params)
            page = fetch_page(database, event_filter, size, older_than=older, newer_than=newer)
        return SearchResult(total, page)

    def export(self, event_filter: EventFilter, fmt: str, out: IO[str], *, include_spool: bool = False) -> int:
        """Write every matching event to `out` as `auditlock query --format csv|jsonl|ocsf` would; the row count."""
        with self.database(event_filter.time_range, include_spool=include_spool) as database:
            where, params = event_filter.where()
            result = database.events(where, params)
            if fmt == "csv":
                return output.write_csv(result, out)
            if fmt == "ocsf":
                return output.write_ocsf(result, out)
            return output.write_jsonl(result, out, events=True)

    def event(self, event_id: str, *, include_spool: bool = False) -> dict[str, Any] | None:
        """The event with this id (reading only the partition of the millisecond it was stamped in)."""
        with self.database(event_time_range(event_id), include_spool=include_spool) as database:
            return find_event(database, event_id)
