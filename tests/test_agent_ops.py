"""An agent that stays observable and restartable: gauges that move during an S3 outage, a SIGTERM during
start-up, what `--once` leaves in running writers' open segments, and the application's drops exported.

Real agent subprocesses against the session's moto server (through a `FaultProxy` where S3 must fail); every
wait is on a condition with a deadline.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.archive import layout
from auditlock.spool.format import DROPS_DIR, OPEN_SUFFIX
from tests.support.archive_env import REPO, ArchiveEnv
from tests.support.faultproxy import Action, FaultProxy
from tests.support.s3servers import S3Endpoint
from tests.support.spool_child import LineReader
from tests.support.waiting import wait_for
from tests.test_agent_service import (
    DEFAULT_GRACE_S,
    SHIP_TIMEOUT,
    WRITER_SCRIPT,
    AgentProcess,
    StartAgent,
    archived_ids,
    make_env,
    segments,
    spool_ids,
)


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """These tests run against the session's moto server."""
    return moto_s3


@pytest.fixture
def start_agent() -> Iterator[StartAgent]:
    """Start agents; every one still running at teardown is SIGKILLed and reaped."""
    started: list[AgentProcess] = []

    def start(env: ArchiveEnv, *args: str, **extra_env: str) -> AgentProcess:
        agent = AgentProcess(env, *args, **extra_env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


class TestGaugesDuringAnOutage:
    """The backlog, oldest-event-age and spool-usage gauges move while a delivery is retried, not only after."""

    def test_gauges_move_while_the_agent_retries(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                                 proxy: FaultProxy, start_agent: StartAgent) -> None:
        """S3 answers 503 to everything; events keep arriving; /metrics shows the backlog and its age growing."""
        env = make_env(tmp_path, bucket, endpoint_url=proxy.url, batch_max_age_s=0.2)
        # The bucket check at start passes (no PUT before it does); then S3 fails everything else.
        proxy.plan(lambda method, path, n: "pass" if "object-lock" in path else ("status", 503, "SlowDown"))
        env.write_events(10)
        agent = start_agent(env, AUDITLOCK_AGENT_GRACE_PERIOD_S="1")
        agent.wait_logged(r"upload of .* failed")  # the first pass is now stuck retrying its batch

        def gauges() -> tuple[float, float, float]:
            metrics = agent.metrics()
            return (metrics["auditlock_spool_backlog_segments"],
                    metrics["auditlock_oldest_unshipped_event_age_seconds"], metrics["auditlock_spool_usage_ratio"])

        wait_for(lambda: min(gauges()) > 0, SHIP_TIMEOUT, "backlog, age and usage gauges above 0 during the outage")
        first = gauges()
        env.write_events(60, actor="user#2")  # more segments than before, while the first batch is still retried
        wait_for(lambda: all(now > then for now, then in zip(gauges(), first, strict=True)), SHIP_TIMEOUT,
                 "every gauge grown while the outage lasts")
        assert agent.proc.poll() is None
        assert segments(env.spool), "nothing was delivered, so nothing may be deleted"
        assert agent.terminate(1) == 0, agent.stderr_tail()


class TestSignalDuringStartUp:
    """A SIGTERM while the agent is still importing and starting leads to a drain (or a clean --once exit)."""

    def test_sigterm_before_the_heavy_imports_drains_the_spool(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                                                 start_agent: StartAgent) -> None:
        """SIGTERM at the start-up pause point: the agent still starts, ships every sealed event and exits 0."""
        env = make_env(tmp_path, bucket, batch_max_age_s=3600)  # nothing is due: only a drain ships it
        env.write_events(20)
        waiting = spool_ids(env)
        ready = tmp_path / "paused"
        agent = start_agent(env, AUDITLOCK_PAUSEPOINT=f"startup:{ready}")
        wait_for(ready.exists, SHIP_TIMEOUT, "the agent paused in its start-up")

        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()
        assert agent.logged("SIGTERM received during start-up"), agent.stderr_tail()
        assert sorted(archived_ids(env)) == sorted(waiting), "each event exactly once"
        assert segments(env.spool) == []
        assert agent.wait_logged("^auditlock agent: stopped$")["events_shipped"] == len(waiting)

    def test_sigterm_during_start_up_of_once_exits_cleanly(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                                          start_agent: StartAgent) -> None:
        """`--once` signalled during start-up exits 0 before shipping anything, and says so."""
        env = make_env(tmp_path, bucket)
        env.write_events(5)
        waiting = segments(env.spool)
        ready = tmp_path / "paused"
        agent = start_agent(env, "--once", AUDITLOCK_PAUSEPOINT=f"startup:{ready}")
        wait_for(ready.exists, SHIP_TIMEOUT, "the agent paused in its start-up")

        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()
        assert agent.logged("SIGTERM received during start-up; --once exits without shipping"), agent.stderr_tail()
        assert segments(env.spool) == waiting
        assert env.archive_keys() == []



def start_writer(env: ArchiveEnv, count: int, processes: list[subprocess.Popen[bytes]]) -> LineReader:
    """A running application process that wrote `count` events and keeps its segment open."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(env.config_path), str(count)],
                              env=env.env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    processes.append(writer)
    reader = LineReader(writer)
    reader.until_count(count, timeout=SHIP_TIMEOUT)
    return reader


class TestOnceReportsOpenSegments:
    """`--once` says what running writers still hold in open segments, and when those will be sealed."""

    def test_open_segment_of_a_live_writer_is_reported(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                                       processes: list[subprocess.Popen[bytes]]) -> None:
        """Sealed events ship; the live writer's open segment is counted (segments, events, bytes, sealed by)."""
        env = make_env(tmp_path, bucket, segment_max_bytes=65536)
        env.write_events(5)
        count = 12
        start_writer(env, count, processes)
        [open_segment] = env.spool.glob(f"*{OPEN_SUFFIX}")
        config = env.config.spool
        first = layout.parse_occurred_at(orjson.loads(open_segment.read_bytes().splitlines()[0])["occurred_at"])
        sealed_by = first + dt.timedelta(seconds=config.segment_max_age_s + config.flush_interval_ms / 1000)

        result = env.run_agent_once()

        assert result.returncode == 0, result.stderr[-3000:]
        lines = [orjson.loads(raw) for raw in result.stderr.splitlines() if raw.startswith("{")]
        [stopped] = [line for line in lines if line["event"] == "auditlock agent: stopped"]
        assert stopped["segments_left"] == 0
        assert (stopped["open_segments"], stopped["open_events"], stopped["open_bytes"]) == (
            1, count, open_segment.stat().st_size)
        assert stopped["open_sealed_by"] == sealed_by.strftime("%Y-%m-%dT%H:%M:%SZ")
        [said] = [line for line in lines if "open segments of running writers" in str(line["event"])]
        assert f"{count} events" in said["event"]
        assert f"by {stopped['open_sealed_by']} at the latest" in said["event"]
        assert open_segment.exists(), "a live writer's segment is not touched"


# An application process with `on_error = "drop"`: emits events until the spool is over max_bytes (the later ones
# are dropped), prints how many it dropped, and exits normally.
DROPPING_APP = """
import sys

import auditlock
from auditlock.config import load_config
from auditlock.handler.core import AuditCore

core = AuditCore(load_config(sys.argv[1]))
with auditlock.actor("user#9"):
    for n in range(int(sys.argv[2])):
        core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
print(core.dropped)
"""


class TestApplicationDropsExported:
    """Events dropped under `on_error = "drop"` reach the agent's /metrics and the archive's digests."""

    def test_drops_are_counted_by_reason_and_recorded_in_a_digest(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], start_agent: StartAgent
    ) -> None:
        """A real app overflows max_bytes; the agent exports its drop count and ships it in the next digest."""
        env = make_env(tmp_path, bucket, batch_max_age_s=0.2)
        app_config = tmp_path / "app.toml"
        app_config.write_text(env.config_path.read_text().replace(
            "[spool]\n", '[spool]\non_error = "drop"\nmax_bytes = 65536\n', 1))
        app = subprocess.run([sys.executable, "-c", DROPPING_APP, str(app_config), "400"], env=env.env(), cwd=REPO,
                             capture_output=True, text=True, timeout=120, check=False)
        assert app.returncode == 0, app.stderr[-3000:]
        dropped = int(app.stdout)
        assert dropped > 0, "the test meant the spool to overflow"
        written = spool_ids(env)

        agent = start_agent(env)
        wait_shipped_ids(env, written, agent)
        metrics = agent.metrics()
        assert metrics['auditlock_app_events_dropped_total{reason="spool_full"}'] == dropped
        assert metrics['auditlock_app_events_dropped_total{reason="disk_full"}'] == 0
        recorded = [digest["app_drops"] for digest in env_digests(env) if "app_drops" in digest]
        assert len(recorded) == 1, recorded
        [(writer, drops)] = recorded[0].items()
        assert drops["dropped"] == {"spool_full": dropped}
        assert drops["first_dropped_at"] <= drops["last_dropped_at"]
        assert (env.spool / DROPS_DIR / f"{writer}.json").is_file(), "the digest names the writer's drop file"
        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()


