"""The agent against a misbehaving S3: error answers, connection resets, stalls and a long outage.

A `FaultProxy` sits between a real `auditlock agent --once` subprocess and the session's moto server. Whatever
the proxy does to the PUTs, the run must end with every written event in the archive exactly once (by
event id), one object version per key (no duplicate writes), no sealed segment left in the spool and no
batch left in the ledger.

Counting requests: every agent attempt at an object is a HEAD (does it exist?) and then a PUT, and botocore
retries the PUT itself (mode standard, `total_max_attempts = 3`) before the agent sees a failure. So `k`
failing PUTs in a row cost the agent `k // 3` failed attempts and `k // 3 + 1` HEADs for that object.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.spool.format import QUARANTINE_DIR, parse_segment_name
from tests.support.archive_env import ArchiveEnv
from tests.support.faultproxy import Action, FaultProxy, LogEntry
from tests.support.s3servers import S3Endpoint
from tests.support.spool_files import spool_events

BOTOCORE_ATTEMPTS = 3  # make_s3_client: retries={"mode": "standard", "total_max_attempts": 3}
SLOW_DOWN: Action = ("status", 503, "SlowDown")
INTERNAL_ERROR: Action = ("status", 500, "InternalError")

MakeEnv = Callable[..., ArchiveEnv]


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """These tests run against the session's moto server only (the proxy needs a fast upstream)."""
    return moto_s3


@pytest.fixture
def make_env(tmp_path: Path, bucket: tuple[S3Endpoint, str], proxy: FaultProxy) -> MakeEnv:
    """An ArchiveEnv whose agent talks to the bucket through the proxy."""
    endpoint, name = bucket

    def make(**kwargs: Any) -> ArchiveEnv:
        return ArchiveEnv.create(tmp_path, endpoint, name, endpoint_url=proxy.url, **kwargs)

    return make


# --- helpers ---------------------------------------------------------------------------------------------


def run_agent(env: ArchiveEnv, **extra_env: str) -> list[dict[str, Any]]:
    """Run `auditlock agent --once`; require exit 0 and return its JSON log lines."""
    result = env.run_agent_once(timeout=120, **extra_env)
    assert result.returncode == 0, f"agent exited {result.returncode}:\n{result.stderr[-4000:]}"
    lines = []
    for raw in result.stderr.splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue  # a stray non-JSON line (a Python warning) is not the agent's log
    return lines


