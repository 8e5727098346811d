"""Every segment the shipper moves to quarantine/ is counted in `auditlock_segments_quarantined_total`: one refused
by `recover()` (not a regular file) as well as a damaged sealed segment met while building a batch.

Written for surviving mutants of `agent/shipper.py` (docs/mutation-survivors.md): the hostile-spool tests run the
agent as a subprocess (outside the shipper's mutation group) and check the quarantine, not the count. The real
in-process shipper of an `Agent`; no request reaches S3 (its config names the session's moto server).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditlock.agent.batch import list_sealed
from auditlock.agent.service import Agent
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.hostile_spool import planted_name, quarantine_reason, sealed_segments
from tests.support.s3servers import S3Endpoint

QUARANTINED = "auditlock_segments_quarantined_total"


@pytest.fixture
def env(tmp_path: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool with one writer's sealed segment; its bucket is never asked for anything."""
    use_credentials(monkeypatch, moto_s3)
    archive = ArchiveEnv.create(tmp_path, moto_s3, "auditlock-never-asked")
    archive.write_events(3)
    return archive


def quarantined_count(agent: Agent) -> float:
    """`auditlock_segments_quarantined_total` of the agent."""
    return agent.metrics.registry.get_sample_value(QUARANTINED) or 0.0


class TestQuarantinedSegmentsCounted:
    """Each way into quarantine/ adds one to the count per segment."""

    def test_refused_unsafe_segment_is_counted(self, env: ArchiveEnv) -> None:
        """A FIFO named like a sealed segment, refused by `recover()`: quarantined with the reason, counted once."""
        fifo = env.spool / planted_name()
        os.mkfifo(fifo)
        agent = Agent(env.config, serve_http=False)
        agent.shipper.recover()
        assert "FIFO" in quarantine_reason(env.spool, fifo.name)
        assert quarantined_count(agent) == 1

    def test_damaged_sealed_segment_in_a_batch_is_quarantined_and_counted(self, env: ArchiveEnv) -> None:
        """A sealed segment edited in place: `ship_batch` quarantines it with the reason, ships nothing, counts it."""
        [segment] = sealed_segments(env.spool)
        data = segment.read_bytes()
        edited = data.replace(b'"status":"paid"', b'"status":"void"', 1)
        assert len(edited) == len(data)
        assert edited != data
        segment.write_bytes(edited)
        agent = Agent(env.config, serve_http=False)
        assert agent.shipper.ship_batch(list_sealed(env.spool)) == 0
        assert "does not match the previous line's hash" in quarantine_reason(env.spool, segment.name)
        assert quarantined_count(agent) == 1
