"""What the agent does with failures that retrying cannot clear (issue #13, items 2 and 17).

- Late events (their class's retention already over when shipped) are stored and locked for the floor
  (`layout.LATE_LOCK_FLOOR` from the upload), counted, logged and recorded in the trail — on moto and RADOS Gateway.
- A batch S3 rejects for what it is (RADOS Gateway: a retain-until in the past) is set aside in `quarantine/`,
  and the rest keeps flowing.
- A sink that cannot take anything (no Object Lock, no such bucket, a closed port, bad credentials): `agent --once`
  exits 1 naming the fix, within a bounded time; the long-running agent answers /readyz 503 with the reason.

Clocks are derived from the current time (events written "three days ago"), never from a fixed date. Every agent
run is bounded: subprocesses by a timeout, in-process runs by a thread joined with a deadline, then stopped.
"""

from __future__ import annotations

import datetime as dt
import gzip
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from auditlock.agent.s3errors import Permanence, classify
from auditlock.agent.service import Agent
from auditlock.archive import layout
from auditlock.spool.format import QUARANTINE_DIR, parse_segment_name
from tests.support.archive_env import SHORT_CLASSES, ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, free_port, make_lock_bucket
from tests.support.waiting import wait_for
from tests.test_agent_service import AgentProcess

AGENT_ACTOR = "svc:shop-agent"
ONCE_TIMEOUT = 90.0  # an --once run that cannot finish is a failure, not a hang
DAY_NS = 86_400 * 10**9


def days_ago(days: float) -> Callable[[], int]:
    """A writer clock `days` before now, advancing 1 ms per event (derived from now, never a fixed date)."""
    start = time.time_ns() - int(days * DAY_NS)
    ticks = iter(range(start, start + 10**12, 1_000_000))
    return lambda: next(ticks)


def segments(spool: Path) -> list[str]:
    """Segment files left in the spool directory itself."""
    return sorted(p.name for p in spool.iterdir() if parse_segment_name(p.name) is not None)


def archived(env: ArchiveEnv) -> dict[str, list[dict[str, Any]]]:
    """Every events object of the bucket: key → its events (agent records and clean-end records included)."""
    client = env.endpoint.client()
    return {key: [orjson.loads(line) for line in gzip.decompress(
        client.get_object(Bucket=env.bucket, Key=key)["Body"].read()).splitlines()] for key in env.archive_keys()}


def agent_records(env: ArchiveEnv, event_type: str) -> list[dict[str, Any]]:
    """The agent's own records of one type in the archive."""
    return [e for events in archived(env).values() for e in events
            if e["actor_id"] == AGENT_ACTOR and e["event_type"] == event_type]


def run_in_thread(agent: Agent, timeout: float = ONCE_TIMEOUT) -> Any:
    """`agent.run_once()` with a deadline: if it has not returned by then, stop it and fail."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = agent.run_once()
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="agent-run-once", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        agent.stop.set()  # its retry waits end on the stop event
        thread.join(30)
        raise AssertionError(f"run_once still retrying after {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.fixture
def aws_env(bucket_in_env: tuple[S3Endpoint, str]) -> S3Endpoint:
    """The bucket's credentials in the environment (for in-process agents)."""
    return bucket_in_env[0]


