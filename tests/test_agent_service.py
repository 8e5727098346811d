"""The long-running agent (`auditlock agent`, no --once) as a real subprocess against a real S3 server.

Scan then watch, recovery of dead writers (SIGKILLed for real), quarantine of damaged segments, one agent per
spool, draining on SIGTERM within the grace period (with S3 up and with S3 answering 503 to everything), and
the HTTP endpoint (/metrics, /healthz, /readyz) on the ephemeral port the agent logs at start.

Every wait is on a condition with a deadline (`wait_for`); every agent and writer process is killed at teardown.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditlock.agent.service import Agent
from auditlock.agent.shipper import StopRequestedError
from auditlock.spool.format import OPEN_SUFFIX, QUARANTINE_DIR, parse_segment_name
from tests.support.archive_env import REPO, ArchiveEnv
from tests.support.faultproxy import FaultProxy
from tests.support.s3servers import S3Endpoint, free_port
from tests.support.spool_child import LineReader
from tests.support.spool_files import spool_events
from tests.support.waiting import wait_for

SHIP_TIMEOUT = 30.0
DEFAULT_GRACE_S = 25.0  # [agent] grace_period_s when the config does not set it
LISTENING = "auditlock agent: listening"

# A writing process that emits through the env's own config, reports each returned event on stdout, then
# waits for EOF on stdin (it never gets one: the test SIGKILLs it, leaving its segment `.open`).
WRITER_SCRIPT = """
import sys

import orjson

import auditlock
from auditlock.config import load_config
from auditlock.handler.core import AuditCore
from auditlock.spool.writer import SpoolWriter

config = load_config(sys.argv[1])
core = AuditCore(config, writer=SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes))
with auditlock.actor("user#7"):
    for n in range(int(sys.argv[2])):
        record = core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
        sys.stdout.buffer.write(orjson.dumps({"event_id": record["event_id"], "seq": record["seq"]}) + b"\\n")
        sys.stdout.buffer.flush()
sys.stdin.buffer.read()
"""


class AgentProcess:
    """`auditlock agent` as a subprocess, with its JSON log lines collected by a reader thread."""

    def __init__(self, env: ArchiveEnv, *args: str, **extra_env: str) -> None:
        self.proc = subprocess.Popen(env.agent_command(*args), env=env.env(**extra_env), cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.raw: list[bytes] = []
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name=f"agent-{self.proc.pid}-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.raw.append(raw)
            try:
                self.lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue  # a stray non-JSON line (a Python warning) stays in `raw` for failure messages

    def stderr_tail(self) -> str:
        """The last lines the agent wrote, for failure messages."""
        return b"".join(self.raw[-30:]).decode(errors="replace")

    def logged(self, pattern: str) -> list[dict[str, Any]]:
        """Log lines whose `event` matches the regular expression."""
        return [line for line in list(self.lines) if re.search(pattern, str(line.get("event", "")))]

    def wait_logged(self, pattern: str, timeout: float = SHIP_TIMEOUT) -> dict[str, Any]:
        """The first log line matching `pattern`, once it is there."""
        try:
            wait_for(lambda: self.logged(pattern) or self.proc.poll() is not None, timeout, f"log line {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; agent stderr:\n{self.stderr_tail()}") from None
        found = self.logged(pattern)
        assert found, f"agent exited {self.proc.returncode} before logging {pattern!r}:\n{self.stderr_tail()}"
        return found[0]

    @property
    def port(self) -> int:
        """The HTTP port the agent bound (it logs it at start, since the config asks for port 0)."""
        port = self.wait_logged(f"^{LISTENING}$")["port"]
        assert isinstance(port, int)
        assert port > 0
        return port

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the agent's HTTP endpoint: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name (labels folded into the name, Prometheus style)."""
        status, body = self.get("/metrics")
        assert status == 200, body
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def wait_ready(self) -> None:
        """Until /readyz answers 200 (the agent resumed its ledger and entered its loop)."""
        wait_for(lambda: self.get("/readyz")[0] == 200, SHIP_TIMEOUT, "agent /readyz 200")

    def terminate(self, grace_s: float) -> int:
        """SIGTERM, then the exit code; fails unless the agent exits within the grace period (plus slack)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=grace_s + 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running {grace_s + 10} s after SIGTERM:\n{self.stderr_tail()}") from None
        self._reader.join(timeout=10)
        return code

    def close(self) -> None:
        """Kill if still running, reap, and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


