"""The agent streams (issue #17): segments are read in bounded chunks and objects gzipped into staging files, so
its memory does not grow with segment or batch size; staging files never outlive their batch or a crash.

Real `auditlock agent --once` subprocesses (SIGKILL at a failpoint), real files, the session's moto server; the
full-disk case on a real 256 KiB tmpfs (root only, like tests/test_spool_enospc.py).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

import pytest

import auditlock
from auditlock.agent.batch import build_objects, list_sealed
from auditlock.agent.service import STATE_DIR
from auditlock.agent.staging import STAGING_DIR, StagedBody
from auditlock.config import Config, load_config
from auditlock.handler.core import AuditCore
from auditlock.spool.chain import EventChain
from auditlock.spool.format import SegmentName
from auditlock.spool.reader import DamagedSegmentError, group_lines, stream_lines
from tests.support.archive_env import REPO, ArchiveEnv
from tests.support.peak import run_with_peak
from tests.support.s3servers import S3Endpoint
from tests.test_spool_enospc import small_fs  # noqa: F401 - the 256 KiB tmpfs fixture

MIB = 1024 * 1024
KILLED = -signal.SIGKILL


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """These tests run against the session's moto server."""
    return moto_s3


@pytest.fixture
def env(shipping_env: ArchiveEnv) -> ArchiveEnv:
    """A spool of several 4 KiB sealed segments shipping to a fresh lock bucket."""
    shipping_env.write_events(30)
    return shipping_env


def staging_files(env: ArchiveEnv) -> list[str]:
    """The files in the agent's staging directory (none if it does not exist)."""
    staging = env.spool / STATE_DIR / STAGING_DIR
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


class TestStagingFiles:
    def test_objects_are_built_into_staging_files_byte_identical_to_memory(self, env: ArchiveEnv,
                                                                            tmp_path: Path) -> None:
        """With a staging directory every object's gzip bytes are a file there, identical to an in-memory build."""
        config = env.config
        segments = list_sealed(env.spool)
        staging = tmp_path / "staging"
        staged = build_objects(segments, "audit", config.retention.classes, staging=staging).objects
        in_memory = build_objects(segments, "audit", config.retention.classes).objects
        assert staged
        assert [o.key for o in staged] == [o.key for o in in_memory]
        for obj, twin in zip(staged, in_memory, strict=True):
            assert obj.staged is not None
            assert obj.staged.parent == staging
            assert obj.body == b""
            data = obj.staged.read_bytes()
            assert data == twin.body
            assert (obj.size, obj.sha256) == (len(data), hashlib.sha256(data).hexdigest())
            assert obj.md5_b64 == b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        lines = [line for s in segments for g in group_lines(s.path).groups.values() for line in g.lines]
        assert b"".join(gzip.decompress(o.read_body()) for o in staged) == b"".join(lines)

    def test_a_shipped_batch_leaves_no_staging_file(self, env: ArchiveEnv) -> None:
        """After `agent --once` shipped everything the staging directory is empty."""
        done = env.run_agent_once()
        assert done.returncode == 0, done.stderr[-3000:]
        assert list_sealed(env.spool) == []
        assert len(env.archive_events()) == 30
        assert staging_files(env) == []

    def test_staging_files_a_crash_left_are_removed_by_the_next_run(self, env: ArchiveEnv) -> None:
        """A SIGKILL before the PUT leaves the batch's staging files; the restarted agent ships and removes them."""
        killed = env.run_agent_once(AUDITLOCK_FAILPOINT="before_put:1")
        assert killed.returncode == KILLED, killed.stderr[-3000:]
        assert staging_files(env), "the killed agent had staged its objects"
        done = env.run_agent_once()
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(env.archive_events()) == 30
        assert staging_files(env) == []


class TestNoSpaceForStaging:
    def test_a_full_disk_continues_the_object_in_memory(self, small_fs: Path) -> None:  # noqa: F811
        """A staging file that hits ENOSPC moves its bytes into memory: nothing is lost, the file is gone."""
        data = os.urandom(1024 * 1024)  # incompressible and four times the file system
        body = StagedBody(small_fs / "staging" / "000000.gz")
        for start in range(0, len(data), 64 * 1024):
            body.write(data[start:start + 64 * 1024])
        body.close()
        assert body.path is None
        assert body.in_memory() == data
        assert body.md5.digest() == hashlib.md5(data, usedforsecurity=False).digest()
        assert (body.size, body.sha256.digest()) == (len(data), hashlib.sha256(data).digest())
        assert list((small_fs / "staging").iterdir()) == []