class TestLateEvents:
    """Events shipped after their class's retention ended are stored and locked for the floor, never dropped."""

    def test_old_events_are_shipped_and_locked_for_the_floor(self, tmp_path: Path,
                                                              bucket: tuple[S3Endpoint, str]) -> None:
        """Events 3 days old (class: 1 day): `--once` ships them locked until upload + floor, and says so."""
        env = ArchiveEnv.create(tmp_path, bucket[0], bucket[1], batch_max_bytes=4096,
                                class_days=SHORT_CLASSES)  # a batch per segment; a 3-day-old event is late
        old = env.write_events(5, clock=days_ago(3))
        fresh = env.write_events(5, actor="user#2")
        before = dt.datetime.now(dt.UTC)
        done = env.run_agent_once(timeout=ONCE_TIMEOUT)
        after = dt.datetime.now(dt.UTC)
        assert done.returncode == 0, done.stderr
        objects = archived(env)
        shipped = {e["event_id"] for events in objects.values() for e in events}
        assert {r["event_id"] for r in old + fresh} <= shipped, "nothing was dropped"
        assert segments(env.spool) == []

        client = env.endpoint.client()
        [old_key] = [k for k, events in objects.items() if old[0]["event_id"] in {e["event_id"] for e in events}]
        lock = client.head_object(Bucket=env.bucket, Key=old_key)
        assert lock["ObjectLockMode"] == "GOVERNANCE"
        slack = dt.timedelta(seconds=2)  # the server stores whole seconds
        assert before + layout.LATE_LOCK_FLOOR - slack <= lock["ObjectLockRetainUntilDate"]
        assert lock["ObjectLockRetainUntilDate"] <= after + layout.LATE_LOCK_FLOOR + slack
        [fresh_key] = [k for k, events in objects.items() if fresh[0]["event_id"] in {e["event_id"] for e in events}]
        fresh_lock = client.head_object(Bucket=env.bucket, Key=fresh_key)["ObjectLockRetainUntilDate"]
        class_lock = layout.parse_occurred_at(objects[fresh_key][-1]["occurred_at"]) + dt.timedelta(days=1)
        assert abs(fresh_lock - class_lock) < slack, "an object on time keeps its class's retain-until"

        [record] = agent_records(env, "auditlock.retention_floored")
        assert record["payload"]["key"] == old_key
        assert record["payload"]["retention"] == "standard"
        assert record["payload"]["events"] == len(old) + 1  # + the writer's clean-end record
        assert "shipped late" in done.stderr

    def test_floored_objects_are_counted(self, tmp_path: Path, bucket: tuple[S3Endpoint, str],
                                         aws_env: S3Endpoint) -> None:
        """`auditlock_objects_retention_floored_total` counts the late objects only."""
        env = ArchiveEnv.create(tmp_path, bucket[0], bucket[1], batch_max_bytes=4096,
                                class_days=SHORT_CLASSES)  # a batch per segment; a 3-day-old event is late
        env.write_events(3, clock=days_ago(2))
        env.write_events(3, event_type="auth.login_failed", clock=days_ago(5))  # class security: 2 days
        env.write_events(3, actor="user#2")
        agent = Agent(env.config, serve_http=False)
        assert run_in_thread(agent).segments_left == 0
        assert agent.metrics.objects_retention_floored._value.get() == 2
        assert len(agent_records(env, "auditlock.retention_floored")) == 2


