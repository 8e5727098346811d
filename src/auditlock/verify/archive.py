"""`auditlock verify` over the archive: versions, digests, then every object (bytes, events, lock), the writers.

Versions first: ListObjectVersions names every key that was overwritten or hidden by a delete marker; for those,
`versions.resolve` picks the version to check (the one the digests recorded). A source that cannot list versions
is verified on current versions only, and the report says so under "skipped".

Objects are fetched by a small thread pool a few ahead of the one thread that checks them, in key order, so
memory holds only a handful of objects while the network stays busy.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from auditlock.archive.layout import DIGESTS_DIR, EVENTS_DIR, parse_events_key
from auditlock.archive.timerange import ALL_TIME, TimeRange, format_time
from auditlock.config.model import RetentionClass
from auditlock.verify import objects, witness
from auditlock.verify.digests import DigestSet, check_chains, check_signatures, load_digests
from auditlock.verify.events import EventStreams, LineRecord, TailPolicy
from auditlock.verify.findings import FOREIGN_OBJECT, MISSING_OBJECT, OBJECT_TOO_LARGE, UNREADABLE_OBJECT, Report
from auditlock.verify.source import ArchiveSource, KeyVersions, ObjectHead, VersionsUnavailable, key_month
from auditlock.verify.versions import resolve

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ArchiveOptions:
    """What to verify and against what: the range, the public key, the classes, the open-writer grace."""

    time_range: TimeRange = ALL_TIME
    public_key: Any = None
    classes: Mapping[str, RetentionClass] | None = None
    open_grace: dt.timedelta = dt.timedelta(hours=1)
    now: dt.datetime | None = None
    workers: int = 8
    max_object_bytes: int = 64 * 1024 * 1024  # an object's content beyond this is `object too large`


@dataclass
class _Fetched:
    key: str
    data: bytes | None
    head: ObjectHead | None
    content: bytes | None = None
    problem: str | None = None
    version_findings: list[tuple[str, str]] = field(default_factory=list)


def verify_archive(source: ArchiveSource, options: ArchiveOptions) -> Report:
    """Check everything in the selected months and return the report."""
    report = Report(source.description)
    if not source.checks_locks:
        report.skipped.append("Object Lock mode, retain-until and tags: a directory copy has none")
    if options.public_key is None:
        report.skipped.append("digest signatures: no --public-key given")
    digest_versions = _list_versions(source, DIGESTS_DIR, _months(options.time_range, widen=1), report)
    found = _verify_digests(source, options, report, digest_versions)
    streams = EventStreams(report)
    # A range may cut a digest's writer ranges; then only the events count (and the recorded lines present).
    _expect_recorded_writers(found, streams, ranges=options.time_range == ALL_TIME)
    heads = witness.expect_heads(found, streams)
    event_versions = _list_versions(source, EVENTS_DIR, _months(options.time_range, widen=0), report)
    _verify_objects(source, options, found, streams, report, versions=event_versions)
    streams.finish(_tail_policy(options))
    witness.check_heads(heads, streams, report)
    witness.report_findings(found, report)
    _mark_nothing_to_verify(report, options)
    return report


def _mark_nothing_to_verify(report: Report, options: ArchiveOptions) -> None:
    """No digest, no events object and no finding: the source is empty or the wrong one (see `findings`)."""
    if report.findings or report.counts.get("digests") or report.counts.get("objects"):
        return
    report.nothing_to_verify = True
    period = "in the selected months" if options.time_range != ALL_TIME else "at all"
    report.notes.append(
        f"nothing to verify: no digest and no events object under {report.source} {period}. Check [sink] bucket "
        "and prefix (or --source, --since/--until); on a fresh deployment the archive stays empty until the "
        "agent ships its first batch")


def _list_versions(source: ArchiveSource, kind: str, months: list[tuple[int, int]] | None,
                   report: Report) -> dict[str, KeyVersions] | None:
    """The keys' versions; None (and a line under "skipped", once) when the source cannot list them."""
    try:
        return source.list_versions(kind, months)
    except VersionsUnavailable as exc:
        line = (f"object versions and delete markers: {exc}; current versions only (an overwrite or a delete "
                "marker shows only through its effects)")
        if line not in report.skipped:
            report.skipped.append(line)
        return None


def _expect_recorded_writers(found: DigestSet, streams: EventStreams, *, ranges: bool) -> None:
    for key, loaded in sorted(found.digests.items()):
        writers = loaded.body.get("writers")
        for writer, recorded in (writers.items() if isinstance(writers, dict) else ()):
            try:
                last_seq = int(recorded["last_seq"])
                if ranges:
                    streams.expect(str(writer), int(recorded["first_seq"]), last_seq, key)
            except (KeyError, TypeError, ValueError):
                continue
            last_hash, closed = recorded.get("last_hash"), recorded.get("closed")
            streams.expect_line(LineRecord(key, str(writer), last_seq, last_hash if isinstance(last_hash, str)
                                           else None, closed if isinstance(closed, bool) else None))


def _verify_digests(source: ArchiveSource, options: ArchiveOptions, report: Report,
                    versions: dict[str, KeyVersions] | None) -> DigestSet:
    months = _months(options.time_range, widen=1)
    found = load_digests(source, months, report, versions)
    check_chains(found, months, report)
    if options.public_key is not None:
        check_signatures(found, options.public_key, report)
    if source.checks_locks:
        for key, loaded in sorted(found.digests.items()):
            head = source.head(key, loaded.version_id)
            if head is not None:
                _note_legal_hold(key, head, report)
                retention, last = objects.digest_lock_basis(loaded.body, options.classes)
                objects.check_lock(key, head, retention, last, classes=options.classes, report=report)
    return found


