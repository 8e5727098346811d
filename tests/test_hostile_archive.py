"""The readers treat the bucket as hostile (issue #15 items 1, 2, 6, 13, 18).

Every object here is PUT straight into the lock bucket on a real moto server, as an attacker holding only
PutObject could: traversal keys, nested forged objects, lines the writer would refuse, a gzip bomb. Query (its
cache), the view's reader and verify must confine, skip with a note or a finding, and go on with the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import os
import resource
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from auditlock.archive import layout
from auditlock.archive.timerange import TimeRange
from auditlock.cli import main
from auditlock.config import Config, UiConfig
from auditlock.query.cache import ArchiveCache, make_client
from auditlock.query.confine import UnsafeCachePath, confined_path
from auditlock.query.filters import EventFilter
from auditlock.query.output import WIDTH_SAMPLE, write_table
from auditlock.query.session import QueryRequest, execute
from auditlock.ui.app import build_app
from auditlock.ui.reader import ArchiveReader
from auditlock.verify.archive import ArchiveOptions, verify_archive
from auditlock.verify.findings import FOREIGN_OBJECT, OBJECT_TOO_LARGE, UNREADABLE_OBJECT
from auditlock.verify.source import S3Source
from tests.support.archive_env import REPO, ArchiveEnv, use_credentials
from tests.support.peak import run_with_peak
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.ui_env import PASSWORD, password_hash

DECEMBER = (2026, 12)  # the month every object here claims; the tests name their ranges, never "now"
MONTH_PREFIX = "audit/events/year=2026/month=12/"
DECEMBER_RANGE = ("--since", "2026-12", "--until", "2026-12")


def event(n: int, **overrides: Any) -> dict[str, Any]:
    """A complete `auditlock/1` event (unchained: these tests are about reading, not about the chain), its
    UUIDv7 event id stamped at its `occurred_at` (the view finds an event by the time in its id)."""
    stamp = f"{int(dt.datetime(2026, 12, 2, 3, 4, n % 60, tzinfo=dt.UTC).timestamp() * 1000):012x}"
    return {
        "schema": "auditlock/1", "event_id": f"{stamp[:8]}-{stamp[8:]}-7d3e-8f40-{n:012d}",
        "event_type": "order.updated", "occurred_at": f"2026-12-02T03:04:{n % 60:02d}.000006Z",
        "actor_id": f"user:{n}", "actor_type": "user", "actor_ip": None, "target_type": "Order",
        "target_id": str(n), "payload": {"status": "paid"}, "service": "shop", "host": "h",
        "retention": "standard", "trace_id": None, "span_id": None, "writer": "a" * 32, "seq": n, "prev": "0" * 64,
        **overrides,
    }


def line(n: int, **overrides: Any) -> bytes:
    """One event as a JSONL line."""
    return orjson.dumps(event(n, **overrides)) + b"\n"


def object_name(lines: bytes) -> str:
    """The agent's name for an object holding `lines` (stamp, class, content hash)."""
    return f"20261202T030400Z-standard-{hashlib.sha256(lines).hexdigest()[:32]}{layout.OBJECT_SUFFIX}"