StartAgent = Callable[..., AgentProcess]


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



def make_env(root: Path, bucket: tuple[S3Endpoint, str], **kwargs: Any) -> ArchiveEnv:
    """An ArchiveEnv for the bucket (straight to moto unless `endpoint_url` says otherwise)."""
    endpoint, name = bucket
    return ArchiveEnv.create(root, endpoint, name, **kwargs)


def read_archive(env: ArchiveEnv) -> list[dict[str, Any]]:
    """Every event in every events object of the bucket, parsed, unfiltered (writers' own records included)."""
    return env.archive_events(closings=True)


def archived_ids(env: ArchiveEnv) -> list[str]:
    """The event ids in the archive, in object order (duplicates kept)."""
    return [event["event_id"] for event in read_archive(env)]


def spool_ids(env: ArchiveEnv) -> list[str]:
    """The ids of every event in the spool's segments: what an agent has to ship (writers may add records of
    their own to what they were asked to emit, such as one at close, so this, not the emitted list, is the truth)."""
    return [event["event_id"] for event in spool_events(env.spool)]


def wait_archive_is(env: ArchiveEnv, expected: list[str] | set[str], agent: AgentProcess) -> None:
    """Until the archive holds exactly the `expected` events, each once; and one version per key."""
    want = sorted(expected)

    try:
        wait_for(lambda: sorted(archived_ids(env)) == want, SHIP_TIMEOUT, f"archive holding {len(want)} events")
    except AssertionError as exc:
        found = archived_ids(env)
        unexpected = len(set(found) - set(want))
        raise AssertionError(f"{exc}: it holds {len(found)} ({len(set(found))} distinct, {unexpected} unexpected); "
                             f"agent stderr:\n{agent.stderr_tail()}") from None
    assert env.archive_versions() == len(env.archive_keys()), "an object was written more than once"


def wait_shipped(env: ArchiveEnv, records: list[dict[str, Any]], agent: AgentProcess) -> list[dict[str, Any]]:
    """For events written while the agent runs: until they are archived and the spool is empty; then check that
    nothing is archived twice and every writer's seq runs from 0 without a gap. Returns the archived events."""

    def done() -> bool:
        return ids_of(records) <= set(archived_ids(env)) and segments(env.spool) == []

    try:
        wait_for(done, SHIP_TIMEOUT, f"{len(records)} events archived and the spool empty")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; agent stderr:\n{agent.stderr_tail()}") from None
    events = read_archive(env)
    ids = [event["event_id"] for event in events]
    assert len(ids) == len(set(ids)), "an event was archived twice"
    seqs: dict[str, list[int]] = {}
    for event in events:
        seqs.setdefault(event["writer"], []).append(event["seq"])
    for writer, numbers in seqs.items():
        assert sorted(numbers) == list(range(len(numbers))), f"writer {writer}: a gap in the archived seqs"
    assert env.archive_versions() == len(env.archive_keys()), "an object was written more than once"
    return events


def segments(spool: Path) -> list[str]:
    """Segment files (open or sealed) in the spool directory itself."""
    return sorted(p.name for p in spool.iterdir() if parse_segment_name(p.name) is not None)


def ids_of(records: list[dict[str, Any]]) -> set[str]:
    """The event ids of records."""
    return {record["event_id"] for record in records}


# --- tests -----------------------------------------------------------------------------------------------


class TestScanThenWatch:
    """The agent ships what was waiting when it started, then what arrives while it runs."""

    def test_ships_the_backlog_then_new_events(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                               start_agent: StartAgent) -> None:
        """Events written before start are shipped by the first scan; later ones are picked up by the watcher."""
        env = make_env(tmp_path, bucket, batch_max_age_s=0.2)
        before = env.write_events(25)
        waiting = spool_ids(env)
        # Rescans every hour: only the initial scan and the watcher can have shipped anything.
        agent = start_agent(env, AUDITLOCK_AGENT_RESCAN_INTERVAL_S="3600")
        wait_archive_is(env, waiting, agent)

        during = env.write_events(25, actor="user#2")
        archived = wait_shipped(env, before + during, agent)
        assert set(waiting) <= {event["event_id"] for event in archived}
        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()
        stopped = agent.wait_logged("^auditlock agent: stopped$")
        assert stopped["segments_left"] == 0


