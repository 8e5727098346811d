"""`auditlock query` against an archive the real agent wrote to moto: filters, months, cache, spool."""

from __future__ import annotations

import datetime as dt
import gzip
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.archive.timerange import TimeRange
from auditlock.handler.core import AuditCore
from auditlock.query.cache import ArchiveCache, make_client
from auditlock.query.filters import EventFilter
from auditlock.query.session import QueryRequest, execute
from auditlock.spool.writer import SpoolWriter
from tests.support.calendar import THIS_MONTH, occurred_at
from tests.support.query_env import ALICE, LAST, MIDDLE, OLDEST, QueryEnv, at, story_archive
from tests.support.s3servers import S3Endpoint


def newest_first(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events in the order `auditlock query` prints them."""
    return sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]), reverse=True)


def cached_months(cache: Path) -> set[str]:
    """The `year=YYYY/month=MM` partitions that have files in a cache directory."""
    return {f"{p.parent.parent.name}/{p.parent.name}" for p in cache.rglob("*.jsonl.gz")}


class TestFilters:
    def test_clean_end_records_only_on_request(self, creds: QueryEnv, tmp_path: Path) -> None:
        """Writers' auditlock.writer_closed records are hidden unless --type asks for them."""
        assert all(e["event_type"] != "auditlock.writer_closed" for e in creds.query_events(cache=tmp_path))
        closings = creds.query_events("--type", "auditlock.writer_closed", cache=tmp_path)
        assert closings
        assert {e["event_type"] for e in closings} == {"auditlock.writer_closed"}

    def test_actor(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--actor returns exactly that actor's events, whole and newest first."""
        expected = newest_first([e for e in creds.written if e["actor_id"] == "user#1"])
        assert creds.query_events("--actor", "user#1", cache=tmp_path) == expected

    def test_target(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--target-type/--target-id return the record's whole history, reads included."""
        got = creds.query_events("--target-type", "Order", "--target-id", "1001", cache=tmp_path)
        assert [e["event_type"] for e in got] == ["order.deleted", "order.updated", "data.accessed",
                                                  "order.updated", "order.created"]

    def test_type_globs(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--type takes globs; repeated, any of them matches."""
        got = creds.query_events("--type", "access.*", cache=tmp_path)
        assert {e["event_type"] for e in got} == {"access.role_granted", "access.role_revoked",
                                                  "access.permission_changed"}
        got = creds.query_events("--type", "*.created", "--type", "order.deleted", cache=tmp_path)
        assert sorted(e["event_type"] for e in got) == ["customer.created", "order.created", "order.created",
                                                        "order.deleted"]

    def test_underscore_is_not_a_wildcard(self, creds: QueryEnv, tmp_path: Path) -> None:
        """A `_` in a --type glob matches only `_` (LIKE's wildcard is escaped)."""
        got = creds.query_events("--type", "auth.login_*", cache=tmp_path)
        assert len(got) == 5
        assert creds.query_events("--type", "auth.loginxfailed", cache=tmp_path) == []

    def test_ip_and_limit(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--ip filters on actor_ip; --limit keeps the newest N."""
        every = creds.query_events("--ip", "203.0.113.9", cache=tmp_path)
        assert len(every) == 3
        assert creds.query_events("--ip", "203.0.113.9", "--limit", "2", cache=tmp_path) == every[:2]

    def test_text_in_payload(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--text finds payload text whatever its case, and nothing else."""
        got = creds.query_events("--text", "SUPPORT TICKET 12", cache=tmp_path)
        assert [e["payload"]["justification"] for e in got] == ["support ticket 12"]
        assert creds.query_events("--text", "no such words", cache=tmp_path) == []

    def test_hmac_field(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--hmac-field finds the hashed value in the payload and on either side of changes."""
        by_email = creds.query_events("--hmac-field", f"email={ALICE}", cache=tmp_path)
        assert [e["event_type"] for e in by_email] == ["customer.updated", "customer.created"]
        by_order = creds.query_events("--hmac-field", f"customer_email={ALICE}", cache=tmp_path)
        assert [(e["event_type"], e["target_id"]) for e in by_order] == [("order.created", "1002"),
                                                                         ("order.created", "1001")]

    def test_relative_since(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--since 24h finds the events written just now, and none of the old story."""
        got = creds.query_events("--since", "24h", "--type", "auth.login_failed", cache=tmp_path)
        assert [e["actor_id"] for e in got] == ["user#8", "user#9"]


class TestMonths:
    def test_one_month_downloads_only_that_month(self, creds: QueryEnv, tmp_path: Path) -> None:
        """A query for the story's middle month lists and caches only that month's objects."""
        client = make_client(creds.config.sink)
        request = QueryRequest(EventFilter(time_range=TimeRange(MIDDLE.start, MIDDLE.end)),
                               cache_dir=tmp_path, fmt="jsonl")
        report = execute(request, creds.config, io.StringIO(), io.StringIO(), client=client)
        middle = [k for k in creds.archive.archive_keys() if f"/{MIDDLE.partition}/" in k]
        assert report.fetch.prefixes == [f"audit/events/{MIDDLE.partition}/"]
        assert report.fetch.downloaded == len(middle) == len(list(tmp_path.rglob("*.jsonl.gz")))
        assert cached_months(tmp_path) == {MIDDLE.partition}

    def test_month_boundary(self, creds: QueryEnv, tmp_path: Path) -> None:
        """A range across a month boundary reads both months and keeps exactly the events inside it."""
        boundary = LAST.start
        got = creds.query_events("--since", occurred_at(boundary - dt.timedelta(hours=1)),
                                 "--until", occurred_at(boundary + dt.timedelta(seconds=1)), cache=tmp_path)
        assert [(e["event_type"], e["occurred_at"]) for e in got] == [
            ("order.deleted", occurred_at(boundary + dt.timedelta(seconds=0.25))),
            ("order.updated", occurred_at(boundary - dt.timedelta(seconds=0.5)))]
        assert cached_months(tmp_path) == {MIDDLE.partition, LAST.partition}

    def test_dates_include_the_whole_until_day(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--until with a date includes that day; the next day's first second is outside."""
        last_day = (MIDDLE.end - dt.timedelta(days=1)).date().isoformat()
        got = creds.query_events("--since", last_day, "--until", last_day, cache=tmp_path)
        assert [e["occurred_at"] for e in got] == [occurred_at(MIDDLE.end - dt.timedelta(seconds=0.5))]

    def test_cache_is_reused(self, creds: QueryEnv, tmp_path: Path) -> None:
        """A second query over the same months downloads nothing; a truncated entry is fetched again."""
        client = make_client(creds.config.sink)
        cache = ArchiveCache(client, creds.config.sink, tmp_path)
        every = TimeRange()
        files, first = cache.fetch(every)
        assert (first.downloaded, first.reused) == (len(creds.archive.archive_keys()), 0)
        files[0].write_bytes(files[0].read_bytes()[:10])
        again, second = cache.fetch(every)
        assert (second.downloaded, second.reused) == (1, len(files) - 1)
        assert again == files

    def test_open_range_discovers_partitions(self, creds: QueryEnv, tmp_path: Path) -> None:
        """Without --until the months are discovered by listing, and only those from --since on are read."""
        creds.query_events("--since", LAST.day(1, "00:00:00").date().isoformat(), cache=tmp_path)
        assert cached_months(tmp_path) == {LAST.partition, THIS_MONTH.partition}

    def test_cache_is_private(self, creds: QueryEnv, tmp_path: Path) -> None:
        """The cache directory is created 0700: it holds audit data."""
        cache = tmp_path / "new-cache"
        creds.query_events("--since", OLDEST.iso, "--until", OLDEST.iso, cache=cache)
        assert cache.stat().st_mode & 0o777 == 0o700


class TestSpool:
    @pytest.fixture
    def env(self, tmp_path: Path, moto_s3: S3Endpoint) -> Iterator[QueryEnv]:
        """A story archive of this test's own (the test writes into its spool)."""
        with story_archive(tmp_path / "env", moto_s3) as env:
            yield env

    def test_include_spool(self, env: QueryEnv, tmp_path: Path, closing: Callable[[Any], Any]) -> None:
        """--include-spool adds sealed and open segments' events, skips a torn tail, and shows an event that
        is both shipped and still in the spool once."""
        shipped = env.archive.archive_keys()
        sealed = env.emit([(at(LAST.day(20)), "user#1", "order.updated",
                            {"target_type": "Order", "target_id": 1002, "before": {"status": "new"},
                             "after": {"status": "paid"}})])
        open_events = self._open_segment_with_torn_tail(env, closing)
        self._shipped_copy_left_in_spool(env, shipped[0])
        without = env.query_events("--actor", "user#1", cache=tmp_path)
        with_spool = env.query_events("--actor", "user#1", "--include-spool", cache=tmp_path)
        new_ids = {e["event_id"] for e in sealed + open_events}
        assert {e["event_id"] for e in with_spool} == {e["event_id"] for e in without} | new_ids
        assert len(with_spool) == len({e["event_id"] for e in with_spool})
        assert with_spool == newest_first(with_spool)

    def test_spool_events_honour_the_range(self, env: QueryEnv, tmp_path: Path) -> None:
        """Spool events outside --since/--until stay out; --sql sees spool events through `audit`."""
        before_story = OLDEST.shift(-1)
        env.emit([(at(before_story.day(1)), "user#1", "order.created", {"target_type": "Order", "target_id": 1})])
        got = env.query_events("--since", OLDEST.iso, "--include-spool", "--actor", "user#1", cache=tmp_path)
        assert occurred_at(before_story.day(1)) not in {e["occurred_at"] for e in got}
        status, out, _ = env.query("--include-spool", "--format", "csv", "--sql",
                                   f"SELECT count(*) AS n FROM audit WHERE month = '{before_story.mm}'",
                                   cache=tmp_path)
        assert (status, out) == (0, "n\n1\n")

    @staticmethod
    def _open_segment_with_torn_tail(env: QueryEnv, closing: Callable[[Any], Any]) -> list[dict[str, Any]]:
        """Two events in a live writer's open segment, then half a third line (a torn tail)."""
        config = env.config
        writer = closing(SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes))
        core = AuditCore(config, writer=writer)
        with auditlock.actor("user#1"):
            records = [core.emit("order.updated", {"target_type": "Order", "target_id": 1002, "status": status})
                       for status in ("packed", "sent")]
        [segment] = env.archive.spool.glob("*.open.jsonl")
        last = segment.read_bytes().splitlines(keepends=True)[-1]
        with segment.open("ab") as f:
            f.write(last[: len(last) // 2])
        return [dict(r) for r in records if r is not None]

    @staticmethod
    def _shipped_copy_left_in_spool(env: QueryEnv, key: str) -> None:
        """Put a shipped object's lines back as a sealed segment (the agent crashed before deleting it)."""
        body = gzip.decompress(env.archive.endpoint.client().get_object(Bucket=env.archive.bucket, Key=key)
                               ["Body"].read())
        first = orjson.loads(body.splitlines()[0])
        name = f"{first['writer']}.{first['seq']:016x}.jsonl"
        (env.archive.spool / name).write_bytes(body)
