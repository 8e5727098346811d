"""The command's filters as one parameterised WHERE clause over the `audit` view (no value is ever spliced in).

Every filter is ANDed. Without `--type`, writers' `auditlock.writer_closed` records are left out.
`types` (repeatable `--type`) are ORed among themselves: each is a glob (`*` any run,
`?` one character, case-sensitive, as `[events] include` matches) turned into a LIKE pattern. An hmac match
looks for any of the value's hashed forms (one per key of the hmac keyring) in `payload.FIELD` or on either side
of `payload.changes.FIELD`. `text` is a
case-insensitive substring of the payload's JSON text (field names and values alike; hashed fields only match
their `hmac-sha256:` form); `any_text` ORs several such substrings (the view's search for one hashed value
under every key of the keyring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from auditlock.archive.timerange import ALL_TIME, TimeRange, format_time
from auditlock.spool.format import WRITER_CLOSED

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
NEWEST_FIRST = "occurred_at DESC, event_id DESC"
OLDEST_FIRST = "occurred_at ASC, event_id ASC"


@dataclass(frozen=True)
class HmacMatch:
    """A payload field that must hold one of `hashed`: the `hmac-sha256:` forms of the value searched for, one
    per key of the keyring (`handler.hmac_keys.HmacKeyring.candidates`)."""

    field: str
    hashed: tuple[str, ...]


@dataclass(frozen=True)
class EventFilter:
    """What `auditlock query` looks for; unset fields do not filter."""

    actor: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    types: tuple[str, ...] = ()
    ip: str | None = None
    time_range: TimeRange = ALL_TIME
    hmac: tuple[HmacMatch, ...] = ()
    text: str | None = None
    any_text: tuple[str, ...] = ()  # the payload holds one of these (the view: one hashed value's forms)

    def where(self) -> tuple[str, list[Any]]:
        """`(sql, params)`: the conditions joined by AND (`TRUE` when there are none)."""
        parts: list[str] = []
        params: list[Any] = []
        for column, value in (("actor_id", self.actor), ("target_type", self.target_type),
                              ("target_id", self.target_id), ("actor_ip", self.ip)):
            if value is not None:
                parts.append(f"{column} = ?")
                params.append(value)
        if self.types:
            parts.append("(" + " OR ".join(_type_condition(t, params) for t in self.types) + ")")
        else:  # writers' clean-end records are bookkeeping for `verify`; ask for them with --type to see them
            parts.append("event_type <> ?")
            params.append(WRITER_CLOSED)
        _time_conditions(self.time_range, parts, params)
        for match in self.hmac:
            parts.append(_hmac_condition(match, params))
        if self.text:
            parts.append("strpos(lower(CAST(payload AS VARCHAR)), ?) > 0")
            params.append(self.text.lower())
        if self.any_text:
            parts.append("(" + " OR ".join("strpos(lower(CAST(payload AS VARCHAR)), ?) > 0" for _ in self.any_text)
                         + ")")
            params += [text.lower() for text in self.any_text]
        return (" AND ".join(parts) or "TRUE"), params


def glob_to_like(pattern: str) -> str:
    """A LIKE pattern (escape character `\\`) matching what the glob matches."""
    out = []
    for char in pattern:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def _type_condition(pattern: str, params: list[Any]) -> str:
    if "*" not in pattern and "?" not in pattern:
        params.append(pattern)
        return "event_type = ?"
    params.append(glob_to_like(pattern))
    return "event_type LIKE ? ESCAPE '\\'"


def _time_conditions(time_range: TimeRange, parts: list[str], params: list[Any]) -> None:
    if time_range.since is not None:
        parts.append("occurred_at >= ?")
        params.append(format_time(time_range.since))
    if time_range.until is not None:
        parts.append("occurred_at < ?")
        params.append(format_time(time_range.until))


def _hmac_condition(match: HmacMatch, params: list[Any]) -> str:
    if not FIELD_NAME.match(match.field):
        raise ValueError(f"field name {match.field!r} must be letters, digits and underscores")
    if not match.hashed:
        raise ValueError(f"no hashed form to look for in {match.field!r}")
    paths = (f"$.{match.field}", f"$.changes.{match.field}[0]", f"$.changes.{match.field}[1]")
    one_of = ", ".join("?" for _ in match.hashed)
    for path in paths:
        params += [path, *match.hashed]
    return "(" + " OR ".join(f"json_extract_string(payload, ?) IN ({one_of})" for _ in paths) + ")"