@pytest.mark.rgw
class TestRejectedBatch:
    """A batch RADOS Gateway rejects for good is set aside; later batches still ship."""

    def test_rejected_batch_goes_to_quarantine_and_the_rest_ships(self, tmp_path: Path, rgw_s3: S3Endpoint,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """The agent's clock 3 days slow: the 5-day-old batch gets a past retain-until (400), the rest ships."""
        name = make_lock_bucket(rgw_s3.client(), f"auditlock-test-{uuid.uuid4().hex[:16]}")
        use_credentials(monkeypatch, rgw_s3)
        # One segment per batch, so the old segment is a batch of its own.
        env = ArchiveEnv.create(tmp_path, rgw_s3, name, batch_max_bytes=4096, class_days=SHORT_CLASSES)
        old = env.write_events(4, clock=days_ago(5))
        [old_segment] = segments(env.spool)
        fresh = env.write_events(4, actor="user#2")
        agent = Agent(env.config, serve_http=False)
        slow = dt.timedelta(days=3)
        agent.shipper.uploader.clock = lambda: dt.datetime.now(dt.UTC) - slow  # its floor is then in the past

        assert run_in_thread(agent).segments_left == 0
        quarantine = env.spool / QUARANTINE_DIR
        assert (quarantine / old_segment).exists(), "the rejected batch is kept, not deleted"
        reason = (quarantine / f"{old_segment}.reason.txt").read_text()
        assert "InvalidArgument" in reason, reason
        assert "move the segment back" in reason, reason
        shipped = {e["event_id"] for events in archived(env).values() for e in events}
        assert {r["event_id"] for r in fresh} <= shipped
        assert not {r["event_id"] for r in old} & shipped
        assert agent.metrics.segments_set_aside._value.get() == 1
        [record] = agent_records(env, "auditlock.batch_set_aside")
        assert record["payload"]["segments"] == [old_segment]
        assert record["payload"]["code"] == "InvalidArgument"


class TestOnceRefusesAnUnusableSink:
    """`auditlock agent --once` ends with exit 1 and a message naming the fix when the sink cannot take anything."""

    def test_bucket_without_object_lock(self, tmp_path: Path, s3: S3Endpoint) -> None:
        """A bucket created without Object Lock: exit 1 naming `auditlock provision`; nothing PUT, spool kept."""
        name = f"auditlock-nolock-{uuid.uuid4().hex[:12]}"
        s3.client().create_bucket(Bucket=name)
        env = ArchiveEnv.create(tmp_path, s3, name)
        env.write_events(3)
        waiting = segments(env.spool)
        done = env.run_agent_once(timeout=ONCE_TIMEOUT)
        assert done.returncode == 1, done.stderr
        assert "Object Lock" in done.stderr, done.stderr
        assert "auditlock provision" in done.stderr, done.stderr
        assert segments(env.spool) == waiting
        assert s3.client().list_objects_v2(Bucket=name).get("KeyCount", 0) == 0

    def test_missing_bucket(self, tmp_path: Path, s3: S3Endpoint) -> None:
        """A bucket that does not exist: exit 1 with NoSuchBucket and the fix."""
        env = ArchiveEnv.create(tmp_path, s3, f"auditlock-missing-{uuid.uuid4().hex[:12]}")
        env.write_events(2)
        done = env.run_agent_once(timeout=ONCE_TIMEOUT)
        assert done.returncode == 1, done.stderr
        assert "NoSuchBucket" in done.stderr, done.stderr
        assert "auditlock provision" in done.stderr, done.stderr

    def test_closed_port(self, tmp_path: Path, moto_s3: S3Endpoint) -> None:
        """An endpoint nobody listens on: exit 1 naming [sink] endpoint_url."""
        env = ArchiveEnv.create(tmp_path, moto_s3, "whatever", endpoint_url=f"http://127.0.0.1:{free_port()}")
        env.write_events(2)
        done = env.run_agent_once(timeout=ONCE_TIMEOUT)
        assert done.returncode == 1, done.stderr
        assert "cannot connect" in done.stderr, done.stderr
        assert "[sink] endpoint_url" in done.stderr, done.stderr

    @pytest.mark.rgw
    @pytest.mark.parametrize(("key", "secret", "code"), [
        ("AUDITNOSUCHKEY00000", "x" * 40, "InvalidAccessKeyId"),
        (None, "wrong-secret-" + "x" * 27, "SignatureDoesNotMatch"),
    ], ids=["unknown-key", "wrong-secret"])
    def test_bad_credentials(self, tmp_path: Path, rgw_s3: S3Endpoint, key: str | None, secret: str,
                             code: str) -> None:
        """Credentials RADOS Gateway rejects: exit 1 with the error code and what to set."""
        name = make_lock_bucket(rgw_s3.client(), f"auditlock-test-{uuid.uuid4().hex[:16]}")
        env = ArchiveEnv.create(tmp_path, rgw_s3, name)
        env.write_events(2)
        done = env.run_agent_once(timeout=ONCE_TIMEOUT, AWS_ACCESS_KEY_ID=key or rgw_s3.access_key,
                                  AWS_SECRET_ACCESS_KEY=secret)
        assert done.returncode == 1, done.stderr
        assert code in done.stderr, done.stderr
        assert "AWS_SECRET_ACCESS_KEY" in done.stderr, done.stderr


class TestClassification:
    """One definition of what retrying can clear."""

    @pytest.mark.parametrize(("code", "expected"), [
        ("SlowDown", Permanence.TRANSIENT), ("InternalError", Permanence.TRANSIENT),
        ("SomethingNew", Permanence.TRANSIENT), ("InvalidArgument", Permanence.REJECTED),
        ("AccessDenied", Permanence.SINK), ("NoSuchBucket", Permanence.SINK),
        ("ObjectLockConfigurationNotFoundError", Permanence.SINK), ("InvalidAccessKeyId", Permanence.SINK),
        ("SignatureDoesNotMatch", Permanence.SINK),
    ])
    def test_error_codes(self, code: str, expected: Permanence) -> None:
        """S3 error codes map to transient, sink-level or rejected."""
        error = ClientError({"Error": {"Code": code, "Message": "m"}}, "PutObject")
        assert classify(error) is expected

    def test_connection_refused_is_a_sink_problem(self) -> None:
        """Cannot connect (refused, DNS) needs an operator: a sink problem."""
        assert classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) is Permanence.SINK


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Agent subprocesses of a test; SIGKILLed and reaped at teardown."""
    procs: list[Any] = []
    yield procs
    for proc in procs:
        proc.close()


class TestWatchModeNotReady:
    """The long-running agent says it is not ready, and why, while the sink cannot take anything."""

    def test_readyz_names_the_missing_object_lock(self, tmp_path: Path, moto_s3: S3Endpoint,
                                                  processes: list[Any]) -> None:
        """Bucket without Object Lock: /readyz 503 with the reason, an ERROR log line, nothing shipped."""

        name = f"auditlock-nolock-{uuid.uuid4().hex[:12]}"
        moto_s3.client().create_bucket(Bucket=name)
        env = ArchiveEnv.create(tmp_path, moto_s3, name)
        env.write_events(3)
        waiting = segments(env.spool)
        agent = AgentProcess(env)
        processes.append(agent)
        wait_for(lambda: agent.get("/readyz")[0] == 503 and b"Object Lock" in agent.get("/readyz")[1], 30,
                 "/readyz 503 naming Object Lock")
        status, body = agent.get("/readyz")
        assert status == 503
        assert b"auditlock provision" in body, body
        assert agent.wait_logged("bucket check failed")["level"] == "error"
        assert agent.get("/healthz")[0] == 200
        assert agent.terminate(25) == 0, agent.stderr_tail()
        assert segments(env.spool) == waiting
        assert moto_s3.client().list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
