"""Legal holds: S3 Object Lock legal holds on every archive object (and digest) that can hold an event of a dispute.

Which objects (docs/bucket.md, "Legal holds")
- The time range's month partitions are listed (`layout.partition_prefix`); only archive objects count
  (`layout.parse_events_key`, the one definition). An object covers the range when its events' bounds
  (`auditlock-first`/`auditlock-last` metadata, from HEAD) overlap it. An object whose bounds cannot be read is
  held: what cannot be ruled out is kept.
- With `--actor` / `--target-type` / `--target-id` the covering objects are read (bounded: `[sink]
  batch_max_bytes`, `content.gunzip_bounded`) and held only when one of their events in the range matches, or
  when any line or the object itself cannot be read (again: held rather than guessed at).
- Digests: a digest is written right after its batch's objects, so the digests listing a held object are looked
  for in the months around the object's upload (`LastModified`, one month either side), then onward to the
  current month for any object not found there. A digest listing a held object is held too (it is the evidence
  that the object is whole). A held object no digest lists is reported, not hidden.

Holds are put on each key's current version. S3 keeps one legal-hold flag per object version, not one per
matter: a release clears the flag whatever else set it (docs/bucket.md says how to release safely).
Nothing here writes audit events; `cli/legal_hold.py` records each action before it acts.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from auditlock.archive import content, layout
from auditlock.archive.client import is_not_found
from auditlock.archive.timerange import TimeRange, format_time
from auditlock.errors import AuditlockError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ON: Literal["ON"] = "ON"
OFF: Literal["OFF"] = "OFF"


class LegalHoldError(AuditlockError):
    """The archive could not be read or a hold could not be changed; the message names the key and the cause."""


@dataclass(frozen=True)
class HoldScope:
    """What a hold is for: a bounded time range, and optionally one actor and/or one target."""

    time_range: TimeRange
    actor: str | None = None
    target_type: str | None = None
    target_id: str | None = None

    def __post_init__(self) -> None:
        self.bounds()

    def bounds(self) -> tuple[str, str]:
        """The range's ends as occurred_at strings (`since` inclusive, `until` exclusive)."""
        since, until = self.time_range.since, self.time_range.until
        if since is None or until is None:
            raise ValueError("a legal hold needs a bounded time range (--from and --to)")
        return format_time(since), format_time(until)

    @property
    def filtered(self) -> bool:
        """Whether objects must be read to decide (an actor or target was given)."""
        return any(v is not None for v in (self.actor, self.target_type, self.target_id))

    def overlaps(self, first: str, last: str) -> bool:
        """Whether events from `first` to `last` (occurred_at strings) can lie in the range."""
        since, until = self.bounds()
        return first < until and last >= since

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether one event is of the dispute: in the range, of the actor, on the target."""
        occurred = event.get("occurred_at")
        if not isinstance(occurred, str) or not self.overlaps(occurred, occurred):
            return False
        wanted = (("actor_id", self.actor), ("target_type", self.target_type), ("target_id", self.target_id))
        return all(value is None or str(event.get(name)) == value for name, value in wanted)

    def as_payload(self) -> dict[str, Any]:
        """The scope as an audit event records it."""
        since, until = self.bounds()
        payload: dict[str, Any] = {"from": since, "to": until}
        for name in ("actor", "target_type", "target_id"):
            if getattr(self, name) is not None:
                payload[name] = getattr(self, name)
        return payload


@dataclass
class HoldPlan:
    """The keys a hold applies to (full keys, sorted), and what was noticed on the way."""

    objects: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # held objects no digest lists
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """Every key to hold: the objects, then their digests."""
        return [*self.objects, *self.digests]


@dataclass(frozen=True)
class _Candidate:
    key: str
    uploaded: dt.datetime | None


class ArchiveHolds:
    """Finds the objects of a scope and sets, clears and reads their legal holds, in one bucket and prefix."""

    def __init__(self, client: S3Client, bucket: str, prefix: str, *, max_object_bytes: int) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.max_object_bytes = max_object_bytes

    def plan(self, scope: HoldScope, now: dt.datetime) -> HoldPlan:
        """The events objects that can hold the scope's events, and the digests that list them."""
        plan = HoldPlan()
        candidates = [c for c in self._covering(scope, plan) if not scope.filtered or self._holds_match(c, scope, plan)]
        plan.objects = sorted(c.key for c in candidates)
        digests, unlisted = self._digests_listing(candidates, now)
        plan.digests, plan.unlisted = sorted(digests), sorted(unlisted)
        return plan

    def apply(self, keys: Iterable[str], status: Literal["ON", "OFF"]) -> dict[str, str]:
        """Set each key's legal hold to `status` (ON/OFF); returns key → error for those that failed."""
        failed = {}
        for key in keys:
            try:
                self.client.put_object_legal_hold(Bucket=self.bucket, Key=key, LegalHold={"Status": status})
            except Exception as exc:  # every failure is reported per key; the rest go on
                failed[key] = _error_text(exc)
        return failed

    def status(self, keys: Iterable[str]) -> dict[str, str]:
        """Each key's legal hold: ON, OFF, or what kept it from being read."""
        found = {}
        for key in keys:
            try:
                hold = self.client.get_object_legal_hold(Bucket=self.bucket, Key=key)["LegalHold"]
                found[key] = str(hold.get("Status", OFF))
            except Exception as exc:
                found[key] = OFF if _no_hold(exc) else f"unknown ({_error_text(exc)})"
        return found

    # -- covering objects ---------------------------------------------------------------------------------

    def _covering(self, scope: HoldScope, plan: HoldPlan) -> Iterator[_Candidate]:
        for year, month in scope.time_range.months():
            for key in self._list(layout.partition_prefix(self.prefix, year, month)):
                relative = layout.strip_prefix(self.prefix, key)
                if relative is None or layout.parse_events_key(relative) is None:
                    continue
                candidate = self._if_overlapping(key, scope, plan)
                if candidate is not None:
                    yield candidate

    def _if_overlapping(self, key: str, scope: HoldScope, plan: HoldPlan) -> _Candidate | None:
        head = self._head(key)
        if head is None:
            return None
        meta = head.get("Metadata", {})
        first, last = meta.get(layout.META_FIRST), meta.get(layout.META_LAST)
        uploaded = head.get("LastModified")
        if not isinstance(first, str) or not isinstance(last, str) or not first or not last:
            plan.notes.append(f"{key}: no readable event bounds in its metadata; held (cannot be ruled out)")
            return _Candidate(key, uploaded)
        return _Candidate(key, uploaded) if scope.overlaps(first, last) else None

    def _holds_match(self, candidate: _Candidate, scope: HoldScope, plan: HoldPlan) -> bool:
        data = self._get(candidate.key)
        if data is None:
            return False
        try:
            lines = content.split_lines(content.gunzip_bounded(data, self.max_object_bytes))
        except (content.ObjectTooLarge, zlib.error, EOFError) as exc:
            plan.notes.append(f"{candidate.key}: unreadable ({exc}); held (cannot be ruled out)")
            return True
        for number, line in enumerate(lines, 1):
            problem = content.unreadable_line(line)
            if problem is not None:
                plan.notes.append(f"{candidate.key}: line {number} is unreadable ({problem}); held")
                return True
            if scope.matches(orjson.loads(line)):
                return True
        return False

    # -- digests ------------------------------------------------------------------------------------------

    def _digests_listing(self, candidates: list[_Candidate], now: dt.datetime) -> tuple[set[str], set[str]]:
        """The digests listing the candidates: first in the months around each upload, then onward to `now`."""
        wanted = {c.key for c in candidates}
        if not wanted:
            return set(), set()
        near: set[tuple[int, int]] = set()
        for candidate in candidates:
            near |= _months_around(candidate.uploaded or now)
        digests, found = self._scan_digests(sorted(near), wanted)
        if wanted - found:
            later = [m for m in _months_between(max(near), _month(now)) if m not in near]
            more, more_found = self._scan_digests(later, wanted - found)
            digests |= more
            found |= more_found
        return digests, wanted - found

    def _scan_digests(self, months: list[tuple[int, int]], wanted: set[str]) -> tuple[set[str], set[str]]:
        digests: set[str] = set()
        found: set[str] = set()
        for year, month in months:
            for key in self._list(layout.partition_prefix(self.prefix, year, month, layout.DIGESTS_DIR)):
                listed = _listed_keys(self._get(key)) & wanted
                if listed:
                    digests.add(key)
                    found |= listed
        return digests, found

    # -- S3 -----------------------------------------------------------------------------------------------

    def _list(self, prefix: str) -> list[str]:
        try:
            pages = list(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix))
        except Exception as exc:
            raise LegalHoldError(f"cannot list s3://{self.bucket}/{prefix}: {_error_text(exc)}; check [sink] and "
                                 "the credentials (the operator role needs s3:ListBucket)") from exc
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise LegalHoldError(f"cannot HEAD s3://{self.bucket}/{key}: {_error_text(exc)}") from exc

    def _get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise LegalHoldError(f"cannot read s3://{self.bucket}/{key}: {_error_text(exc)}") from exc
        return body


def _listed_keys(data: bytes | None) -> set[str]:
    """The object keys a digest lists (nothing for what is not a digest: verify reports that)."""
    if data is None:
        return set()
    try:
        body = orjson.loads(data)
        return {entry["key"] for entry in body["objects"] if isinstance(entry.get("key"), str)}
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return set()


def _month(moment: dt.datetime) -> tuple[int, int]:
    utc = moment.astimezone(dt.UTC)
    return utc.year, utc.month


def _shift(month: tuple[int, int], by: int) -> tuple[int, int]:
    index = month[0] * 12 + month[1] - 1 + by
    return index // 12, index % 12 + 1


def _months_around(moment: dt.datetime) -> set[tuple[int, int]]:
    center = _month(moment)
    return {_shift(center, -1), center, _shift(center, 1)}


def _months_between(first: tuple[int, int], last: tuple[int, int]) -> list[tuple[int, int]]:
    months = []
    cursor = first
    while cursor <= last:
        months.append(cursor)
        cursor = _shift(cursor, 1)
    return months


def _no_hold(exc: BaseException) -> bool:
    """GetObjectLegalHold on a version that never had a hold: S3 answers NoSuchObjectLockConfiguration."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError")


def _error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return str(exc)
