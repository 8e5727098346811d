"""What the shipper does with each outcome of a delivery, and with a ledger that names segments that are gone.

- A delivery that fails and can clear (503 SlowDown) is retried until the object is stored, and counted under its
  S3 error code, never as a conflict.
- A fresh delivery is not counted as "already present".
- A batch S3 rejects for what it is (400 InvalidArgument, its answer to a retain-until in the past) is set aside:
  its segments in `quarantine/` with the reason, `auditlock_segments_set_aside_total`, the agent's
  `auditlock.batch_set_aside` record in the trail, no event counted as shipped — whether the batch is fresh or
  resumed from the ledger after a restart.
- A restart whose ledger names segments that are gone clears the ledger, counts it
  (`auditlock_errors_total{kind="ledger_segment_missing"}`) and names exactly the missing segments.

The real in-process shipper of an `Agent` ships through a `FaultProxy` in front of the session's moto server. These
were written for surviving mutants of `agent/shipper.py` (docs/mutation-survivors.md): the shipper group's other
tests never had a delivery fail in the shipper itself. A batch is left in the ledger the way a stopped agent leaves
it: its first PUT fails and the agent's stop request (set beforehand) ends the retry wait.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest

from auditlock.agent.ledger import UPLOADING, Intent
from auditlock.agent.service import Agent
from auditlock.agent.shipper import StopRequestedError
from auditlock.agent.trail import BATCH_SET_ASIDE
from auditlock.spool.format import QUARANTINE_DIR
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.faultproxy import Action, FaultProxy
from tests.support.hostile_spool import quarantine_reason, sealed_segments
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.spool_files import spool_events

BOTOCORE_ATTEMPTS = 3  # make_s3_client: botocore retries a 503 itself, 3 attempts make one failed delivery
SLOW_DOWN: Action = ("status", 503, "SlowDown")
REJECTED: Action = ("status", 400, "InvalidArgument")
ONE_SEGMENT_A_BATCH = 4096  # [spool] segment_max_bytes too: two of the segments below never fit together


class RejectFirstEventsObject:
    """Proxy plan: the first PUT of an events object is answered 400 InvalidArgument; everything else passes."""

    def __init__(self) -> None:
        self.rejected: list[str] = []

    def __call__(self, method: str, path: str, _n: int) -> Action:
        if method == "PUT" and "/audit/events/" in path and not self.rejected:
            self.rejected.append(path)
            return REJECTED
        return "pass"


@pytest.fixture
def env(tmp_path: Path, moto_s3: S3Endpoint, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """Two writers' sealed segments (a batch each) in a spool shipping to a fresh lock bucket through the proxy."""
    use_credentials(monkeypatch, moto_s3)
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-outcome-{uuid.uuid4().hex[:12]}")
    archive = ArchiveEnv.create(tmp_path, moto_s3, bucket, endpoint_url=proxy.url,
                                batch_max_bytes=ONE_SEGMENT_A_BATCH)
    archive.write_events(4)
    archive.write_events(4, actor="user#2")
    return archive


def sample(agent: Agent, name: str, **labels: str) -> float:
    """A metric's value in the agent's registry (0 when the labelled series was never created)."""
    return agent.metrics.registry.get_sample_value(name, labels) or 0.0


def quarantined(env: ArchiveEnv) -> list[str]:
    """The segment names in quarantine/ (not their reason files)."""
    directory = env.spool / QUARANTINE_DIR
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".reason.txt"))


def interrupted_batch(env: ArchiveEnv, proxy: FaultProxy) -> Intent:
    """Leave the first batch in the ledger as a stopped agent does: its first PUT fails, a stop ends the wait."""
    agent = Agent(env.config, serve_http=False)
    proxy.fail_next(BOTOCORE_ATTEMPTS, SLOW_DOWN)
    agent.stop.set()
    with pytest.raises(StopRequestedError):
        agent.shipper.ship_due(force=True)
    intent = agent.shipper.ledger.read()
    assert intent is not None
    assert intent.state == UPLOADING, intent
    return intent


class TestFailedDeliveryRetried:
    """A delivery that fails and can clear is retried until stored, and counted by its kind."""

    def test_object_failing_once_is_retried_until_stored(self, env: ArchiveEnv, proxy: FaultProxy) -> None:
        """The first events PUT answered 503: every event still reaches the archive, no segment is left."""
        written = {event["event_id"] for event in spool_events(env.spool)}
        agent = Agent(env.config, serve_http=False)
        proxy.fail_next(BOTOCORE_ATTEMPTS, SLOW_DOWN)
        agent.shipper.ship_due(force=True)
        assert {event["event_id"] for event in env.archive_events(closings=True)} == written
        assert sealed_segments(env.spool) == []

    def test_failure_is_counted_by_its_code_not_as_a_conflict(self, env: ArchiveEnv, proxy: FaultProxy) -> None:
        """One failed delivery: `errors{kind="SlowDown"}` is 1; no conflict is counted."""
        agent = Agent(env.config, serve_http=False)
        proxy.fail_next(BOTOCORE_ATTEMPTS, SLOW_DOWN)
        agent.shipper.ship_due(force=True)
        assert sample(agent, "auditlock_errors_total", kind="SlowDown") == 1
        assert sample(agent, "auditlock_errors_total", kind="conflict") == 0
        assert sample(agent, "auditlock_object_conflicts_total") == 0

    def test_fresh_delivery_is_not_counted_as_already_present(self, env: ArchiveEnv) -> None:
        """Objects stored for the first time count as shipped, none as already present."""
        agent = Agent(env.config, serve_http=False)
        agent.shipper.ship_due(force=True)
        assert sample(agent, "auditlock_objects_shipped_total") == len(env.archive_keys()) > 0
        assert sample(agent, "auditlock_objects_already_present_total") == 0