def put(env: ArchiveEnv, key: str, body: bytes) -> None:
    """PUT bytes at a key straight into the bucket."""
    env.endpoint.client().put_object(Bucket=env.bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")


def put_lines(env: ArchiveEnv, key: str, lines: bytes) -> None:
    """PUT gzip'd lines at a key."""
    put(env, key, gzip.compress(lines, mtime=0))


def run(*argv: str) -> tuple[int, str, str]:
    """`auditlock ARGV` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def query_actors(env: ArchiveEnv, cache: Path) -> tuple[set[str], str]:
    """The actor ids `auditlock query --format jsonl` shows for December, and its stderr."""
    status, out, err = run("query", "--config", str(env.config_path), "--cache-dir", str(cache), *DECEMBER_RANGE,
                           "--format", "jsonl")
    assert status == 0, err
    return {orjson.loads(text)["actor_id"] for text in out.splitlines()}, err


def verify_json(env: ArchiveEnv) -> dict[str, Any]:
    """`auditlock verify --format json` over December."""
    _, out, err = run("verify", "--config", str(env.config_path), *DECEMBER_RANGE, "--format", "json")
    assert out, err
    report: dict[str, Any] = orjson.loads(out)
    return report


def subjects(report: dict[str, Any], kind: str) -> set[str]:
    """The subjects of a verify JSON report's findings of one kind."""
    return {f["subject"] for f in report["findings"] if f["kind"] == kind}


def files_under(root: Path) -> set[Path]:
    """Every file below `root`."""
    return {path for path in root.rglob("*") if path.is_file()}


def ui_config(env: ArchiveEnv, spool: Path) -> Config:
    """The env's config with a password-protected view whose own events go to `spool`."""
    config = env.config
    ui = UiConfig(auth="password", users=MappingProxyType({"alice": password_hash()}), page_size=5)
    return replace(config, spool=replace(config.spool, dir=spool), ui=ui)


@contextlib.contextmanager
def view(env: ArchiveEnv, tmp: Path) -> Iterator[TestClient]:
    """A signed-in client of the view over the env's bucket."""
    app = build_app(ui_config(env, tmp / "ui-spool"), cache_dir=tmp / "ui-cache", session_key="k")
    with TestClient(app, client=("127.0.0.1", 50123), follow_redirects=False) as client:
        response = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "/"})
        assert response.status_code == 303, response.text
        yield client


@pytest.fixture
def env(tmp_path: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """An empty lock bucket on moto with a config whose `[sink] batch_max_bytes` is 64 KiB."""
    use_credentials(monkeypatch, moto_s3)
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-readers-{uuid.uuid4().hex[:12]}")
    (tmp_path / "env").mkdir()
    return ArchiveEnv.create(tmp_path / "env", moto_s3, bucket)


@pytest.fixture
def honest(env: ArchiveEnv) -> ArchiveEnv:
    """The bucket holding one honest object (user:1) in December."""
    lines = line(1)
    put_lines(env, MONTH_PREFIX + object_name(lines), lines)
    return env


class TestPathTraversal:
    def test_a_traversal_key_writes_nothing_outside_the_cache(self, honest: ArchiveEnv, tmp_path: Path) -> None:
        """A key climbing eight levels with `..` is not followed: nothing is created outside the cache."""
        lines = line(2, actor_id="user:evil")
        put_lines(honest, MONTH_PREFIX + "../" * 8 + "escape/" + object_name(lines), lines)
        cache = tmp_path / "q" / "cache"
        actors, err = query_actors(honest, cache)
        assert not (tmp_path / "q" / "escape").exists()
        assert {p for p in files_under(tmp_path / "q") if cache not in p.parents} == set()
        assert actors == {"user:1"}
        assert "not archive objects" in err

    def test_the_view_writes_nothing_outside_its_cache(self, honest: ArchiveEnv, tmp_path: Path) -> None:
        """The view's search over the same bucket leaves its cache root alone as well."""
        lines = line(2, actor_id="user:evil")
        put_lines(honest, MONTH_PREFIX + "../" * 6 + "escape/" + object_name(lines), lines)
        with view(honest, tmp_path) as client:
            page = client.get("/", params={"since": "2026-12-01", "until": "2026-12-31"})
        assert page.status_code == 200
        assert not (tmp_path / "escape").exists()
        assert "user:evil" not in page.text

    @pytest.mark.parametrize("relative", ["a/../../b", "/etc/passwd", "a//b", "./a", "a/\x00b", "a/b\nc",
                                          "a/" + "x" * 256])
    def test_the_confinement_helper_refuses_unsafe_names(self, tmp_path: Path, relative: str) -> None:
        """`..`, an absolute or empty part, `.`, NUL, a newline and a part over 255 bytes are refused."""
        with pytest.raises(UnsafeCachePath):
            confined_path(tmp_path, relative)

    def test_a_symlink_in_the_cache_is_refused(self, tmp_path: Path) -> None:
        """A symlink planted in the cache is never written through."""
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "events").symlink_to(tmp_path)
        with pytest.raises(UnsafeCachePath, match="symlink"):
            confined_path(tmp_path / "root", "events/x.jsonl.gz")

    def test_a_safe_name_lands_under_the_root(self, tmp_path: Path) -> None:
        """An archive key maps to a path strictly under the root."""
        path = confined_path(tmp_path, "audit/events/year=2026/month=12/x.jsonl.gz")
        assert tmp_path in path.parents


