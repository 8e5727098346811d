"""The archive: the on-S3 contract between the agent and every reader (query, verify, Athena).

Layout (DESIGN.md, "The archive"):

    s3://<bucket>/<prefix>/events/year=YYYY/month=MM/<first>-<class>-<content>.jsonl.gz
    s3://<bucket>/<prefix>/digests/year=YYYY/month=MM/...json          (written from issue #4 on)

Invariants
- An object holds events of one UTC month of `occurred_at` and one retention class, as gzip'd JSONL: the
  exact spool lines, in batch order (segments sorted by name, lines in file order).
- The object's name is derived from its content only: `<first>` is the earliest `occurred_at` in it
  (`YYYYMMDDTHHMMSSZ`), `<content>` the first 32 hex digits of the SHA-256 of the *uncompressed* JSONL.
  The same events always give the same key, whatever the crash and retry history.
- Metadata (`x-amz-meta-*`): `auditlock-sha256` (of the stored gzip bytes), `auditlock-content-sha256`
  (of the uncompressed JSONL — the identity used to decide "already delivered"), `auditlock-events`,
  `auditlock-first`, `auditlock-last` (occurred_at bounds), `auditlock-schema` = "auditlock/1".
- Tags: `auditlock-retention=<class>`, `auditlock-schema=1` (the lifecycle policy filters on the first).
- Object Lock: mode of the class, retain-until = the latest `occurred_at` in the object + the class's days,
  but never earlier than the PUT's time + `LATE_LOCK_FLOOR` (one hour). An event whose class's retention has
  already ended, or nearly, when it is shipped (an old spool restored, a long outage, a short class, clock skew)
  would otherwise get a retain-until in the past, which S3 rejects (400 InvalidArgument) and would reject on
  every retry — it is stored and locked for the floor instead, never dropped. Why one hour: it keeps the request
  well clear of "in the past" by S3's clock (SigV4 already refuses requests more than 15 minutes off, so the
  skew left is below that), it is far shorter than the shortest class (1 day), so only an object shipped nearly a
  whole class late is floored and the agent's own records (written at shipping time) never are; and a floor of
  at most one day keeps the lifecycle's expiry (`days` ≥ 1 after the object's creation) after the lock's end.
  Once the lock ends, the lifecycle expires the object `days` after its creation: at least a day after it
  reached the archive. Such objects are counted, logged and recorded in the trail by the agent (docs/agent.md,
  "Late events").
- Determinism: the floored retain-until depends on the PUT's time, so it is *not* part of what identifies an
  object — key and metadata come from the content only, and "already delivered" is decided by HEAD on the
  content hash. A re-delivery after a crash finds the object by HEAD and never PUTs again, whatever its lock.
  The digest records the events' bounds, from which `verify` derives the minimum lock (a floored lock is
  longer than that minimum, never shorter).
- Objects are never overwritten or deleted by auditlock. A key that exists with a different content hash is a
  conflict: an alarm, never an overwrite.
- `parse_events_key` is the one definition of "an object of the archive" for every reader (query, the view,
  verify): exactly `events/year=YYYY/month=MM/<YYYYMMDDTHHMMSSZ>-<class>-<32 hex>.jsonl.gz` relative to the
  prefix, the stamp in the partition's month, the class a valid class name. Anything else under the prefix
  (nested keys, `..`, `?`, control characters, over-long names) is not an archive object: verify reports it
  (`foreign object`), query and the view never read it and say so in a note.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import urlencode

EVENTS_DIR = "events"
DIGESTS_DIR = "digests"
OBJECT_SUFFIX = ".jsonl.gz"
CONTENT_TYPE = "application/gzip"

META_SHA256 = "auditlock-sha256"
META_CONTENT_SHA256 = "auditlock-content-sha256"
META_EVENTS = "auditlock-events"
META_FIRST = "auditlock-first"
META_LAST = "auditlock-last"
META_SCHEMA = "auditlock-schema"

TAG_RETENTION = "auditlock-retention"
TAG_SCHEMA = "auditlock-schema"
SCHEMA_TAG_VALUE = "1"

# The shortest lock an object gets, counted from the PUT (see the module docstring).
LATE_LOCK_FLOOR = dt.timedelta(hours=1)


_EVENTS_KEY = re.compile(
    r"events/year=(?P<year>\d{4})/month=(?P<month>\d{2})/"
    r"(?P<name>(?P<stamp>\d{8}T\d{6}Z)-(?P<retention>[a-z0-9][a-z0-9_-]{0,62})-(?P<content>[0-9a-f]{32})"
    + re.escape(OBJECT_SUFFIX) + r")\Z"
)


@dataclass(frozen=True)
class ArchiveKey:
    """An events object's key, relative to the prefix, and what its name says."""

    relative: str
    year: int
    month: int
    name: str
    retention: str
    content: str


def parse_events_key(relative: str) -> ArchiveKey | None:
    """The archive key `relative` (a key with the prefix removed) names, or None if it is not an archive object."""
    match = _EVENTS_KEY.fullmatch(relative)
    if match is None:
        return None
    year, month = int(match["year"]), int(match["month"])
    if not 1 <= month <= 12 or match["stamp"][:6] != f"{year:04d}{month:02d}":
        return None
    return ArchiveKey(relative, year, month, match["name"], match["retention"], match["content"])


def strip_prefix(prefix: str, key: str) -> str | None:
    """`key` relative to `prefix` (`events/…`), or None if it is not under the prefix."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return key[len(base):] if key.startswith(base) else None


def partition_prefix(prefix: str, year: int, month: int, kind: str = EVENTS_DIR) -> str:
    """`<prefix>/events/year=YYYY/month=MM/` — the Hive-style partition Athena's projection expects."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{base}{kind}/year={year:04d}/month={month:02d}/"


def object_key(prefix: str, first_occurred_at: str, retention: str, content_sha256: str) -> str:
    """The key of an events object, from its content (see the module docstring)."""
    year, month = int(first_occurred_at[:4]), int(first_occurred_at[5:7])
    stamp = first_occurred_at[:19].replace("-", "").replace(":", "") + "Z"
    return f"{partition_prefix(prefix, year, month)}{stamp}-{retention}-{content_sha256[:32]}{OBJECT_SUFFIX}"


def parse_occurred_at(value: str) -> dt.datetime:
    """An `occurred_at` string as an aware UTC datetime."""
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def retain_until(last_occurred_at: str, days: int) -> dt.datetime:
    """The retention a class asks for: the object's latest event plus the class's days (what `verify` checks)."""
    return parse_occurred_at(last_occurred_at) + dt.timedelta(days=days)


def lock_until(last_occurred_at: str, days: int, now: dt.datetime) -> tuple[dt.datetime, bool]:
    """The retain-until to PUT with at `now`: the class's `retain_until`, raised to `now + LATE_LOCK_FLOOR`
    when it would end sooner. Returns the date and whether the floor was applied (a late object)."""
    wanted = retain_until(last_occurred_at, days)
    floor = now + LATE_LOCK_FLOOR
    return (floor, True) if wanted < floor else (wanted, False)


def object_tags(retention: str) -> str:
    """The URL-encoded tag set of an events object."""
    return urlencode({TAG_RETENTION: retention, TAG_SCHEMA: SCHEMA_TAG_VALUE})