def write_big_segment(config: Config, target_bytes: int) -> int:
    """One sealed segment of about `target_bytes` of valid events, written straight in the spool's format (a
    writer's chain stamped by auditlock's own EventChain, as bench/agent.py's `fill_fast` does, in
    bench/agentbench/spools.py); returns its events."""
    with auditlock.actor("user:82"):
        template = AuditCore(config).build("order.updated", {"target_type": "Order", "target_id": "0",
                                                             "status": "shipped"})
    chain = EventChain(os.urandom(16).hex(), max_event_bytes=config.events.max_event_bytes)
    path = Path(config.spool.dir) / SegmentName(chain.writer_id, 0).filename
    written = events = 0
    with path.open("wb") as f:
        while written < target_bytes:
            line, _month = chain.stamp({**template, "target_id": str(events)})
            f.write(line)
            chain.advance(line)
            written += len(line)
            events += 1
    return events


def peak_rss_kib(env: ArchiveEnv) -> int:
    """Run `agent --once` and return its own peak RSS (VmHWM since its exec: tests/support/peak.py)."""
    done = run_with_peak(["agent", "--config", str(env.config_path), "--once"], env=env.env(), cwd=REPO)
    assert done.code in ("0", "None"), done.stderr[-3000:]
    return done.peak_kib


class TestMemoryDoesNotGrowWithSegmentSize:
    @pytest.fixture
    def big_env(self, tmp_path: Path, bucket_in_env: tuple[S3Endpoint, str]) -> Callable[[str], ArchiveEnv]:
        """A factory of spools with 96 MiB segments and batches, all shipping to the test's bucket."""
        endpoint, name = bucket_in_env

        def make(label: str) -> ArchiveEnv:
            root = tmp_path / label
            root.mkdir()
            env = ArchiveEnv.create(root, endpoint, name, segment_max_bytes=96 * MIB, batch_max_bytes=96 * MIB)
            Path(env.config.spool.dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            return env

        return make

    def test_a_segment_larger_than_the_headroom_ships_in_flat_memory(
            self, big_env: Callable[[str], ArchiveEnv]) -> None:
        """An 80 MiB segment ships with a peak RSS within 24 MiB of a 64 KiB one's (holding it once would not)."""
        small, big = big_env("small"), big_env("big")
        events = write_big_segment(load_config(small.config_path), 64 * 1024)
        events += write_big_segment(load_config(big.config_path), 80 * MIB)
        small_peak, big_peak = peak_rss_kib(small), peak_rss_kib(big)
        assert list_sealed(small.spool) == list_sealed(big.spool) == []
        assert shipped_events(big) == events  # both spools ship into the one bucket
        assert big_peak - small_peak < 24 * 1024, f"peak RSS {small_peak} KiB (64 KiB) vs {big_peak} KiB (80 MiB)"


def shipped_events(env: ArchiveEnv) -> int:
    """The events in the bucket's events objects, as their metadata counts them."""
    client = env.endpoint.client()
    return sum(int(client.head_object(Bucket=env.bucket, Key=key)["Metadata"]["auditlock-events"])
               for key in env.stored_keys() if "/events/" in key)


class TestBoundedLines:
    def test_a_line_longer_than_the_bound_is_damage_found_unread(self, env: ArchiveEnv) -> None:
        """A line over the line bound is damage, named, without reading it whole (bound: 1 KiB here)."""
        [first, *_] = list_sealed(env.spool)
        data = first.path.read_bytes()
        first.path.write_bytes(data + b'{"' + b"x" * (3 * 1024 * 1024) + b'"}\n')
        lines = data.count(b"\n")

        class Discard:
            def write(self, *_args: object) -> None:
                """Nothing is kept."""

        with pytest.raises(DamagedSegmentError) as caught:
            stream_lines(first.path, Discard(), max_line_bytes=1024)
        assert caught.value.reason == f"line {lines + 1}: longer than 1024 bytes (no writer writes such a line)"
