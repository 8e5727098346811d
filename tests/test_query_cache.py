"""The bounded query cache against an archive the real agent wrote to moto: stale entries and the least recently
used go first, nothing a running query reads is evicted (in this process or another), and the command line,
`[query]` and the view agree on the bound and the directory."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from auditlock.archive.timerange import TimeRange
from auditlock.cli import main
from auditlock.config import QueryConfig
from auditlock.query.cache import make_client
from auditlock.query.eviction import PENDING_NAME, parse_size, trim
from auditlock.query.filters import EventFilter
from auditlock.query.session import QueryReport, QueryRequest, execute, open_database
from auditlock.ui.app import build_app
from tests.support.query_env import LAST, MIDDLE, QueryEnv
from tests.support.ui_env import CLIENT, PASSWORD, SESSION_KEY, UiEnv

LONG_AGO = 1_000_000_000.0  # 2001: "used long ago", earlier than any stamp a query sets
# Two of the story's months (tests/support/calendar.py): "September" and "October" below stand for them.
SEPTEMBER = TimeRange(MIDDLE.start, MIDDLE.end)
OCTOBER = TimeRange(LAST.start, LAST.end)
EVERYTHING = TimeRange()
HUGE = 2**40


def entries(cache: Path) -> dict[Path, int]:
    """Every cache entry and its size."""
    return {p: p.stat().st_size for p in cache.rglob("*.jsonl.gz")}


def month_of(path: Path) -> str:
    """`year=YYYY/month=MM` of an entry."""
    return f"{path.parent.parent.name}/{path.parent.name}"


def in_month(cache: Path, month: str) -> dict[Path, int]:
    """The entries of one month partition."""
    return {p: size for p, size in entries(cache).items() if month_of(p) == month}


def run(env: QueryEnv, time_range: TimeRange, cache: Path, max_bytes: int) -> tuple[QueryReport, str]:
    """`execute` a JSONL query over the range with this bound; the report and the output."""
    out = io.StringIO()
    request = QueryRequest(EventFilter(time_range=time_range), cache_dir=cache, fmt="jsonl",
                           cache_max_bytes=max_bytes)
    report = execute(request, env.config, out, io.StringIO(), client=make_client(env.config.sink))
    return report, out.getvalue()


def age_all(cache: Path) -> None:
    """Mark every entry as used long ago."""
    for path in entries(cache):
        os.utime(path, (LONG_AGO, LONG_AGO))


class TestBound:
    def test_query_larger_than_the_bound_answers_then_trims(self, creds: QueryEnv, tmp_path: Path) -> None:
        """A query over more than the bound answers in full, then leaves the cache within the bound."""
        _, unbounded = run(creds, EVERYTHING, tmp_path / "big", HUGE)
        total = sum(entries(tmp_path / "big").values())
        bound = total // 2
        report, bounded = run(creds, EVERYTHING, tmp_path / "small", bound)
        assert bounded == unbounded
        assert report.trim is not None
        assert report.trim.removed > 0
        assert sum(entries(tmp_path / "small").values()) <= bound
        assert not (tmp_path / "small" / PENDING_NAME).exists()

    def test_zero_keeps_nothing(self, creds: QueryEnv, tmp_path: Path) -> None:
        """With a bound of 0 the query still answers and the cache is empty afterwards, empty folders too."""
        _, out = run(creds, SEPTEMBER, tmp_path, 0)
        assert out.count("\n") > 0
        assert entries(tmp_path) == {}
        assert list((tmp_path / "archive").iterdir()) == []

    def test_least_recently_used_go_first(self, creds: QueryEnv, tmp_path: Path) -> None:
        """After downloading October, the entries used longest ago go first; September, used since, stays."""
        run(creds, EVERYTHING, tmp_path, HUGE)
        age_all(tmp_path)
        run(creds, SEPTEMBER, tmp_path, HUGE)  # downloads nothing, stamps September as used
        october = in_month(tmp_path, LAST.partition)
        for path in october:
            path.unlink()
        september = in_month(tmp_path, MIDDLE.partition)
        bound = sum(september.values()) + sum(october.values())
        report, _ = run(creds, OCTOBER, tmp_path, bound)  # downloads October, then trims to the bound
        assert report.fetch.downloaded == len(october)
        assert set(entries(tmp_path)) == set(september) | set(october)

    def test_stale_entries_go_first_even_under_the_bound(self, creds: QueryEnv, tmp_path: Path) -> None:
        """An entry whose ETag S3 no longer lists goes, although more recently used than every other entry, and
        although the cache is within its bound; a crashed download's `.part-*` file goes too."""
        run(creds, EVERYTHING, tmp_path, HUGE)
        age_all(tmp_path)
        current = next(iter(in_month(tmp_path, MIDDLE.partition)))
        stem = current.name.removesuffix(".jsonl.gz").rsplit(".", 1)[0]
        stale = current.with_name(f"{stem}.0123456789abcdef0123456789abcdef.jsonl.gz")
        shutil.copyfile(current, stale)
        os.utime(stale, (LONG_AGO + 3600, LONG_AGO + 3600))
        part = current.with_name(".part-crashed")
        part.write_bytes(b"half")
        kept = entries(tmp_path)
        del kept[stale]
        report, _ = run(creds, SEPTEMBER, tmp_path, HUGE)
        assert report.fetch.stale == [stale]
        assert report.trim is not None
        assert report.trim.removed == 1
        assert entries(tmp_path) == kept
        assert not part.exists()

    def test_prune_cache(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--prune-cache trims to --cache-max-bytes without querying, least recently used first; 0 empties."""
        run(creds, EVERYTHING, tmp_path, HUGE)
        age_all(tmp_path)
        run(creds, SEPTEMBER, tmp_path, HUGE)
        september = in_month(tmp_path, MIDDLE.partition)
        status, out, err = creds.query("--prune-cache", "--cache-max-bytes", str(sum(september.values())),
                                       cache=tmp_path)
        assert (status, err) == (0, "")
        assert "removed" in out
        assert entries(tmp_path) == september
        status, _, _ = creds.query("--prune-cache", "--cache-max-bytes", "0", cache=tmp_path)
        assert (status, entries(tmp_path)) == (0, {})


class TestInUse:
    def test_a_running_query_is_never_trimmed_under(self, creds: QueryEnv, tmp_path: Path) -> None:
        """While one query reads September, another downloading October with a bound of 0 trims nothing; the
        first still answers in full and trims when its view closes."""
        config = creds.config
        client = make_client(config.sink)
        with open_database(config, SEPTEMBER, tmp_path, None, client=client, cache_max_bytes=0) as (database, _):
            september = in_month(tmp_path, MIDDLE.partition)
            before = database.count("TRUE", [])
            other, _ = run(creds, OCTOBER, tmp_path, 0)
            assert other.fetch.downloaded > 0
            assert other.trim is None
            assert (tmp_path / PENDING_NAME).exists()
            assert set(september) <= set(entries(tmp_path))
            assert database.count("TRUE", []) == before > 0
        assert entries(tmp_path) == {}

    def test_another_process_does_not_trim_under_a_running_query(self, creds: QueryEnv, tmp_path: Path) -> None:
        """A second `auditlock query` process with --cache-max-bytes 0 answers, and leaves the files another
        process is reading (and its own downloads, for the next trim)."""
        config = creds.config
        with open_database(config, SEPTEMBER, tmp_path, None, client=make_client(config.sink),
                           cache_max_bytes=HUGE) as (database, _):
            september = in_month(tmp_path, MIDDLE.partition)
            result = subprocess.run(
                [sys.executable, "-c", "import sys; from auditlock.cli import main; sys.exit(main(sys.argv[1:]))",
                 "query", "--config", str(creds.archive.config_path), "--cache-dir", str(tmp_path),
                 "--cache-max-bytes", "0", "--since", LAST.iso, "--until", LAST.iso, "--format", "jsonl"],
                capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stderr
            assert "order.deleted" in result.stdout
            assert set(september) <= set(entries(tmp_path))
            assert in_month(tmp_path, LAST.partition)
            assert database.count("TRUE", []) > 0
        assert not (tmp_path / PENDING_NAME).exists()  # the first query's lease ended, and it trimmed


class TestSettings:
    def test_cli_reads_the_query_section(self, creds: QueryEnv, tmp_path: Path) -> None:
        """Without --cache-dir/--cache-max-bytes, `auditlock query` uses [query] cache_dir and cache_max_bytes."""
        config = tmp_path / "auditlock.toml"
        config.write_text(creds.archive.config_path.read_text() + '\n[query]\ncache_dir = "cache"\n'
                          "cache_max_bytes = 0\n")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(["query", "--config", str(config), "--since", MIDDLE.iso, "--until", MIDDLE.iso,
                           "--format", "jsonl"])
        assert status == 0, err.getvalue()
        assert out.getvalue().count("\n") > 0
        assert (tmp_path / "cache" / "archive").is_dir()
        assert entries(tmp_path / "cache") == {}

    def test_flag_overrides_the_key(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--cache-max-bytes beats [query] cache_max_bytes (here: the default of 10 GiB keeps everything)."""
        status, _, err = creds.query("--since", MIDDLE.iso, "--until", MIDDLE.iso, "--cache-max-bytes", "0",
                                     cache=tmp_path)
        assert status == 0, err
        assert entries(tmp_path) == {}
        creds.query_events("--since", MIDDLE.iso, "--until", MIDDLE.iso, cache=tmp_path)
        assert in_month(tmp_path, MIDDLE.partition)

    def test_view_reads_the_query_section(self, creds: QueryEnv, tmp_path: Path) -> None:
        """`auditlock ui` caches in [query] cache_dir (unless [ui] cache_dir is set) and trims to its bound."""
        ui = UiEnv(creds, tmp_path / "unused", tmp_path / "ui-spool")
        shared = tmp_path / "shared"
        config = replace(ui.config(), query=QueryConfig(cache_dir=shared, cache_max_bytes=0))
        with TestClient(build_app(config, session_key=SESSION_KEY), client=CLIENT, follow_redirects=False) as client:
            client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "/"})
            page = client.get("/", params={"since": MIDDLE.iso, "until": MIDDLE.iso})
        assert page.status_code == 200
        assert "/events/" in page.text
        assert (shared / "archive").is_dir()
        assert entries(shared) == {}
        own = tmp_path / "own"
        config = replace(config, ui=replace(config.ui, cache_dir=own),
                         query=QueryConfig(cache_dir=shared, cache_max_bytes=HUGE))
        with TestClient(build_app(config, session_key=SESSION_KEY), client=CLIENT, follow_redirects=False) as client:
            client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "/"})
            assert client.get("/", params={"since": MIDDLE.iso, "until": MIDDLE.iso}).status_code == 200
        assert in_month(own, MIDDLE.partition)
        assert entries(shared) == {}


