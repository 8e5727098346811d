"""The tests' calendar (tests/support/calendar.py): months derived from the UTC clock, across year ends."""

from __future__ import annotations

import datetime as dt

from tests.support.calendar import NEXT_BOUNDARY, THIS_MONTH, TODAY, Month, month_of, months_ago, occurred_at, to_ns


class TestMonth:
    def test_shift_crosses_year_ends(self) -> None:
        """Shifting counts months across year ends in both directions."""
        assert Month(2026, 12).shift(1) == Month(2027, 1)
        assert Month(2027, 1).shift(-1) == Month(2026, 12)
        assert Month(2027, 3).shift(-15) == Month(2025, 12)

    def test_end_is_the_next_start(self) -> None:
        """A month is the half-open range from its first instant to the next month's."""
        december = Month(2026, 12)
        assert (december.start, december.end) == (dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
                                                  dt.datetime(2027, 1, 1, tzinfo=dt.UTC))

    def test_names(self) -> None:
        """A month as `--since` takes it, as its partition directory and as the query views' month column."""
        assert (Month(2027, 1).iso, Month(2027, 1).partition, Month(2027, 1).mm) == ("2027-01",
                                                                                     "year=2027/month=01", "01")

    def test_day_and_time(self) -> None:
        """day() gives a UTC moment of the month, noon unless a time (with a fraction) is given."""
        assert Month(2027, 2).day(3) == dt.datetime(2027, 2, 3, 12, tzinfo=dt.UTC)
        assert occurred_at(Month(2027, 2).day(3, "23:59:59.5")) == "2027-02-03T23:59:59.500000Z"


class TestClock:
    def test_this_month_is_the_clocks(self) -> None:
        """The session's month is the UTC month of the (possibly faked) clock, and the boundary is ahead."""
        assert month_of(TODAY) == THIS_MONTH
        assert months_ago(0) == THIS_MONTH
        assert THIS_MONTH.start <= TODAY < NEXT_BOUNDARY == THIS_MONTH.end

    def test_to_ns_is_the_writers_clock(self) -> None:
        """to_ns gives integer nanoseconds since the epoch, as time.time_ns does (exact, unlike a float)."""
        assert to_ns(dt.datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=dt.UTC)) == 1_000_005_000
        assert to_ns(dt.datetime(2038, 1, 19, 3, 14, 8, 999_999, tzinfo=dt.UTC)) == 2_147_483_648_999_999_000