class TestRecovery:
    """Dead writers' segments are recovered; damaged segments are quarantined without blocking the rest."""

    def test_sigkilled_writer_with_torn_tail_is_truncated_sealed_and_shipped(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], start_agent: StartAgent,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """A SIGKILLed writer's .open segment, torn half-line appended: the agent drops that line, ships the rest."""
        env = make_env(tmp_path, bucket, segment_max_bytes=65536, batch_max_age_s=0.2)
        count = 20
        writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(env.config_path), str(count)],
                                  env=env.env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        processes.append(writer)
        reader = LineReader(writer)
        reader.until_count(count, timeout=SHIP_TIMEOUT)
        writer.kill()
        assert writer.wait(timeout=30) == -signal.SIGKILL
        reported = [line["event_id"] for line in reader.lines]
        assert sorted(spool_ids(env)) == sorted(reported), "the killed writer's segment holds what it reported"

        open_segments = sorted(env.spool.glob(f"*{OPEN_SUFFIX}"))
        assert len(open_segments) == 1, segments(env.spool)
        segment = open_segments[0]
        last_line = segment.read_bytes().splitlines(keepends=True)[-1]
        with segment.open("ab") as f:
            f.write(last_line[: len(last_line) // 2])  # a torn line: half a JSON object, no newline

        agent = start_agent(env)
        wait_archive_is(env, reported, agent)
        truncated = agent.wait_logged("truncated the torn last line")
        assert segment.name in truncated["event"]
        wait_for(lambda: segments(env.spool) == [], SHIP_TIMEOUT, "spool emptied")
        assert agent.metrics()["auditlock_segments_recovered_total"] == 1
        assert agent.metrics()["auditlock_segments_quarantined_total"] == 0
        assert not (env.spool / QUARANTINE_DIR).exists()
        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()

    def test_corrupt_middle_line_quarantines_only_that_segment(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], start_agent: StartAgent
    ) -> None:
        """A bad line inside a sealed segment: it moves to quarantine/ with a reason; the others ship."""
        env = make_env(tmp_path, bucket, batch_max_age_s=0.2)
        env.write_events(30)
        written = spool_ids(env)
        sealed = segments(env.spool)
        assert len(sealed) >= 3, sealed
        victim = env.spool / sealed[1]
        lines = victim.read_bytes().splitlines(keepends=True)
        assert len(lines) >= 3
        damaged_ids = {orjson.loads(line)["event_id"] for line in lines}
        lines[1] = b'{"schema": "auditlock/1", "this line": "was damaged on disk"}\n'
        victim.write_bytes(b"".join(lines))

        agent = start_agent(env)
        wait_archive_is(env, set(written) - damaged_ids, agent)
        quarantine = env.spool / QUARANTINE_DIR
        wait_for((quarantine / victim.name).exists, SHIP_TIMEOUT, "segment quarantined")
        reason = (quarantine / f"{victim.name}.reason.txt").read_text()
        assert "line 2" in reason, reason
        assert (quarantine / victim.name).read_bytes() == b"".join(lines), "quarantine keeps the segment as it was"
        wait_for(lambda: segments(env.spool) == [], SHIP_TIMEOUT, "other segments shipped")
        assert agent.logged("QUARANTINED"), agent.stderr_tail()
        metrics = agent.metrics()
        assert metrics["auditlock_segments_quarantined_total"] == 1
        assert metrics["auditlock_events_shipped_total"] == len(written) - len(damaged_ids)
        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()


class TestOneAgentPerSpool:
    """A second agent on a spool that is being shipped refuses to start."""

    def test_second_agent_exits_nonzero_naming_the_first(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], start_agent: StartAgent
    ) -> None:
        """While one agent runs, another on the same spool exits 1 with 'already shipping spool'."""
        env = make_env(tmp_path, bucket, batch_max_age_s=0.2)
        first = start_agent(env)
        first.wait_ready()

        second = subprocess.run(env.agent_command(), env=env.env(), cwd=REPO, capture_output=True, text=True,
                                timeout=60, check=False)
        assert second.returncode == 1, second.stderr
        assert "already shipping spool" in second.stderr, second.stderr
        assert f"pid {first.proc.pid}" in second.stderr, second.stderr

        records = env.write_events(10)  # the first agent is unaffected
        wait_shipped(env, records, first)
        assert first.proc.poll() is None
        assert first.terminate(DEFAULT_GRACE_S) == 0, first.stderr_tail()


