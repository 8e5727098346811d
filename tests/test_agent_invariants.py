"""The agent's delivery invariants, each pinned by a fast deterministic test (issue #14 items 5, 6, 11).

The random crash matrix (`tests/test_agent_crash.py`) finds these only in a few of its runs; here every
invariant has one SIGKILL at a fixed failpoint (`AUDITLOCK_FAILPOINT=name:n`, see `auditlock.agent.failpoints`)
or one live writer, and checks the state the protocol promises at exactly that point, then after a restart.

The spool holds one retention class, so a batch is one events object and its digest: `after_put:1` is right
after the events object landed, `after_put:2` right after the digest landed (before "confirmed").
Real `auditlock agent --once` and writer subprocesses, real files, the session's moto server.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.agent.ledger import CONFIRMED, DIGESTING, LEDGER_FILE, UPLOADING, Intent, Ledger
from auditlock.agent.recovery import recover_dead_writers
from auditlock.agent.service import STATE_DIR
from auditlock.spool.format import NEW_SUFFIX, OPEN_SUFFIX, QUARANTINE_DIR, SEALED_SUFFIX
from tests.support.archive_env import REPO, ArchiveEnv
from tests.support.s3servers import S3Endpoint
from tests.support.spool_child import LineReader
from tests.support.spool_files import spool_events
from tests.test_agent_service import WRITER_SCRIPT

KILLED = -signal.SIGKILL
EVENTS_PER_WRITE = 30  # about four 4 KiB segments


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """These tests run against the session's moto server."""
    return moto_s3


@pytest.fixture
def env(tmp_path: Path, bucket: tuple[S3Endpoint, str]) -> ArchiveEnv:
    """A spool of several sealed segments of one retention class; one batch holds them all."""
    endpoint, name = bucket
    archive = ArchiveEnv.create(tmp_path, endpoint, name, segment_max_bytes=4096, batch_max_bytes=1 << 20)
    archive.write_events(EVENTS_PER_WRITE)
    assert len(sealed_names(archive)) > 2, "the tests need a batch of several segments"
    return archive



# ------------------------------------------------------------------------------------------------ helpers


def sealed_names(env: ArchiveEnv) -> list[str]:
    """The sealed segment files in the spool, sorted."""
    return sorted(p.name for p in env.spool.glob(f"*{SEALED_SUFFIX}"))


def ledger(env: ArchiveEnv) -> Intent | None:
    """The agent's ledger as it is on disk."""
    return Ledger(env.spool / STATE_DIR).read()


def kill_at(env: ArchiveEnv, failpoint: str) -> None:
    """Run `agent --once` until it SIGKILLs itself at the failpoint (`name:n`)."""
    result = env.run_agent_once(AUDITLOCK_FAILPOINT=failpoint)
    assert result.returncode == KILLED, f"not killed at {failpoint}: rc {result.returncode}\n{result.stderr[-3000:]}"


def restart(env: ArchiveEnv) -> str:
    """Run `agent --once` without a failpoint; returns its stderr."""
    result = env.run_agent_once()
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def digests(env: ArchiveEnv) -> list[dict[str, Any]]:
    """Every digest in the bucket, parsed."""
    client = env.endpoint.client()
    listed = client.list_objects_v2(Bucket=env.bucket, Prefix="audit/digests/").get("Contents", [])
    return [orjson.loads(client.get_object(Bucket=env.bucket, Key=o["Key"])["Body"].read()) for o in listed]


def assert_exactly_once(env: ArchiveEnv, written: Counter[str]) -> None:
    """Each written event in exactly one object, one version per key, every object listed in exactly one digest,
    nothing left in the spool, no ledger."""
    archived = Counter(event["event_id"] for event in env.archive_events(closings=True))
    assert archived == written, "every written event archived exactly once"
    keys = env.archive_keys()
    assert env.archive_versions() == len(keys), "one version per key: nothing was PUT twice"
    listed = Counter(entry["key"] for digest in digests(env) for entry in digest["objects"])
    assert listed == Counter(keys), "every events object is listed in exactly one digest (no orphan)"
    assert not list(env.spool.glob("*.jsonl")), "the spool holds no segment"
    assert not (env.spool / STATE_DIR / LEDGER_FILE).exists(), "the ledger is cleared"


def written_ids(env: ArchiveEnv) -> Counter[str]:
    """The event ids in the spool (writers' clean-end records included: they are shipped too)."""
    return Counter(event["event_id"] for event in spool_events(env.spool))