class TestOneDefinitionOfAnObject:
    @pytest.fixture
    def forged(self, honest: ArchiveEnv) -> str:
        """A forged event at a nested key in December (verify never reads such keys on main)."""
        lines = line(3, actor_id="user:forged")
        key = MONTH_PREFIX + "x/" + object_name(lines)
        put_lines(honest, key, lines)
        return key

    def test_query_does_not_show_a_nested_object(self, honest: ArchiveEnv, forged: str, tmp_path: Path) -> None:
        """The forged event is not shown; a note names the key and points at verify."""
        actors, err = query_actors(honest, tmp_path / "cache")
        assert actors == {"user:1"}
        assert forged in err
        assert "auditlock verify" in err

    def test_verify_reports_a_nested_object(self, honest: ArchiveEnv, forged: str) -> None:
        """verify is not clean: the nested key is a `foreign object` finding."""
        report = verify_json(honest)
        assert not report["clean"]
        assert subjects(report, FOREIGN_OBJECT) == {forged.removeprefix("audit/")}

    def test_the_view_does_not_show_a_nested_object(self, honest: ArchiveEnv, forged: str, tmp_path: Path) -> None:
        """The view's reader returns only the honest event."""
        reader = ArchiveReader(honest.config, tmp_path / "cache")
        window = TimeRange(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
        result = reader.search(EventFilter(time_range=window), 10)
        assert [e["actor_id"] for e in result.page.events] == ["user:1"]

    @pytest.mark.parametrize("relative", [
        "events/year=2026/month=12/x/20261202T030400Z-standard-" + "0" * 32 + ".jsonl.gz",
        "events/year=2026/month=13/20261302T030400Z-standard-" + "0" * 32 + ".jsonl.gz",
        "events/year=2026/month=12/20261102T030400Z-standard-" + "0" * 32 + ".jsonl.gz",
        "events/year=2026/month=12/20261202T030400Z-standard-" + "0" * 32 + ".jsonl.gz?x",
        "events/year=2026/month=12/20261202T030400Z-Std-" + "0" * 32 + ".jsonl.gz",
        "events/year=2026/month=12/20261202T030400Z-standard-" + "0" * 32 + ".json",
    ])
    def test_the_parser_refuses_what_no_agent_writes(self, relative: str) -> None:
        """Nested, month 13, a stamp of another month, a `?`, a bad class, another suffix: not archive objects."""
        assert layout.parse_events_key(relative) is None

    def test_the_parser_accepts_the_agents_keys(self) -> None:
        """`object_key`'s output parses back to its parts."""
        key = layout.object_key("", "2026-12-02T03:04:05.000006Z", "pci-dss", "ab" * 32)
        parsed = layout.parse_events_key(key)
        assert parsed is not None
        assert (parsed.year, parsed.month, parsed.retention) == (2026, 12, "pci-dss")


BAD_LINES = {
    "duplicate key": line(2)[:-2] + b',"actor_id":"user:forged"}\n',
    "string payload": line(3, payload="hello"),
    "deep payload": line(4).replace(b'{"status":"paid"}', b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}"),
    "not json": b"{garbage\n",
    "wrong type": line(5, seq="7"),
}


class TestLinesReadersCannotRead:
    @pytest.fixture
    def bad(self, honest: ArchiveEnv) -> ArchiveEnv:
        """One December object holding a good line, every bad line, and another good line; plus objects at a key
        with `?` and at a key with a 300-byte name."""
        lines = line(10) + b"".join(BAD_LINES.values()) + line(11)
        put_lines(honest, MONTH_PREFIX + object_name(lines), lines)
        put_lines(honest, MONTH_PREFIX + "a?b=" + object_name(line(12)), line(12))
        put_lines(honest, MONTH_PREFIX + "x" * 300 + object_name(line(13)), line(13))
        return honest

    def test_query_shows_the_rest_of_the_month(self, bad: ArchiveEnv, tmp_path: Path) -> None:
        """The good lines of every archive object are shown; the bad ones are named in a note."""
        actors, err = query_actors(bad, tmp_path / "cache")
        assert actors == {"user:1", "user:10", "user:11"}
        # The reasons are spool/lines.py's: the one definition of a valid line, for the agent and every reader.
        assert "skipped lines 2 (a duplicate key (not in the writer's JSON form)), 3 (payload is a str, not" in err
        assert "4 (nested more than 40 levels deep (a writer never writes that)), 5 (not an auditlock/1 JSON" in err
        assert "6 (not an auditlock/1 JSON object ('seq' missing or not a 64-bit integer))" in err

    def test_query_notes_them_again_on_the_next_run(self, bad: ArchiveEnv, tmp_path: Path) -> None:
        """A second run from the same cache still shows the same events and the same note."""
        query_actors(bad, tmp_path / "cache")
        actors, err = query_actors(bad, tmp_path / "cache")
        assert actors == {"user:1", "user:10", "user:11"}
        assert "skipped lines 2 (a duplicate key" in err

    def test_the_view_shows_the_rest_of_the_month(self, bad: ArchiveEnv, tmp_path: Path) -> None:
        """The search page answers 200 with the good events, and their event pages too."""
        with view(bad, tmp_path) as client:
            page = client.get("/", params={"since": "2026-12-01", "until": "2026-12-31"})
            assert page.status_code == 200
            assert "user:10" in page.text
            assert "user:11" in page.text
            assert "user:forged" not in page.text
            assert client.get(f"/events/{event(10)['event_id']}").status_code == 200

    def test_verify_names_the_lines_and_the_keys(self, bad: ArchiveEnv) -> None:
        """verify finds the lines readers skip and the keys no reader reads (no traceback, every object seen)."""
        report = verify_json(bad)
        unreadable = [f["detail"] for f in report["findings"] if f["kind"] == UNREADABLE_OBJECT]
        assert any("2 (a duplicate key" in detail for detail in unreadable)
        assert any("4 (nested more than 40 levels deep" in detail for detail in unreadable)
        assert len(subjects(report, FOREIGN_OBJECT)) == 2
        assert report["counts"]["objects"] == 2


class TestWideRanges:
    def test_a_range_of_ten_thousand_years_lists_what_exists(self, honest: ArchiveEnv, tmp_path: Path) -> None:
        """`--since 0001-01 --until 9999-11` asks S3 a handful of times, not once per month."""
        client = make_client(honest.config.sink)
        calls: list[str] = []

        def count(**_: Any) -> None:
            calls.append("list")
            if len(calls) > 50:
                raise AssertionError("more than 50 ListObjectsV2 calls: months are being enumerated")

        client.meta.events.register("before-call.s3.ListObjectsV2", count)
        window = TimeRange(dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 1, tzinfo=dt.UTC))
        request = QueryRequest(EventFilter(time_range=window), tmp_path / "cache", fmt="jsonl")
        out = io.StringIO()
        report = execute(request, honest.config, out, io.StringIO(), client=client)
        assert report.fetch.prefixes == [MONTH_PREFIX]
        assert [orjson.loads(text)["actor_id"] for text in out.getvalue().splitlines()] == ["user:1"]

    def test_a_short_bounded_range_still_lists_its_months(self, honest: ArchiveEnv, tmp_path: Path) -> None:
        """Three months are listed directly, as before."""
        window = TimeRange(dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2027, 2, 1, tzinfo=dt.UTC))
        cache = ArchiveCache(make_client(honest.config.sink), honest.config.sink, tmp_path / "cache")
        _, report = cache.fetch(window)
        assert report.prefixes == ["audit/events/year=2026/month=11/", MONTH_PREFIX,
                                   "audit/events/year=2027/month=01/"]


