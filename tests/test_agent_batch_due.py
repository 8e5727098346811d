"""When the long-running agent ships without being forced: a batch is due when the backlog reaches
`batch_max_bytes` (exactly that many bytes is enough) or its oldest sealed segment is `batch_max_age_s` old.

`--once` and a drain force every batch, so only the watch loop decides by these rules. The real in-process shipper
of an `Agent` ships to a lock bucket on the session's moto server; ages come from the segments' mtimes, set by the
test relative to the clock the agent reads (no waiting).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from auditlock.agent.service import Agent
from auditlock.spool.format import SEALED_SUFFIX
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket

SEGMENT_MAX_BYTES = 4096  # ArchiveEnv's [spool] segment_max_bytes: the lowest batch_max_bytes it accepts
AGE_S = 3600.0  # batch_max_age_s: far longer than any test takes, so a fresh segment is never old


@pytest.fixture
def env(tmp_path: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """Sealed segments of 12 events waiting in the spool of a config shipping to a fresh lock bucket."""
    use_credentials(monkeypatch, moto_s3)
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-due-{uuid.uuid4().hex[:12]}")
    archive = ArchiveEnv.create(tmp_path, moto_s3, bucket, batch_max_age_s=AGE_S)
    archive.write_events(12)
    return archive


def sealed(env: ArchiveEnv) -> list[Path]:
    """The sealed segments waiting in the spool."""
    return sorted(env.spool.glob(f"*{SEALED_SUFFIX}"))


def reconfigure(env: ArchiveEnv, *, batch_max_bytes: int) -> Agent:
    """An agent for the same spool and bucket with another `batch_max_bytes` (`batch_max_age_s` stays AGE_S)."""
    ArchiveEnv.create(env.root, env.endpoint, env.bucket, batch_max_bytes=batch_max_bytes, batch_max_age_s=AGE_S)
    return Agent(env.config, serve_http=False)


class TestWhenABatchIsDue:
    """`ship_due(force=False)`: full or old ships; small and young waits."""

    def test_small_young_backlog_waits(self, env: ArchiveEnv) -> None:
        """Under `batch_max_bytes` and younger than `batch_max_age_s`: nothing is shipped, the segments stay."""
        waiting = sealed(env)
        agent = reconfigure(env, batch_max_bytes=1 << 20)
        assert agent.shipper.ship_due(force=False) == 0
        assert sealed(env) == waiting
        assert env.stored_keys() == []

    def test_backlog_of_exactly_batch_max_bytes_ships(self, env: ArchiveEnv) -> None:
        """A backlog of exactly `batch_max_bytes` is full: it ships at once, not after `batch_max_age_s`."""
        agent = reconfigure(env, batch_max_bytes=sum(path.stat().st_size for path in sealed(env)))
        assert agent.shipper.ship_due(force=False) > 0
        assert sealed(env) == []

    def test_backlog_over_batch_max_bytes_ships(self, env: ArchiveEnv) -> None:
        """A young backlog larger than `batch_max_bytes` is full too: a batch ships at once."""
        total = sum(path.stat().st_size for path in sealed(env))
        assert total - 1 >= SEGMENT_MAX_BYTES, "the bound may not be below a segment's (config check)"
        agent = reconfigure(env, batch_max_bytes=total - 1)
        assert agent.shipper.ship_due(force=False) > 0
        assert env.stored_keys() != []

    def test_old_segment_ships(self, env: ArchiveEnv) -> None:
        """A small backlog whose oldest segment was sealed `batch_max_age_s` ago ships."""
        agent = reconfigure(env, batch_max_bytes=1 << 20)
        old = time.time() - AGE_S - 60
        for path in sealed(env):
            os.utime(path, (old, old))
        assert agent.shipper.ship_due(force=False) > 0
        assert sealed(env) == []