class TestRejectedBatchSetAside:
    """A batch S3 rejects for good goes to quarantine/ with its record; the next batch ships."""

    def test_rejected_segment_is_quarantined_and_the_other_ships(self, env: ArchiveEnv, proxy: FaultProxy) -> None:
        """One of two batches rejected: its segment in quarantine/ with the reason, the other's events archived."""
        before = {path.name for path in sealed_segments(env.spool)}
        proxy.plan(RejectFirstEventsObject())
        agent = Agent(env.config, serve_http=False)
        agent.shipper.ship_due(force=True)
        [aside] = quarantined(env)
        assert aside in before
        reason = quarantine_reason(env.spool, aside)
        assert "InvalidArgument" in reason, reason
        assert "move the segment back" in reason, reason
        kept = {event["event_id"] for event in spool_events(env.spool / QUARANTINE_DIR)}
        archived = {event["event_id"] for event in env.archive_events(closings=True)}
        assert not kept & archived
        assert len(archived) > 0
        assert sealed_segments(env.spool) == []
        assert sample(agent, "auditlock_segments_set_aside_total") == 1

    def test_set_aside_batch_counts_no_event_as_shipped(self, env: ArchiveEnv, proxy: FaultProxy) -> None:
        """`ship_due` returns the events of the batches stored (the other writer's and the trail's), nothing more."""
        proxy.plan(RejectFirstEventsObject())
        agent = Agent(env.config, serve_http=False)
        shipped = agent.shipper.ship_due(force=True)
        assert shipped == len(env.archive_events(closings=True))

    def test_set_aside_is_recorded_in_the_trail(self, env: ArchiveEnv, proxy: FaultProxy) -> None:
        """The agent's `auditlock.batch_set_aside` record names the segment and the code, and is shipped."""
        plan = RejectFirstEventsObject()
        proxy.plan(plan)
        agent = Agent(env.config, serve_http=False)
        agent.shipper.ship_due(force=True)
        [record] = [e for e in env.archive_events() if e["event_type"] == BATCH_SET_ASIDE]
        assert record["payload"]["segments"] == quarantined(env)
        assert record["payload"]["code"] == "InvalidArgument"
        assert unquote(plan.rejected[0]).endswith("/" + record["payload"]["key"])


class TestResumedBatchRejected:
    """A batch resumed from the ledger after a restart that S3 rejects for good is set aside, not raised."""

    def test_resumed_rejected_batch_is_set_aside(self, env: ArchiveEnv, proxy: FaultProxy) -> None:
        """The restarted agent's `resume()` meets the rejection: segments quarantined, ledger cleared, counted."""
        intent = interrupted_batch(env, proxy)
        proxy.plan(RejectFirstEventsObject())
        restarted = Agent(env.config, serve_http=False)
        restarted.shipper.resume()
        assert quarantined(env) == sorted(intent.segments)
        assert restarted.shipper.ledger.read() is None
        assert sample(restarted, "auditlock_segments_set_aside_total") == len(intent.segments)


class TestLedgerNamesGoneSegments:
    """A ledger batch whose segments are partly gone cannot be re-sent as planned: cleared, counted, named."""

    def test_missing_segment_is_counted_named_and_the_rest_kept(self, env: ArchiveEnv, proxy: FaultProxy,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
        """One of the batch's two segments removed: the ledger is cleared, the error counted, only it named."""
        ArchiveEnv.create(env.root, env.endpoint, env.bucket, endpoint_url=proxy.url, batch_max_bytes=1 << 20)
        gone, kept = interrupted_batch(env, proxy).segments
        (env.spool / gone).unlink()
        restarted = Agent(env.config, serve_http=False)
        with caplog.at_level(logging.ERROR, logger="auditlock.agent"):
            restarted.shipper.resume()
        assert restarted.shipper.ledger.read() is None
        assert sample(restarted, "auditlock_errors_total", kind="ledger_segment_missing") == 1
        [message] = [r.getMessage() for r in caplog.records if "segments that are gone" in r.getMessage()]
        assert gone in message, message
        assert kept not in message, message
        assert (env.spool / kept).exists(), "a segment still there ships afresh, never deleted unshipped"