BOMB = gzip.compress(b"\n" * (40 * 1024 * 1024), mtime=0)  # ~40 KB that inflate to 40 MiB of empty lines
MEMORY_LIMIT = 1536 * 1024 * 1024  # address space for the verify child: main split the bomb into 40M objects


def bounded_child() -> None:
    """Limit the child's address space so an unbounded reader fails fast instead of eating the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class TestGzipBomb:
    @pytest.fixture
    def bombed(self, honest: ArchiveEnv) -> ArchiveEnv:
        """A December object that is a gzip bomb, at an archive key."""
        put(honest, MONTH_PREFIX + object_name(b"bomb"), BOMB)
        return honest

    def test_verify_stays_small_and_names_the_object(self, bombed: ArchiveEnv, tmp_path: Path) -> None:
        """verify reports `object too large` with a peak RSS under 400 MiB (its own process's)."""
        done = run_with_peak(["verify", "--config", str(bombed.config_path), *DECEMBER_RANGE, "--format", "json"],
                             env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=bounded_child)
        report = orjson.loads(done.stdout or b"null")
        assert report is not None, done.stderr
        assert subjects(report, OBJECT_TOO_LARGE) == {(MONTH_PREFIX + object_name(b"bomb")).removeprefix("audit/")}
        assert done.peak_kib < 400 * 1024  # its own peak (tests/support/peak.py), in KiB

    def test_query_skips_the_bomb_and_shows_the_rest(self, bombed: ArchiveEnv, tmp_path: Path) -> None:
        """query notes the object as too large and shows the honest event."""
        actors, err = query_actors(bombed, tmp_path / "cache")
        assert actors == {"user:1"}
        assert "object too large" in err


class TestTableStreams:
    def test_rows_past_the_sample_are_written_as_they_come(self) -> None:
        """The table is printed while rows still arrive: past the first WIDTH_SAMPLE rows nothing accumulates."""
        out = io.StringIO()

        def rows() -> Iterator[list[str]]:
            for n in range(WIDTH_SAMPLE * 3):
                if n > WIDTH_SAMPLE:
                    assert f"row {n - 1:05d}" in out.getvalue()  # the previous row is already out
                yield [f"row {n:05d}", "x" * (n % 50)]

        assert write_table(["name", "value"], rows(), out, width=80) == WIDTH_SAMPLE * 3
        assert out.getvalue().endswith(f"({WIDTH_SAMPLE * 3} rows)\n")


def foreign_names() -> st.SearchStrategy[str]:
    """Key tails under a December partition: traversal, nesting, `?`, long parts, controls, unicode, valid."""
    part = st.one_of(
        st.sampled_from(["..", ".", "", "?", "x?y=1", "%2e%2e", "\\..\\", "~", "year=2026", "month=12"]),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), min_size=1, max_size=12),
        st.just("n" * 300),
        st.just(object_name(b"valid")),
    )
    return st.lists(part, min_size=1, max_size=4).map("/".join).filter(lambda s: len(s.encode()) < 900)