class TestSizes:
    @pytest.mark.parametrize(("text", "size"), [
        ("0", 0), ("1024", 1024), ("512M", 512 * 2**20), ("10G", 10 * 2**30), ("10GiB", 10 * 2**30),
        ("2t", 2 * 2**40), ("3 ", 3),
    ])
    def test_forms(self, text: str, size: int) -> None:
        """Bytes, or a number with K, M, G or T (powers of 1024, `iB` optional)."""
        assert parse_size(text) == size

    @pytest.mark.parametrize(("argv", "message"), [
        (["--cache-max-bytes", "-1"], "argument --cache-max-bytes: '-1' is negative; give 0 or more bytes"),
        (["--cache-max-bytes", "ten"], "argument --cache-max-bytes: 'ten' is not a size"),
        (["--cache-max-bytes", "10GB"], "argument --cache-max-bytes: '10GB' is not a size"),
    ])
    def test_bad_sizes_name_the_flag(self, argv: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        """A negative or unparseable --cache-max-bytes is a usage error (exit 2) naming the flag."""
        with pytest.raises(SystemExit) as info:
            main(["query", *argv])
        assert info.value.code == 2
        assert message in capsys.readouterr().err

    def test_prune_cache_runs_no_query(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--prune-cache with a filter is a usage error naming both flags."""
        assert main(["query", "--prune-cache", "--actor", "user#1", "--cache-dir", str(tmp_path)]) == 2
        assert "argument --prune-cache: cannot be combined with --actor" in capsys.readouterr().err

    def test_trim_of_a_missing_cache_is_empty(self, tmp_path: Path) -> None:
        """Trimming a cache that holds nothing removes nothing."""
        report = trim(tmp_path / "new", 0)
        assert report is not None
        assert (report.removed, report.kept) == (0, 0)
