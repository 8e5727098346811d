"""The search form: query-string parameters in, an `EventFilter` (the one `auditlock query` uses) out.

Parameters (all optional, all GET, so a search is a link): `actor`, `target_type`, `target_id`, `type` (event
types or globs, separated by commas or spaces), `since`, `until` (the `--since`/`--until` forms: `24h`, `7d`,
`2026-11`, `2026-11-26`, RFC 3339; all UTC; a date as `until` means through its end), `text` (a substring of the
payload, any case; several `hmac-sha256:` forms separated by spaces, commas or newlines — what `auditlock hash
VALUE` prints, one per key of the keyring — match any of them, so one search finds a hashed value written before
and after a key rotation: the view holds no hmac key and records no plain value), `spool` (also events not yet
shipped), and the page position `older` / `newer`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from auditlock.archive.timerange import TimeFormatError, format_time, parse_range
from auditlock.query.filters import EventFilter
from auditlock.query.paging import Cursor

FIELDS = ("actor", "target_type", "target_id", "type", "since", "until", "text")
LABELS = {"actor": "Actor", "target_type": "Target type", "target_id": "Target id", "type": "Event type",
          "since": "Since (UTC)", "until": "Until (UTC)", "text": "Text in payload"}
QUICK_RANGES = (("24h", "Last 24 h"), ("7d", "Last 7 days"), ("30d", "Last 30 days"))
MAX_INPUT = 200
MAX_TEXT_INPUT = 1200  # `text` may hold a dozen pasted hashed forms (about 90 characters each)
_HASHED_FORM = re.compile(r"hmac-sha256:(?:[A-Za-z0-9_-]{1,32}:)?[0-9a-f]{64}\Z")
_TYPE_PATTERN = re.compile(r"^[a-z0-9_.*?]+\Z")
_SEPARATORS = re.compile(r"[\s,]+")


class FormError(ValueError):
    """A search parameter is wrong; `field` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{LABELS.get(field_name, field_name)}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class SearchForm:
    """The submitted search: raw values (stripped, empty ones left out), the spool switch, the page."""

    values: dict[str, str] = field(default_factory=dict)
    include_spool: bool = False
    older: Cursor | None = None
    newer: Cursor | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> SearchForm:
        """Read the query string; a `FormError` names the first bad parameter."""
        values = {}
        for name in FIELDS:
            value = params.get(name, "").strip()
            limit = MAX_TEXT_INPUT if name == "text" else MAX_INPUT
            if len(value) > limit:
                raise FormError(name, f"is longer than {limit} characters")
            if value:
                values[name] = value
        return cls(values, params.get("spool") == "1", _cursor(params, "older"), _cursor(params, "newer"))

    @property
    def submitted(self) -> bool:
        """Whether anything was asked (an empty form shows no results, and records no search)."""
        return bool(self.values) or self.include_spool

    def event_filter(self, now: dt.datetime) -> EventFilter:
        """The filter of this search, with the time range resolved against `now`."""
        try:
            time_range = parse_range(self.values.get("since"), self.values.get("until"), now)
        except TimeFormatError as exc:
            raise FormError("until" if exc.flag == "--until" else "since", str(exc)) from exc
        text = self.values.get("text")
        forms = hashed_forms(text or "")
        return EventFilter(actor=self.values.get("actor"), target_type=self.values.get("target_type"),
                           target_id=self.values.get("target_id"), types=self._types(), time_range=time_range,
                           text=None if forms else text, any_text=forms)

    def audit_payload(self, event_filter: EventFilter) -> dict[str, Any]:
        """What the audit event of this search records: the filters as given, and the range as resolved."""
        time_range = event_filter.time_range
        payload: dict[str, Any] = {
            "filters": {**self.values, **({"spool": True} if self.include_spool else {})},
            "range": {"since": format_time(time_range.since) if time_range.since else None,
                      "until": format_time(time_range.until) if time_range.until else None},
        }
        if self.older or self.newer:
            payload["page"] = {"older": self.older.token() if self.older else None,
                               "newer": self.newer.token() if self.newer else None}
        return payload

    def query(self, **changes: str | None) -> str:
        """The query string of this search (no page position), with `changes` applied (None removes)."""
        params: dict[str, str] = dict(self.values)
        if self.include_spool:
            params["spool"] = "1"
        for name, value in changes.items():
            if value is None:
                params.pop(name, None)
            else:
                params[name] = value
        return urlencode(params)

    def _types(self) -> tuple[str, ...]:
        patterns = tuple(p for p in _SEPARATORS.split(self.values.get("type", "")) if p)
        for pattern in patterns:
            if not _TYPE_PATTERN.match(pattern):
                raise FormError("type", f"{pattern!r} is not an event type or glob: lowercase letters, digits, "
                                        "'_' and '.' (order.updated); a glob may use * and ?")
        return patterns


def hashed_forms(text: str) -> tuple[str, ...]:
    """The hashed forms of a text made only of several `hmac-sha256:` values (`auditlock hash` output); else ()."""
    tokens = tuple(token for token in _SEPARATORS.split(text) if token)
    if len(tokens) < 2 or not all(_HASHED_FORM.match(token) for token in tokens):
        return ()
    return tokens


def _cursor(params: Mapping[str, str], name: str) -> Cursor | None:
    token = params.get(name)
    if not token:
        return None
    try:
        return Cursor.parse(token)
    except ValueError as exc:
        raise FormError(name, "is not a page position from this view; start again from the first page") from exc
