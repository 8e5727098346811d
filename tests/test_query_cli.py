"""`auditlock query` without S3: time parsing (with Hypothesis), filters as SQL, output formats, usage errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import subprocess
import sys
from pathlib import Path

import duckdb
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditlock.archive.timerange import TimeFormatError, TimeRange, format_time, parse_time
from auditlock.cli import main
from auditlock.query.cache import DownloadProgress
from auditlock.query.engine import Result
from auditlock.query.filters import glob_to_like
from auditlock.query.output import write

NOW = dt.datetime(2026, 11, 26, 20, 14, 50, 123456, tzinfo=dt.UTC)
moments = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9998, 12, 31),
                       timezones=st.just(dt.UTC))
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: dt.timedelta(minutes=m))


class TestTimeParsing:
    def test_forms(self) -> None:
        """now, relative, month, date and RFC 3339 forms give the documented instants, all UTC."""
        assert parse_time("now", NOW) == NOW
        assert parse_time("24h", NOW) == NOW - dt.timedelta(hours=24)
        assert parse_time("7d", NOW) == NOW - dt.timedelta(days=7)
        assert parse_time("2w", NOW) == NOW - dt.timedelta(weeks=2)
        assert parse_time("2026-11", NOW) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        assert parse_time("2026-12", NOW, end=True) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
        assert parse_time("2026-11-30", NOW, end=True) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        assert parse_time("2026-11-26T21:14:50.5+01:00", NOW) == dt.datetime(2026, 11, 26, 20, 14, 50, 500000,
                                                                            tzinfo=dt.UTC)
        assert parse_time("2026-11-26 20:14", NOW) == dt.datetime(2026, 11, 26, 20, 14, tzinfo=dt.UTC)
        assert parse_time("2026-11-26T20:14:50.123456789Z", NOW).microsecond == 123456

    @pytest.mark.parametrize("text", ["yesterday", "24", "h24", "2026-13", "2026-02-30", "2026-11-26T25:00Z",
                                      "2026-11-26T20:00+25:00", "26/11/2026", "", "-7d"])
    def test_bad_forms_are_refused(self, text: str) -> None:
        """Anything else raises TimeFormatError quoting the input."""
        with pytest.raises(TimeFormatError, match="time"):
            parse_time(text, NOW)

    @given(moment=moments, offset=offsets)
    def test_rfc3339_round_trip(self, moment: dt.datetime, offset: dt.timedelta) -> None:
        """Any instant written in RFC 3339 with any offset parses back to the same UTC instant."""
        text = moment.astimezone(dt.timezone(offset)).isoformat()
        assert parse_time(text, NOW) == moment

    @given(moment=moments)
    def test_archive_form_round_trips_and_sorts(self, moment: dt.datetime) -> None:
        """format_time writes the archive's occurred_at form; it parses back and sorts as time does."""
        text = format_time(moment)
        assert len(text) == 27
        assert parse_time(text, NOW) == moment
        assert (text < format_time(moment + dt.timedelta(microseconds=1))) is True

    @given(amount=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from("smhdw"))
    def test_relative(self, amount: int, unit: str) -> None:
        """`N<unit>` is now minus N units; reaching before year 1 is a clear error, not a crash."""
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit] * amount
        try:
            expected = NOW - dt.timedelta(seconds=seconds)
        except OverflowError:
            with pytest.raises(TimeFormatError, match="out of range"):
                parse_time(f"{amount}{unit}", NOW)
        else:
            assert parse_time(f"{amount}{unit}", NOW) == expected

    @given(since=moments, length=st.integers(min_value=1, max_value=10**9))
    def test_months_cover_the_range(self, since: dt.datetime, length: int) -> None:
        """A range's months are contiguous, start with since's month and end with the month before until."""
        until = since + dt.timedelta(seconds=length)
        months = list(TimeRange(since, until).months())
        last = until - dt.timedelta(microseconds=1)
        assert months[0] == (since.year, since.month)
        assert months[-1] == (last.year, last.month)
        assert all(TimeRange(since, until).contains_month(y, m) for y, m in months)
        steps = [(b[0] * 12 + b[1]) - (a[0] * 12 + a[1]) for a, b in itertools.pairwise(months)]
        assert set(steps) <= {1}

    def test_empty_range_is_refused(self) -> None:
        """since >= until is an error naming both ends."""
        with pytest.raises(TimeFormatError, match="the range is empty"):
            TimeRange(NOW, NOW)


class TestGlobs:
    @given(st.text(alphabet="ab_.%*?\\", max_size=8), st.text(alphabet="ab_.%\\", max_size=8))
    def test_like_matches_what_fnmatch_matches(self, pattern: str, name: str) -> None:
        """The LIKE pattern of a glob matches exactly the names fnmatchcase matches (for * and ?)."""
        import fnmatch

        escaped = pattern.replace("[", "[[]")
        like = duckdb.execute("SELECT ? LIKE ? ESCAPE '\\'", [name, glob_to_like(pattern)]).fetchone()
        assert like is not None
        assert like[0] is fnmatch.fnmatchcase(name, escaped)