def wait_shipped_ids(env: ArchiveEnv, expected: list[str], agent: AgentProcess) -> None:
    """Until the archive holds exactly the expected events and the spool has no segment left."""
    try:
        wait_for(lambda: sorted(archived_ids(env)) == sorted(expected) and segments(env.spool) == [], SHIP_TIMEOUT,
                 f"{len(expected)} events archived")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; agent stderr:\n{agent.stderr_tail()}") from None


def env_digests(env: ArchiveEnv) -> list[dict[str, Any]]:
    """Every digest in the bucket, parsed."""
    client = env.endpoint.client()
    listed = client.list_objects_v2(Bucket=env.bucket, Prefix="audit/digests/").get("Contents", [])
    return [orjson.loads(client.get_object(Bucket=env.bucket, Key=o["Key"])["Body"].read()) for o in listed]


class TestStopDuringARetriedBatch:
    """A SIGTERM while a half-delivered batch is retried: the drain retries that batch as planned, never a bigger one
    (which would put the landed object's events into a second object)."""

    def test_drain_retries_the_ledger_batch_instead_of_planning_a_new_one(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], proxy: FaultProxy, start_agent: StartAgent
    ) -> None:
        """One object landed, the other keeps failing; segments sealed meanwhile: at exit no event is archived twice."""
        env = make_env(tmp_path, bucket, endpoint_url=proxy.url, batch_max_age_s=0.2)
        refused: list[str] = []

        def standard_object_refused(method: str, path: str, n: int) -> Action:
            if method == "PUT" and "-standard-" in path and (not refused or refused[0] == path):
                refused.append(path)
                return ("status", 503, "SlowDown")
            return "pass"

        proxy.plan(standard_object_refused)
        env.write_events(10)
        env.write_events(10, event_type="auth.login_failed", actor="svc:gate")  # the batch: two objects
        agent = start_agent(env, AUDITLOCK_AGENT_GRACE_PERIOD_S="2")
        agent.wait_logged(r"upload of .*-standard-.* failed")  # the security object landed; standard is retried
        # Sealed while the batch is stuck, in the class of the object that landed: planned into one bigger batch,
        # they would change that object's content and key, and its events would be archived twice.
        env.write_events(10, event_type="auth.login_failed", actor="svc:gate")
        written = spool_ids(env)

        assert agent.terminate(2) == 0, agent.stderr_tail()

        archived = Counter(archived_ids(env))
        assert archived, "the security object landed"
        assert max(archived.values()) == 1, "an event was archived twice"
        assert set(archived) | set(spool_ids(env)) == set(written), "an event is neither archived nor spooled"