def _verify_objects(source: ArchiveSource, options: ArchiveOptions, found: DigestSet, streams: EventStreams,
                    report: Report, *, versions: dict[str, KeyVersions] | None) -> None:
    months = _months(options.time_range, widen=0)
    everything = set(source.list_everything(EVENTS_DIR, months)) | set(source.list_keys(EVENTS_DIR, months))
    stored = {key for key in everything | set(versions or {}) if parse_events_key(key) is not None}
    _report_foreign(everything | set(versions or {}), report)
    listed = {key for key in found.listed if months is None or key_month(key) in months}
    listed_sha256s = found.listed_sha256s()

    def fetch(key: str) -> _Fetched:
        recorded = {listing.sha256: listing.digest for listing in found.listed.get(key, [])}
        resolved = resolve(source, key, (versions or {}).get(key), recorded, listed_sha256s)
        data = resolved.data
        head = source.head(key, resolved.version_id) if data is not None and source.checks_locks else None
        fetched = _Fetched(key, data, head, version_findings=resolved.findings)
        if data is not None:  # decompressing here overlaps it with the checking thread (zlib releases the GIL)
            fetched.content, fetched.problem = objects.inflate(data, options.max_object_bytes)
        return fetched

    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="auditlock-verify") as pool:
        for fetched in prefetch(pool, fetch, sorted(stored | listed), depth=options.workers * 2):
            _check_object(fetched, found, listed_sha256s, streams=streams, options=options, report=report)


def _check_object(fetched: _Fetched, found: DigestSet, listed_sha256s: Mapping[str, str], *, streams: EventStreams,
                  options: ArchiveOptions, report: Report) -> None:
    key, listings = fetched.key, found.listed.get(fetched.key, [])
    for kind, detail in fetched.version_findings:
        report.add(kind, key, detail)
    if fetched.data is None:
        if listings:
            report.add(MISSING_OBJECT, key, f"listed in {listings[0].digest} but not in the archive")
        return
    report.count("objects")
    objects.check_bytes(key, fetched.data, listings, listed_sha256s, report)
    if fetched.problem is not None:
        too_large = fetched.problem.startswith("too large: ")
        report.add(OBJECT_TOO_LARGE if too_large else UNREADABLE_OBJECT, key,
                   fetched.problem.removeprefix("too large: "))
    last = listings[0].last_occurred_at if listings else ""
    if fetched.content is not None:
        fed = streams.feed(key, objects.jsonl_lines(fetched.content))
        report.count("events", fed.events)
        last = max(last, fed.last_occurred_at)
        if fed.bad_count:
            report.add(UNREADABLE_OBJECT, key, f"lines {_numbers(fed.bad_lines, fed.bad_count)} are not "
                                               "auditlock/1 events")
        skipped = objects.lines_readers_skip(fetched.content, fed.bad_lines) if fed.bad_count <= 10 else None
        if skipped is not None:
            report.add(UNREADABLE_OBJECT, key, skipped)
    if fetched.head is not None:
        _note_legal_hold(key, fetched.head, report)
        objects.check_lock(key, fetched.head, objects.class_of(key, listings), last, classes=options.classes,
                           report=report)


def prefetch(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], depth: int) -> Iterator[R]:
    """`fn` over `items` on the pool, results in order, at most `depth` running or waiting to be taken."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _months(time_range: TimeRange, widen: int) -> list[tuple[int, int]] | None:
    """The months of a bounded range, widened by `widen` months each side; None for an open range."""
    if time_range.since is None and time_range.until is None:
        return None
    since = time_range.since or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    until = time_range.until or dt.datetime.now(dt.UTC) + dt.timedelta(days=3660)
    first = since.year * 12 + since.month - 1 - widen
    last_moment = until - dt.timedelta(microseconds=1)
    last = last_moment.year * 12 + last_moment.month - 1 + widen
    return [(m // 12, m % 12 + 1) for m in range(first, last + 1)]


def _tail_policy(options: ArchiveOptions) -> TailPolicy:
    now = options.now or dt.datetime.now(dt.UTC)
    since, until = options.time_range.since, options.time_range.until
    until_last = until - dt.timedelta(microseconds=1) if until else None
    return TailPolicy(
        open_after=format_time(now - options.open_grace),
        since_month=f"{since.year:04d}-{since.month:02d}" if since else None,
        until_month=f"{until_last.year:04d}-{until_last.month:02d}" if until_last else None,
    )


def _numbers(numbers: list[int], total: int) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {total - len(numbers[:10])} more" if total > 10 else "")


def _report_foreign(keys: set[str], report: Report) -> None:
    """Every key under `events/` that is not an archive object (`layout.parse_events_key`): no reader reads it."""
    for key in sorted(keys):
        if parse_events_key(key) is None:
            report.add(FOREIGN_OBJECT, key, "not an archive object (events/year=YYYY/month=MM/<stamp>-<class>-"
                                            "<32 hex>.jsonl.gz): no agent wrote it; query and the view do not "
                                            "read it, and neither does verify")


def _note_legal_hold(key: str, head: ObjectHead, report: Report) -> None:
    """A key under a legal hold is listed in the report (count and keys), as information."""
    if head.legal_hold:
        report.legal_holds.append(key)
