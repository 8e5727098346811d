"""`--since` / `--until`: the time forms a query accepts, and the month partitions a range covers. All UTC.

Accepted forms (a `TimeFormatError` lists them for anything else):

- `now`
- relative, counted back from now: `90s`, `30m`, `24h`, `7d`, `2w`
- a month `2026-11` or a date `2026-11-26`: as `--since` its first instant; as `--until` the end of it (the
  range stops before the next month / day), so `--since 2026-11-01 --until 2026-11-30` is all of November
- RFC 3339 `2026-11-26T20:14:50Z`, `2026-11-26T21:14:50.5+01:00` (a space may replace the `T`; up to nine
  fraction digits, cut to microseconds). Without an offset the time is taken as UTC — never as local time.

A range is half-open: `since <= occurred_at < until`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

FORMS = "now, 24h/7d-style relative times (s, m, h, d, w), YYYY-MM, YYYY-MM-DD or RFC 3339 (2026-11-26T20:14:50Z)"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^(\d{1,9})([smhdw])\Z")
_MONTH = re.compile(r"^(\d{4})-(\d{2})\Z")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})\Z")
_DATETIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})?\Z"
)


class TimeFormatError(ValueError):
    """A time argument is not one of the accepted forms, or names an impossible date."""

    def __init__(self, message: str, flag: str | None = None) -> None:
        super().__init__(message)
        self.flag = flag  # the command-line flag it came from, when known


def parse_time(text: str, now: dt.datetime, *, end: bool = False) -> dt.datetime:
    """An aware UTC datetime for `text`; `end=True` reads a month or date as its end (exclusive)."""
    value = text.strip()
    if value == "now":
        return now
    try:
        return _parse(value, now, end=end)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, TimeFormatError):
            raise
        raise TimeFormatError(f"{text!r} is not a valid time: {exc}") from exc


def _parse(value: str, now: dt.datetime, *, end: bool) -> dt.datetime:
    if match := _RELATIVE.match(value):
        return now - dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if match := _MONTH.match(value):
        start = dt.datetime(int(match[1]), int(match[2]), 1, tzinfo=dt.UTC)
        return next_month(start) if end else start
    if match := _DATE.match(value):
        start = dt.datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=dt.UTC)
        return start + dt.timedelta(days=1) if end else start
    if match := _DATETIME.match(value):
        return _parse_datetime(match)
    raise TimeFormatError(f"{value!r} is not a time; use {FORMS}")


def _parse_datetime(match: re.Match[str]) -> dt.datetime:
    fraction = (match["frac"] or "")[:6].ljust(6, "0")
    zone = match["zone"] or "Z"
    parsed = dt.datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{zone.upper()}")
    return parsed.astimezone(dt.UTC)


def next_month(moment: dt.datetime) -> dt.datetime:
    """The first instant of the month after `moment`'s month."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """The archive's `occurred_at` form of a time (UTC, microseconds, `Z`): comparable as a string."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class TimeRange:
    """A half-open range `since <= t < until`; either end may be open (None)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise TimeFormatError(
                f"the range is empty: since {format_time(self.since)} is not before until {format_time(self.until)}"
            )

    @property
    def bounded(self) -> bool:
        """Whether both ends are given (the months can then be listed without asking S3)."""
        return self.since is not None and self.until is not None

    def contains_month(self, year: int, month: int) -> bool:
        """Whether any instant of the month lies in the range."""
        start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
        after_since = self.since is None or next_month(start) > self.since
        before_until = self.until is None or start < self.until
        return after_since and before_until

    def month_count(self) -> int:
        """How many months `months` yields (without yielding them); only for a bounded range."""
        if self.since is None or self.until is None:
            raise ValueError("an open range has no fixed list of months; discover the partitions instead")
        last = self.until - dt.timedelta(microseconds=1)
        return (last.year * 12 + last.month) - (self.since.year * 12 + self.since.month) + 1

    def months(self) -> Iterator[tuple[int, int]]:
        """Every (year, month) the range touches, oldest first; only for a bounded range."""
        if self.since is None or self.until is None:
            raise ValueError("an open range has no fixed list of months; discover the partitions instead")
        cursor = dt.datetime(self.since.year, self.since.month, 1, tzinfo=dt.UTC)
        while cursor < self.until:
            yield cursor.year, cursor.month
            cursor = next_month(cursor)


ALL_TIME = TimeRange()


def parse_range(since: str | None, until: str | None, now: dt.datetime) -> TimeRange:
    """The `--since`/`--until` range, both resolved against one `now`; errors name the flag (`.flag`)."""
    bounds = {}
    for flag, text, end in (("--since", since, False), ("--until", until, True)):
        try:
            bounds[flag] = None if text is None else parse_time(text, now, end=end)
        except TimeFormatError as exc:
            raise TimeFormatError(str(exc), flag) from exc
    try:
        return TimeRange(bounds["--since"], bounds["--until"])
    except TimeFormatError as exc:
        raise TimeFormatError(str(exc), "--until") from exc