class TestOutput:
    ROW = ("auditlock/1", "id-1", "order.updated", "2026-11-26T20:14:50.123456Z", "user#1", "user", None, "Order",
           "7", '{"changes":{"status":["new","paid"]}}', "shop", "h", "standard", None, None, "w", 0, "0" * 64)

    def result(self) -> Result:
        """A one-event result."""
        from auditlock.query.columns import EVENT_NAMES

        return Result(list(EVENT_NAMES), iter([self.ROW]))

    def test_jsonl_embeds_the_payload(self) -> None:
        """JSONL lines are the events, payload an object."""
        out = io.StringIO()
        assert write(self.result(), "jsonl", out, events=True) == 1
        assert '"payload":{"changes":{"status":["new","paid"]}}' in out.getvalue()

    def test_csv(self) -> None:
        """CSV has a header and every column, null as empty."""
        out = io.StringIO()
        write(self.result(), "csv", out, events=True)
        header, line = out.getvalue().splitlines()
        assert header.startswith("schema,event_id,event_type,occurred_at")
        assert ',"{""changes"":{""status"":[""new"",""paid""]}}",' in line

    @pytest.mark.parametrize("typed", ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tx"])
    def test_csv_neutralises_formula_like_text(self, typed: str) -> None:
        """Text that a spreadsheet would run as a formula gets a leading apostrophe in CSV; JSONL keeps it exact."""
        row = list(self.ROW)
        row[4] = row[8] = typed  # actor_id and target_id: what a user may have typed
        from auditlock.query.columns import EVENT_NAMES

        csv_out, jsonl_out = io.StringIO(), io.StringIO()
        write(Result(list(EVENT_NAMES), iter([tuple(row)])), "csv", csv_out, events=True)
        write(Result(list(EVENT_NAMES), iter([tuple(row)])), "jsonl", jsonl_out, events=True)
        [parsed] = list(csv.DictReader(io.StringIO(csv_out.getvalue())))
        assert parsed["actor_id"] == parsed["target_id"] == "'" + typed
        assert parsed["seq"] == "0"
        assert orjson.loads(jsonl_out.getvalue())["actor_id"] == typed

    def test_table(self) -> None:
        """The table shows time, type, actor, target and payload on one line, cut to the width."""
        out = io.StringIO()
        write(self.result(), "table", out, events=True, width=80)
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["occurred_at", "event_type", "actor", "actor_ip", "target", "payload"]
        assert "Order:7" in lines[2]
        assert all(len(line) <= 80 for line in lines)
        assert lines[-1] == "(1 row)"

    def test_progress_only_for_long_downloads(self) -> None:
        """Progress appears once the delay has passed, and ends with a final line."""
        ticks = iter([0.0, 0.5, 2.0, 2.1, 3.0])  # start, three advances, finish
        stream = io.StringIO()
        progress = DownloadProgress(3, 3 * 2**20, stream, clock=lambda: next(ticks))
        progress.advance(2**20)
        assert stream.getvalue() == ""
        progress.advance(2**20)
        progress.advance(2**20)
        progress.finish()
        assert stream.getvalue().splitlines()[-1].startswith("auditlock query: downloaded 3/3 objects, 3.0/3.0 MiB")


class TestUsageErrors:
    @pytest.mark.parametrize(("argv", "message"), [
        (["--since", "yesterday"], "argument --since: 'yesterday' is not a time"),
        (["--until", "2026-02-30"], "argument --until: '2026-02-30' is not a valid time"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], "argument --until: the range is empty"),
        (["--type", "Auth.*"], "argument --type: 'Auth.*' is not an event type or glob"),
        (["--ip", "10.0.0.300"], "argument --ip: '10.0.0.300' is not an IPv4 or IPv6 address"),
        (["--hmac-field", "email"], "argument --hmac-field: 'email' is not FIELD=VALUE"),
        (["--hmac-field", "a.b=x"], "argument --hmac-field: 'a.b=x' is not FIELD=VALUE"),
        (["--sql", "SELECT 1", "--actor", "x"], "argument --sql: cannot be combined with --actor"),
        (["--sql", "  "], "argument --sql: is empty"),
    ])
    def test_bad_input(self, argv: list[str], message: str, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
        """Bad input exits 2 with a message naming the flag and the problem, before any config or S3 access."""
        assert main(["query", "--config", str(tmp_path / "missing.toml"), *argv]) == 2
        assert message in capsys.readouterr().err

    @pytest.mark.parametrize(("argv", "message"), [
        (["--limit", "0"], "argument --limit: 0 is not positive"),
        (["--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ])
    def test_argparse_errors(self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Malformed flag values are argparse usage errors (exit 2)."""
        with pytest.raises(SystemExit) as info:
            main(["query", *argv])
        assert info.value.code == 2
        assert message in capsys.readouterr().err

    def test_missing_config_exits_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing config file is not a usage error: exit 1 naming the file."""
        assert main(["query", "--config", str(tmp_path / "missing.toml")]) == 1
        assert "missing.toml does not exist" in capsys.readouterr().err

    def test_bad_sql_names_the_flag(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An SQL error in --sql is a usage error naming --sql (checked without S3: no bucket objects)."""
        from auditlock.query.engine import AuditDatabase
        from auditlock.query.errors import UsageError

        database = AuditDatabase([])
        with pytest.raises(UsageError, match=r"argument --sql: .*no_such_column"):
            database.sql("SELECT no_such_column FROM audit")
        assert database.sql("SELECT count(*) AS n FROM audit").rows.__next__() == (0,)


class TestLightImport:
    def test_cli_does_not_import_duckdb_or_boto3(self) -> None:
        """`import auditlock` and building the CLI parser import neither duckdb nor boto3."""
        code = ("import sys, auditlock, auditlock.cli; auditlock.cli.build_parser(); "
                "print(sorted(m for m in ('duckdb', 'boto3', 'botocore') if m in sys.modules))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "[]"
