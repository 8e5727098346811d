"""The tests' calendar: every date a test compares with the current time is derived here, from the UTC clock.

The clock may be faked (`.ci/run` runs the `calendar`-marked tests under Debian's `faketime` just after a New
Year and in mid-month); nothing here assumes a year, a month or a day of the month. All of it is UTC, as the
archive's partitions are.

`TODAY` is read once, when the test session imports this module, so that a fixture's story and the test
asserting on it agree on "the current month" even if the real month changes while the session runs (a
session that starts on the last evening of a month). Tests that compare with the live clock (`--since 24h`)
only ever look back, so a `TODAY` that lags the live clock by the session's length is still inside their range.

Retention: an event shipped into a class of a few days needs a retain-until in the future, or a real S3 server
refuses the PUT. A month boundary that must hold such events is therefore the *next* one (`NEXT_BOUNDARY`),
never one in the past; old stories (months before the current one) go into classes long enough by
construction (`STORY_RETENTION_DAYS` in tests/support/query_env.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def utc_now() -> dt.datetime:
    """The current UTC time (whatever the process's clock says, faked or not)."""
    return dt.datetime.now(dt.UTC)


def to_ns(moment: dt.datetime) -> int:
    """A UTC datetime as the spool writer's clock gives it: integer nanoseconds since the epoch."""
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def occurred_at(moment: dt.datetime) -> str:
    """The `occurred_at` string the writer stamps for `moment` (UTC, microseconds, `Z`)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Month:
    """One UTC calendar month."""

    year: int
    month: int

    @property
    def start(self) -> dt.datetime:
        """Its first instant."""
        return dt.datetime(self.year, self.month, 1, tzinfo=dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """The first instant of the next month (a month is the half-open range start..end)."""
        return self.shift(1).start

    def shift(self, months: int) -> Month:
        """The month `months` after this one (before it when negative)."""
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def day(self, day: int, time: str = "12:00:00") -> dt.datetime:
        """A moment of this month: day `day` (1..28, so every month has it) at `time` (noon unless given)."""
        assert 1 <= day <= 28, "days 29-31 do not exist in every month; count back from `end` instead"
        hour, minute, second = time.split(":")
        whole, _, fraction = second.partition(".")
        return self.start.replace(day=day, hour=int(hour), minute=int(minute), second=int(whole),
                                  microsecond=int(fraction.ljust(6, "0")) if fraction else 0)

    @property
    def iso(self) -> str:
        """`YYYY-MM`, as `--since`/`--until` take a month."""
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def partition(self) -> str:
        """`year=YYYY/month=MM`, the archive's partition directory."""
        return f"year={self.year:04d}/month={self.month:02d}"

    @property
    def mm(self) -> str:
        """The two-digit month, as the `month` column of the query views holds it."""
        return f"{self.month:02d}"


def month_of(moment: dt.datetime) -> Month:
    """The UTC month a moment falls in."""
    utc = moment.astimezone(dt.UTC)
    return Month(utc.year, utc.month)


TODAY = utc_now()
"""The session's "now", read once at import (see the module docstring)."""

THIS_MONTH = month_of(TODAY)


def months_ago(count: int) -> Month:
    """The month `count` months before the current one (`months_ago(0)` is the current month)."""
    return THIS_MONTH.shift(-count)


NEXT_MONTH = THIS_MONTH.shift(1)

NEXT_BOUNDARY = NEXT_MONTH.start
"""The next UTC month boundary: events just before and after it are in two months, and have a retain-until in
the future in any class (for a day after the boundary, longer than any session)."""