def logged(lines: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    """Log lines whose `event` matches the regular expression."""
    return [line for line in lines if re.search(pattern, str(line.get("event", "")))]


def read_archive(env: ArchiveEnv) -> list[dict[str, Any]]:
    """Every event in every events object of the bucket, parsed, unfiltered (writers' own records included)."""
    return env.archive_events(closings=True)


def write(env: ArchiveEnv, count: int, **kwargs: Any) -> list[str]:
    """Write `count` events through a writer that is then closed; return the ids of every event that writer
    left in the spool (the emitted ones, plus any record a writer adds of its own, such as at close)."""
    before = {event["event_id"] for event in spool_events(env.spool)} if env.spool.exists() else set()
    records = env.write_events(count, **kwargs)
    written = [event["event_id"] for event in spool_events(env.spool) if event["event_id"] not in before]
    assert {record["event_id"] for record in records} <= set(written), "an emitted event is not in the spool"
    return written


def assert_delivered_exactly_once(env: ArchiveEnv, written_ids: list[str]) -> None:
    """Every written event is archived exactly once, one version per key, and the spool and ledger are empty."""
    archived = Counter(event["event_id"] for event in read_archive(env))
    duplicates = sorted(event_id for event_id, count in archived.items() if count > 1)
    assert not duplicates, f"{len(duplicates)} events archived more than once, e.g. {duplicates[:3]}"
    written = set(written_ids)
    assert set(archived) == written, (f"missing {len(written - set(archived))}, "
                                      f"unexpected {len(set(archived) - written)}")
    assert env.archive_versions() == len(env.archive_keys()), "an object was written more than once"
    left = sorted(p.name for p in env.spool.iterdir() if parse_segment_name(p.name) is not None)
    assert left == [], f"segments still in the spool: {left}"
    assert not (env.spool / QUARANTINE_DIR).exists(), "nothing was damaged, yet something was quarantined"
    assert not (env.spool / ".agent" / "ledger.json").exists(), "a batch was left in flight"


def by_key(log: list[LogEntry], method: str) -> dict[str, list[LogEntry]]:
    """The proxy's requests of one method, grouped by path (one path per object key)."""
    grouped: dict[str, list[LogEntry]] = defaultdict(list)
    for entry in log:
        if entry.method == method:
            grouped[entry.path].append(entry)
    return grouped


def landed_once_per_key(log: list[LogEntry]) -> None:
    """Exactly one PUT per key was accepted by the server (200); any other that reached it was refused (412)."""
    for path, puts in by_key(log, "PUT").items():
        answers = [entry.upstream_status for entry in puts if entry.upstream_status is not None]
        assert answers.count(200) == 1, f"{path}: server answers to the PUTs {answers}"
        assert set(answers) <= {200, 412}, f"{path}: server answers to the PUTs {answers}"


def assert_error_logged_once_then_recovered(lines: list[dict[str, Any]], failures: int, mentions: str) -> None:
    """One error line for the whole streak of quick failures, then one 'recovered after N failures' line."""
    errors = logged(lines, r"upload of .* failed")
    assert len(errors) == 1, f"expected the failing upload logged once, not per retry: {errors}"
    assert errors[0]["level"] == "error"
    assert mentions in errors[0]["event"], errors[0]
    recovered = logged(lines, r"upload recovered after")
    assert len(recovered) == 1, recovered
    match = re.search(r"after (\d+) failures", recovered[0]["event"])
    assert match is not None
    assert int(match[1]) == failures, recovered[0]


def stopped_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent's final 'stopped' log line."""
    stopped = logged(lines, r"^auditlock agent: stopped$")
    assert len(stopped) == 1, lines
    return stopped[0]


# --- tests -----------------------------------------------------------------------------------------------


class TestErrorAnswers:
    """5xx answers to PUT are retried until the upload succeeds, with one error log line for the streak."""

    @pytest.mark.parametrize(("action", "code"), [(SLOW_DOWN, "SlowDown"), (INTERNAL_ERROR, "InternalError")],
                             ids=["503-slowdown", "500-internal"])
    def test_several_in_a_row_are_retried_and_delivered_once(
        self, make_env: MakeEnv, proxy: FaultProxy, action: Action, code: str
    ) -> None:
        """Five failing PUTs in a row: botocore and the agent retry, and every event lands exactly once."""
        env = make_env()
        written = write(env, 30)
        failing = 5
        proxy.fail_next(failing, action)
        lines = run_agent(env)

        assert_delivered_exactly_once(env, written)
        keys = env.stored_keys()  # events objects and digests
        log = proxy.log
        puts = [entry for entry in log if entry.method == "PUT"]
        assert [entry.action for entry in puts[:failing]] == [action] * failing
        assert all(entry.upstream_status is None for entry in puts[:failing]), "a faulted PUT reached the server"
        assert len(puts) == failing + len(keys), "each failed PUT was retried, and each key then stored once"
        assert [entry.upstream_status for entry in puts[failing:]] == [200] * len(keys)
        heads = [entry for entry in log if entry.method == "HEAD"]
        assert len(heads) == failing // BOTOCORE_ATTEMPTS + len(keys), "the agent's own retries start with a HEAD"
        assert_error_logged_once_then_recovered(lines, failing // BOTOCORE_ATTEMPTS, code)
        assert stopped_line(lines)["events_shipped"] == len(written)


class TestConnectionResets:
    """A connection reset before or after the PUT reached S3 is retried without losing or doubling anything."""

    def test_reset_before_the_put_reached_the_server(self, make_env: MakeEnv, proxy: FaultProxy) -> None:
        """Resets that never reached S3: retried until one PUT lands, each event archived once."""
        env = make_env()
        written = write(env, 30)
        proxy.fail_next(3, "reset_before")
        lines = run_agent(env)

        assert_delivered_exactly_once(env, written)
        puts = [entry for entry in proxy.log if entry.method == "PUT"]
        assert [entry.upstream_status for entry in puts[:3]] == [None] * 3
        assert len(puts) == 3 + len(env.stored_keys())
        landed_once_per_key(proxy.log)
        assert_error_logged_once_then_recovered(lines, 1, "ConnectionClosedError")

    def test_reset_after_the_put_landed(self, make_env: MakeEnv, proxy: FaultProxy) -> None:
        """The object landed but the answer was lost: retries are refused by If-None-Match, HEAD confirms it."""
        env = make_env()
        written = write(env, 30)
        proxy.fail_next(3, "reset_after")
        lines = run_agent(env)

        assert_delivered_exactly_once(env, written)
        log = proxy.log
        puts = [entry for entry in log if entry.method == "PUT"]
        assert [entry.upstream_status for entry in puts[:3]] == [200, 412, 412], \
            "the first PUT landed; botocore's retries hit If-None-Match"
        first_key = puts[0].path
        assert len(by_key(log, "PUT")[first_key]) == 3, "after the HEAD found the object there was no more PUT"
        assert [entry.upstream_status for entry in by_key(log, "HEAD")[first_key]] == [404, 200]
        landed_once_per_key(log)
        assert_error_logged_once_then_recovered(lines, 1, "ConnectionClosedError")

    def test_mixed_faults_across_several_batches_and_objects(self, make_env: MakeEnv, proxy: FaultProxy) -> None:
        """Every object of several batches meets its own mix of faults; the archive still holds each event once."""
        env = make_env(segment_max_bytes=4096, batch_max_bytes=8192)
        written = write(env, 40) + write(env, 40, event_type="auth.login_failed", actor="svc:gate")
        scripts: list[list[Action]] = [
            ["reset_after"],
            [SLOW_DOWN, "reset_before"],
            [INTERNAL_ERROR, INTERNAL_ERROR, INTERNAL_ERROR, "reset_after"],
            [],
            ["reset_before", "reset_after", SLOW_DOWN],
        ]
        attempts: dict[str, int] = {}
        order: list[str] = []

        def plan(method: str, path: str, n: int) -> Action:
            if method != "PUT":
                return "pass"
            if path not in attempts:
                attempts[path] = 0
                order.append(path)
            script = scripts[order.index(path) % len(scripts)]
            attempt = attempts[path]
            attempts[path] += 1
            return script[attempt] if attempt < len(script) else "pass"

        proxy.plan(plan)
        lines = run_agent(env)

        assert_delivered_exactly_once(env, written)
        assert len(env.archive_keys()) >= len(scripts), "the test meant every script to meet an object"
        landed_once_per_key(proxy.log)
        assert stopped_line(lines)["events_shipped"] == len(written)
        assert logged(lines, r"upload recovered after")


class TestStalls:
    """A PUT stalled past the client's read timeout is retried; when the stalled one lands later, nothing doubles."""

    def test_stall_longer_than_the_read_timeout(self, make_env: MakeEnv, proxy: FaultProxy) -> None:
        """Two PUTs held past the 1 s read timeout, forwarded later: one version, each event once."""
        env = make_env()
        written = write(env, 30)
        # The retry that succeeds is sent within ~5 s (1 s timeouts plus botocore's jittered backoff); stalls of
        # 7 s make the late PUTs arrive well after it. Arriving at the same instant would race inside moto,
        # whose If-None-Match check is not atomic (a moto artefact, not agent behaviour).
        stall: Action = ("stall", 7)
        proxy.fail_next(2, stall)
        lines = run_agent(env, AUDITLOCK_SINK_READ_TIMEOUT_S="1")

        def stalled_reached_server(log: list[LogEntry]) -> bool:
            return all(entry.upstream_status is not None for entry in log if entry.action == stall)

        assert proxy.wait_for(stalled_reached_server, timeout=30), "the stalled PUTs never reached the server"
        assert_delivered_exactly_once(env, written)
        log = proxy.log
        puts = [entry for entry in log if entry.method == "PUT"]
        assert [entry.action for entry in puts[:2]] == [stall, stall]
        assert len(puts) == 2 + len(env.stored_keys()), "both timed-out PUTs were retried"
        landed_once_per_key(log)
        assert stopped_line(lines)["events_shipped"] == len(written)


class TestLongOutage:
    """An outage far longer than one retry cycle never drops anything."""

    def test_fifteen_failed_puts_then_everything_delivered(self, make_env: MakeEnv, proxy: FaultProxy) -> None:
        """503 SlowDown for the first 15 PUTs (5 agent attempts): every event still arrives exactly once."""
        env = make_env()
        written = write(env, 60)
        failing = 15
        proxy.fail_next(failing, SLOW_DOWN)
        lines = run_agent(env)

        assert_delivered_exactly_once(env, written)
        puts = [entry for entry in proxy.log if entry.method == "PUT"]
        assert len(puts) == failing + len(env.stored_keys())
        landed_once_per_key(proxy.log)
        assert_error_logged_once_then_recovered(lines, failing // BOTOCORE_ATTEMPTS, "SlowDown")
        stopped = stopped_line(lines)
        assert (stopped["events_shipped"], stopped["segments_left"]) == (len(written), 0)
