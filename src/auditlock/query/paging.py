"""Pages of a filtered result (newest first) by keyset, and finding one event by its id.

Keyset, not OFFSET: a page is "the N events just older (or newer) than this one", where an event's position is
`(occurred_at, event_id)` — the order `NEWEST_FIRST` sorts by, unique because `event_id` is. New events arriving
while someone pages (a range ending "now") then never shift a page onto rows already seen, as OFFSET would.
The cursor is the position of the page's last (older) or first (newer) row, as text for a URL.

An event id is a UUIDv7 stamped from the same clock reading as its `occurred_at` (`spool.chain`): its first 48
bits are the millisecond. `event_time_range` turns an id into that millisecond, so finding one event reads one
month partition, not the archive.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from auditlock.archive.timerange import TimeRange
from auditlock.query.columns import EVENT_NAMES
from auditlock.query.engine import AuditDatabase
from auditlock.query.filters import EventFilter

EVENT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
_OCCURRED_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_SEPARATOR = "_"


@dataclass(frozen=True)
class Cursor:
    """A position in the result: the `(occurred_at, event_id)` of one event."""

    occurred_at: str
    event_id: str

    def token(self) -> str:
        """The cursor as URL-safe text (`parse` reads it back)."""
        return f"{self.occurred_at}{_SEPARATOR}{self.event_id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor of `token`; ValueError if it is not one this module wrote."""
        occurred_at, _, event_id = token.partition(_SEPARATOR)
        if not _OCCURRED_AT.match(occurred_at) or not EVENT_ID.match(event_id):
            raise ValueError(f"{token!r} is not a page position")
        return cls(occurred_at, event_id)

    @classmethod
    def of(cls, event: dict[str, Any]) -> Cursor:
        """The position of an event (a row as `Page.events` holds it)."""
        return cls(event["occurred_at"], event["event_id"])


@dataclass(frozen=True)
class Page:
    """Up to `size` events, newest first, and the cursors of the pages beside it (None: there is none)."""

    events: list[dict[str, Any]]
    older: Cursor | None
    newer: Cursor | None


def fetch_page(database: AuditDatabase, event_filter: EventFilter, size: int, *, older_than: Cursor | None = None,
               newer_than: Cursor | None = None) -> Page:
    """The page after `older_than` (going back in time), before `newer_than`, or the newest page."""
    where, params = event_filter.where()
    if newer_than is not None:
        rows = _rows(database, f"{where} AND {_after(newer_than, params)}", params, size + 1, oldest_first=True)
        more = len(rows) > size
        rows = rows[:size][::-1]
        return Page(rows, Cursor.of(rows[-1]) if rows else newer_than, Cursor.of(rows[0]) if more else None)
    if older_than is not None:
        where = f"{where} AND {_before(older_than, params)}"
    rows = _rows(database, where, params, size + 1, oldest_first=False)
    more = len(rows) > size
    rows = rows[:size]
    newer = Cursor.of(rows[0]) if rows and older_than is not None else None
    return Page(rows, Cursor.of(rows[-1]) if more else None, newer)


def event_time_range(event_id: str) -> TimeRange:
    """The millisecond an event id was stamped in, as a range; ValueError for a malformed id."""
    if not EVENT_ID.match(event_id):
        raise ValueError(f"{event_id!r} is not an auditlock event id (a UUIDv7)")
    ms = int(event_id.replace("-", "")[:12], 16)
    since = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return TimeRange(since, since + dt.timedelta(milliseconds=1))


def find_event(database: AuditDatabase, event_id: str) -> dict[str, Any] | None:
    """The event with this id, or None."""
    rows = _rows(database, "event_id = ?", [event_id], 1, oldest_first=False)
    return rows[0] if rows else None


def _rows(database: AuditDatabase, where: str, params: list[Any], limit: int, *,
          oldest_first: bool) -> list[dict[str, Any]]:
    result = database.events(where, params, limit, oldest_first=oldest_first)
    return [dict(zip(EVENT_NAMES, row, strict=True)) for row in result.rows]


def _before(cursor: Cursor, params: list[Any]) -> str:
    params += [cursor.occurred_at, cursor.occurred_at, cursor.event_id]
    return "(occurred_at < ? OR (occurred_at = ? AND event_id < ?))"


def _after(cursor: Cursor, params: list[Any]) -> str:
    params += [cursor.occurred_at, cursor.occurred_at, cursor.event_id]
    return "(occurred_at > ? OR (occurred_at = ? AND event_id > ?))"