class TestHypothesisKeys:
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(tails=st.lists(foreign_names(), min_size=1, max_size=3, unique=True))
    def test_no_key_escapes_the_cache_or_passes_as_fact(self, env: ArchiveEnv, tmp_path_factory: pytest.TempPathFactory,
                                                        tails: list[str]) -> None:
        """Whatever the keys: nothing is written outside the cache, every key that is not an archive object is a
        `foreign object` in verify, and query and the view show only events of archive objects."""
        base = tmp_path_factory.mktemp("h")
        prefix = f"h{uuid.uuid4().hex[:8]}"
        sink = replace(env.config.sink, prefix=prefix)
        client = env.endpoint.client()
        keys = {}
        for n, tail in enumerate(tails):
            key = f"{prefix}/events/year=2026/month=12/{tail}"
            try:
                client.put_object(Bucket=env.bucket, Key=key, Body=gzip.compress(line(100 + n), mtime=0))
            except ClientError:  # the server refuses some keys (moto: a newline): nothing stored, nothing to read
                continue
            keys[key.removeprefix(prefix + "/")] = f"user:{100 + n}"
        archive = {rel: actor for rel, actor in keys.items() if layout.parse_events_key(rel) is not None}
        window = TimeRange(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))

        _files, report = ArchiveCache(make_client(sink), sink, base / "cache").fetch(window)
        assert all((base / "cache") in path.parents for path in files_under(base))
        assert {key.removeprefix(prefix + "/") for key in report.foreign} == set(keys) - set(archive)

        config = replace(env.config, sink=sink)
        reader = ArchiveReader(config, base / "view-cache", client=make_client(sink))
        shown = {e["actor_id"] for e in reader.search(EventFilter(time_range=window), 50).page.events}
        assert shown == set(archive.values())

        found = verify_archive(S3Source(make_client(sink), env.bucket, prefix), ArchiveOptions(time_range=window))
        assert {f.subject for f in found.findings if f.kind == FOREIGN_OBJECT} == set(keys) - set(archive)