# ---------------------------------------------------------------------------------------- item 5: recovery


def start_writer(env: ArchiveEnv, count: int, processes: list[subprocess.Popen[bytes]]) -> LineReader:
    """An application process that wrote `count` events and keeps its segment open until its stdin closes."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(env.config_path), str(count)],
                              env=env.env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    processes.append(writer)
    reader = LineReader(writer)
    reader.until_count(count)
    return reader


def open_segments(env: ArchiveEnv) -> set[Path]:
    """The open segment files in the spool."""
    return set(env.spool.glob(f"*{OPEN_SUFFIX}"))


class TestRecoveryLeavesLiveWritersAlone:
    """Invariant: recovery seals only segments whose writer is dead (their flock is free); a live writer's open
    segment is never truncated, sealed or quarantined."""

    def test_live_segment_untouched_while_a_dead_ones_is_sealed(
        self, env: ArchiveEnv, processes: list[subprocess.Popen[bytes]]
    ) -> None:
        """Invariant (live writer's segment untouched): bytes, size and name stay; only the dead one is sealed."""
        dead = start_writer(env, 5, processes)
        dead.proc.kill()
        assert dead.proc.wait(timeout=30) == KILLED
        [dead_segment] = open_segments(env)
        start_writer(env, 7, processes)
        [live_segment] = open_segments(env) - {dead_segment}
        before = live_segment.read_bytes()

        report = recover_dead_writers(env.spool)

        assert report.sealed == [dead_segment.name], "the dead writer's segment is sealed, the live one is not"
        assert (report.truncated, report.quarantined) == ([], [])
        assert live_segment.read_bytes() == before, "the live writer's bytes are untouched"
        assert live_segment.stat().st_size == len(before)
        assert not (env.spool / QUARANTINE_DIR).exists()
        assert open_segments(env) == {live_segment}, "the live writer's segment keeps its name: it is not sealed"

    def test_live_writer_goes_on_and_seals_its_own_segment(
        self, env: ArchiveEnv, processes: list[subprocess.Popen[bytes]]
    ) -> None:
        """Invariant (live writer's segment untouched): after recovery the writer closes its own segment intact."""
        live = start_writer(env, 7, processes)
        recover_dead_writers(env.spool)
        assert live.proc.stdin is not None
        live.proc.stdin.close()
        assert live.proc.wait(timeout=60) == 0, live.proc.stderr.read() if live.proc.stderr else ""

        reported = Counter(line["event_id"] for line in live.lines)
        events = spool_events(env.spool)
        assert reported - Counter(e["event_id"] for e in events) == Counter(), "every reported event is in the spool"
        assert not open_segments(env), "the writer sealed its own segment at exit"


class TestRecoveryOfStagingFiles:
    """Invariant: recovery removes only an empty `.new` staging file whose creator is gone; one still locked (its
    writer is creating it) or one holding bytes is kept."""

    def test_only_an_empty_unlocked_staging_file_goes(self, tmp_path: Path) -> None:
        """Invariant (live writer's files untouched): dead+empty removed; locked or non-empty kept."""
        spool = tmp_path / "spool"
        spool.mkdir()
        dead, held, full = (spool / f"{name}{NEW_SUFFIX}" for name in ("dead", "held", "full"))
        dead.touch()
        held.touch()
        full.write_bytes(b"{}\n")
        fd = os.open(held, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description: as a live writer's
            report = recover_dead_writers(spool)
            assert held.exists(), "a staging file whose creator holds its lock is kept"
        finally:
            os.close(fd)

        assert report.removed_empty == [dead.name]
        assert not dead.exists()
        assert full.read_bytes() == b"{}\n", "a staging file holding bytes is never removed"


# -------------------------------------------------------------------------------- item 6: the uploading intent


class TestUploadingIntent:
    """Invariant: the "uploading" intent (the batch's segments and keys) is durable before the first PUT, so a
    restart finishes exactly that batch even when other segments were sealed in the meantime."""

    def test_intent_is_durable_before_the_first_put(self, env: ArchiveEnv) -> None:
        """Invariant (intent before PUT): killed before its first PUT, the agent left the whole batch in the ledger."""
        segments = sealed_names(env)
        kill_at(env, "before_put:1")

        intent = ledger(env)
        assert intent is not None, "the intent was not written before the first PUT"
        assert intent.state == UPLOADING
        assert list(intent.segments) == segments
        assert env.stored_keys() == [], "nothing was PUT yet"

    def test_restart_finishes_the_planned_batch_when_segments_were_sealed_meanwhile(self, env: ArchiveEnv) -> None:
        """Invariant (intent before PUT): a restart re-sends the planned batch, not a bigger one: no orphan object."""
        kill_at(env, "after_put:1")  # the events object landed; the digest did not
        [landed] = env.archive_keys()
        env.write_events(EVENTS_PER_WRITE)  # sealed before the restart: would fit into the same batch
        written = written_ids(env)

        stderr = restart(env)

        assert "no longer rebuilds identically" not in stderr
        assert landed in env.archive_keys()
        assert_exactly_once(env, written)


# ------------------------------------------------------------------ item 11a: no delete before confirmation


class TestSegmentsKeptUntilConfirmed:
    """Invariant: a batch's segments are deleted only after its digest landed and "confirmed" is durable."""

    @pytest.mark.parametrize(("failpoint", "state", "deleted"), [
        ("before_digest_put:1", DIGESTING, 0),  # the events object landed, the digest not yet
        ("after_put:2", DIGESTING, 0),  # the digest landed, "confirmed" not written yet
        ("after_ledger_confirmed:1", CONFIRMED, 0),  # confirmed, nothing deleted yet
        ("during_delete:1", CONFIRMED, 1),  # confirmed, the first segment deleted
    ], ids=["before-digest", "digest-landed", "confirmed", "deleting"])
    def test_segments_stay_until_confirmed_then_go_exactly_once(self, env: ArchiveEnv, failpoint: str, state: str,
                                                                deleted: int) -> None:
        """Invariant (no delete before confirmation): killed at the step, the spool still holds what it must."""
        segments = sealed_names(env)
        written = written_ids(env)
        kill_at(env, failpoint)

        intent = ledger(env)
        assert intent is not None
        assert intent.state == state
        assert sealed_names(env) == segments[deleted:], f"at {failpoint}, exactly {deleted} segments are deleted"

        restart(env)

        assert_exactly_once(env, written)
        assert len(digests(env)) == 1, "one digest for the one batch: the restart did not send a second"


# ------------------------------------------------------------------- item 11b: deterministic object keys

BUILD_SCRIPT = """
import hashlib, sys
import orjson
from auditlock.agent.batch import build_objects, list_sealed
from auditlock.config import load_config

config = load_config(sys.argv[1])
built = build_objects(list_sealed(config.spool.dir), config.sink.prefix, config.retention.classes)
print(orjson.dumps([[o.key, hashlib.sha256(o.body).hexdigest()] for o in built.objects]).decode())
"""


def build_in_subprocess(env: ArchiveEnv, *prefix: str) -> list[list[str]]:
    """The (key, SHA-256 of the gzip bytes) of every object a fresh process builds from the spool (under `prefix`,
    e.g. Debian's `faketime`, which .ci installs; the monotonic clock stays real so thread waits work)."""
    result = subprocess.run([*prefix, sys.executable, "-c", BUILD_SCRIPT, str(env.config_path)],
                            env=env.env(FAKETIME_DONT_FAKE_MONOTONIC="1"),
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    built: list[list[str]] = json.loads(result.stdout)
    return built


class TestObjectKeysAreDeterministic:
    """Invariant: the same segments build the same keys and the same bytes, whichever process builds them, when."""

    def test_two_processes_days_apart_build_identical_objects(self, env: ArchiveEnv) -> None:
        """Invariant (deterministic keys): a process whose clock is 400 days later builds the same keys and bytes."""
        now = build_in_subprocess(env)
        later = build_in_subprocess(env, "faketime", "-f", "+400d")

        assert now, "the spool builds objects"
        assert later == now

    def test_restart_at_uploading_finds_the_landed_object(self, env: ArchiveEnv) -> None:
        """Invariant (deterministic keys): the restarted agent rebuilds the ledger's keys; HEAD finds the landed one."""
        written = written_ids(env)
        kill_at(env, "after_put:1")
        intent = ledger(env)
        assert intent is not None

        stderr = restart(env)

        assert "no longer rebuilds identically" not in stderr
        assert env.archive_keys() == sorted(key for key, _ in intent.objects)
        assert_exactly_once(env, written)