class TestSigtermDrain:
    """SIGTERM ships everything sealed within the grace period, or leaves the rest in the spool and says so."""

    def test_drains_everything_not_yet_due(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                           start_agent: StartAgent) -> None:
        """Nothing is due (batch_max_age_s = 3600); SIGTERM ships it all and exits 0."""
        env = make_env(tmp_path, bucket, batch_max_age_s=3600)
        before = env.write_events(15)
        agent = start_agent(env)
        agent.wait_ready()
        during = env.write_events(15, actor="user#2")
        waiting = spool_ids(env)  # nothing is due, so nothing has shipped yet
        assert ids_of(before + during) <= set(waiting)

        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()
        assert sorted(archived_ids(env)) == sorted(waiting), "each event exactly once"
        assert segments(env.spool) == []
        stopped = agent.wait_logged("^auditlock agent: stopped$")
        assert (stopped["events_shipped"], stopped["segments_left"]) == (len(waiting), 0)
        assert agent.logged("SIGTERM received")

    def test_unreachable_s3_exits_within_grace_and_keeps_segments(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], proxy: FaultProxy, start_agent: StartAgent
    ) -> None:
        """S3 answers 503 to everything: SIGTERM exits 0 within the grace period, segments stay for next start."""
        env = make_env(tmp_path, bucket, endpoint_url=proxy.url, batch_max_age_s=3600)
        proxy.plan(lambda method, path, n: ("status", 503, "SlowDown"))
        env.write_events(30)
        written = spool_ids(env)
        waiting = segments(env.spool)
        grace = 2.0
        agent = start_agent(env, AUDITLOCK_AGENT_GRACE_PERIOD_S=str(grace))
        agent.wait_ready()

        assert agent.terminate(grace) == 0, agent.stderr_tail()
        assert proxy.log, "the drain tried S3"
        assert agent.logged("grace period over"), agent.stderr_tail()
        left = agent.wait_logged(r"stopping with \d+ segments")
        assert f"stopping with {len(waiting)} segments" in left["event"]
        assert agent.wait_logged("^auditlock agent: stopped$")["segments_left"] == len(waiting)
        assert segments(env.spool) == waiting, "nothing was deleted"
        assert env.archive_keys() == []

        proxy.clear()  # S3 is back: the next start ships what was left, exactly once
        again = env.run_agent_once()
        assert again.returncode == 0, again.stderr
        assert sorted(archived_ids(env)) == sorted(written)
        assert segments(env.spool) == []

    def test_unreachable_s3_while_retrying_a_due_batch(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], proxy: FaultProxy, start_agent: StartAgent
    ) -> None:
        """S3 down while a due batch is being retried: SIGTERM still exits 0 within the grace period."""
        env = make_env(tmp_path, bucket, endpoint_url=proxy.url, batch_max_age_s=0.2)
        # The bucket check at start passes (no PUT before it does); then S3 fails everything else.
        proxy.plan(lambda method, path, n: "pass" if "object-lock" in path else ("status", 503, "SlowDown"))
        env.write_events(30)
        waiting = segments(env.spool)
        grace = 2.0
        agent = start_agent(env, AUDITLOCK_AGENT_GRACE_PERIOD_S=str(grace))
        agent.wait_logged(r"upload of .* failed")  # the main loop is now retrying the due batch

        assert agent.terminate(grace) == 0, agent.stderr_tail()
        assert agent.wait_logged("^auditlock agent: stopped$")["segments_left"] == len(waiting)
        assert segments(env.spool) == waiting

    def test_stalled_s3_exits_within_grace(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], start_agent: StartAgent
    ) -> None:
        """S3 accepts connections but never answers: SIGTERM still exits 0 within the grace period."""
        with FaultProxy(bucket[0].url, max_stall=60) as stalling:
            stalling.plan(lambda method, path, n: ("stall", 60))
            env = make_env(tmp_path, bucket, endpoint_url=stalling.url, batch_max_age_s=3600)
            env.write_events(30)
            waiting = segments(env.spool)
            grace = 2.0
            agent = start_agent(env, AUDITLOCK_AGENT_GRACE_PERIOD_S=str(grace), AUDITLOCK_SINK_READ_TIMEOUT_S="5")
            agent.wait_ready()

            assert agent.terminate(grace) == 0, agent.stderr_tail()
            assert agent.wait_logged("^auditlock agent: stopped$")["segments_left"] == len(waiting)
            assert segments(env.spool) == waiting


class TestHttpEndpoint:
    """/metrics, /healthz and /readyz on the port the agent logs at start."""

    def test_health_readiness_and_shipped_count(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                                start_agent: StartAgent) -> None:
        """/healthz and /readyz answer 200; /metrics counts exactly the events written once they shipped."""
        env = make_env(tmp_path, bucket, batch_max_age_s=0.2)
        env.write_events(40)
        written = spool_ids(env)
        agent = start_agent(env)
        listening = agent.wait_logged(f"^{LISTENING}$")
        assert listening["host"] == "127.0.0.1"
        agent.wait_ready()
        assert agent.get("/healthz") == (200, b"ok\n")
        assert agent.get("/readyz") == (200, b"ready\n")
        assert agent.get("/nothing-here")[0] == 404

        wait_archive_is(env, written, agent)
        wait_for(lambda: agent.metrics()["auditlock_events_shipped_total"] >= len(written), SHIP_TIMEOUT,
                 "events_shipped metric")
        wait_for(lambda: agent.metrics()["auditlock_spool_backlog_segments"] == 0, SHIP_TIMEOUT, "backlog gauge 0")
        metrics = agent.metrics()
        assert metrics["auditlock_events_shipped_total"] == len(written), "shipped count = events written"
        assert metrics["auditlock_objects_shipped_total"] == len(env.archive_keys())
        assert metrics["auditlock_objects_already_present_total"] == 0
        assert metrics["auditlock_last_upload_success_timestamp_seconds"] > 0
        assert not [name for name in metrics if name.startswith("auditlock_errors_total")]
        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()

    def test_metrics_count_errors_by_kind_while_s3_fails(
        self, tmp_path: Path, bucket: tuple[S3Endpoint, str], proxy: FaultProxy, start_agent: StartAgent
    ) -> None:
        """PUTs answered 503 SlowDown show up as auditlock_errors_total{kind="SlowDown"}; then all ships."""
        env = make_env(tmp_path, bucket, endpoint_url=proxy.url, batch_max_age_s=0.2)
        proxy.fail_next(6, ("status", 503, "SlowDown"))
        env.write_events(20)
        written = spool_ids(env)
        agent = start_agent(env)
        wait_archive_is(env, written, agent)
        wait_for(lambda: agent.metrics()["auditlock_events_shipped_total"] == len(written), SHIP_TIMEOUT,
                 "events_shipped metric")
        metrics = agent.metrics()
        assert metrics['auditlock_errors_total{kind="SlowDown"}'] == 2, "6 PUTs = 2 failed agent attempts"
        assert agent.get("/healthz")[0] == 200
        assert env.archive_versions() == len(env.archive_keys())
        assert agent.terminate(DEFAULT_GRACE_S) == 0, agent.stderr_tail()


class TestHealthDuringOutage:
    """A live agent retrying through an S3 outage must not look stalled to a liveness probe."""

    def test_retrying_deliveries_keep_the_heartbeat_fresh(self, tmp_path: Path, moto_s3: S3Endpoint,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """Each delivery attempt refreshes the /healthz heartbeat, though the main loop is stuck retrying."""
        env = ArchiveEnv.create(tmp_path, moto_s3, "unreachable", endpoint_url=f"http://127.0.0.1:{free_port()}")
        for name, value in env.env().items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
        env.write_events(3)
        agent = Agent(env.config)
        assert agent.http is not None
        started_at = agent.http.heartbeat
        shipping = threading.Thread(target=_ship_until_stopped, args=(agent,), daemon=True)
        shipping.start()
        try:
            wait_for(lambda: _error_count(agent) >= 3, SHIP_TIMEOUT, "three failed delivery attempts")
            assert agent.http.heartbeat > started_at
        finally:
            agent.stop.set()
            shipping.join(SHIP_TIMEOUT)
        assert not shipping.is_alive()
        assert len(segments(env.spool)) > 0, "nothing was delivered, so nothing may be deleted"


def _ship_until_stopped(agent: Agent) -> None:
    with contextlib.suppress(StopRequestedError):
        agent.shipper.ship_due(force=True)


def _error_count(agent: Agent) -> float:
    return sum(sample.value for family in agent.metrics.errors.collect() for sample in family.samples
               if sample.name.endswith("_total"))
