"""A damaged agent ledger: the agent is SIGKILLed at a failpoint, its ledger is then damaged, and the restarted
agent must recover — every event in exactly one object, one version per key, no fork in the digest chain
(`auditlock verify` clean), the damaged file kept, and the damage said loudly.

Real `auditlock agent --once` subprocesses, real files, the session's moto server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from auditlock.agent.batch import build_objects, list_sealed, plan_batch
from auditlock.agent.digests import CHAIN_FILE
from auditlock.agent.ledger import DAMAGED_PREFIX, LEDGER_FILE
from auditlock.agent.service import STATE_DIR
from auditlock.spool.format import parse_segment_name
from tests.support.archive_env import ArchiveEnv, two_class_archive
from tests.support.s3servers import S3Endpoint
from tests.support.spool_files import spool_events
from tests.support.verify_env import verify

Damage = Callable[[bytes], bytes]


def truncated(ledger: bytes) -> bytes:
    """Cut in the middle, as a write lost by the disk would leave it."""
    return ledger[: len(ledger) // 2]


def garbage(ledger: bytes) -> bytes:
    """Not JSON at all."""
    return b"\x00\xffnot a ledger\x07" * 8


def wrong_schema(ledger: bytes) -> bytes:
    """JSON of another shape (a future version, fields missing)."""
    return orjson.dumps({"version": 2, "state": "uploading"})


def hostile_names(ledger: bytes) -> bytes:
    """A well-formed "confirmed" ledger naming files outside the spool: nothing of it may be deleted."""
    return orjson.dumps({"version": 1, "state": "confirmed", "segments": ["../auditlock.toml"], "objects": [],
                         "digest": None})


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """These tests run against the session's moto server."""
    return moto_s3


@pytest.fixture
def env(tmp_path: Path, bucket: tuple[S3Endpoint, str], monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool with events of two retention classes (one batch = two objects and a digest); credentials set."""
    return two_class_archive(tmp_path, bucket, monkeypatch, events_per_class=30)


def objects_in_first_batch(env: ArchiveEnv) -> int:
    """How many events objects the agent's first batch will PUT (before its digest)."""
    config = env.config
    batch = plan_batch(list_sealed(env.spool), config.sink.batch_max_bytes)
    return len(build_objects(batch, config.sink.prefix, config.retention.classes).objects)


def kill_at(env: ArchiveEnv, failpoint: str) -> None:
    """Run the agent until it SIGKILLs itself at the failpoint (`name:n`)."""
    result = env.run_agent_once(AUDITLOCK_FAILPOINT=failpoint)
    assert result.returncode == -9, f"not killed at {failpoint}: rc {result.returncode}\n{result.stderr[-3000:]}"


def log_lines(stderr: str) -> list[dict[str, object]]:
    """The agent's JSON log lines."""
    lines = []
    for raw in stderr.splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return lines


class TestDamagedLedger:
    """Whatever state the lost ledger was in, the restart recovers without losing or duplicating an event."""

    @pytest.mark.parametrize(("failpoint", "damage", "says"), [
        # "uploading": one object landed; the rebuilt batch finds it present
        ("after_put:1", truncated, "digest adopted as chain head: none; 0 delivered"),
        # the digest landed, the chain head was not advanced: adopted, its segments deleted, nothing re-sent
        ("after_put:LAST", garbage, "is the chain head now"),
        # "confirmed": one segment already deleted; the others are found in the head digest's objects
        ("during_delete:1", wrong_schema, "before the ledger was lost: deleted"),
        # "digesting": the digest not sent yet; a ledger naming a file outside the spool deletes nothing
        ("before_digest_put:1", hostile_names, "digest adopted as chain head: none; 0 delivered"),
    ], ids=["uploading", "digest-landed", "confirmed", "digesting-hostile"])
    def test_restart_recovers_every_event_exactly_once(self, env: ArchiveEnv, failpoint: str, damage: Damage,
                                                       says: str) -> None:
        """SIGKILL at the failpoint, damage the ledger, restart: each event once, verify clean, file kept."""
        written = Counter(event["event_id"] for event in spool_events(env.spool))
        kill_at(env, failpoint.replace("LAST", str(objects_in_first_batch(env) + 1)))
        ledger = env.spool / STATE_DIR / LEDGER_FILE
        damaged = damage(ledger.read_bytes())
        ledger.write_bytes(damaged)

        result = env.run_agent_once()

        assert result.returncode == 0, result.stderr[-4000:]
        archived = Counter(event["event_id"] for event in env.archive_events(closings=True))
        assert archived == written, "every written event archived exactly once"
        assert env.archive_versions() == len(env.archive_keys()), "an object was written twice"
        assert [p.name for p in env.spool.iterdir() if parse_segment_name(p.name)] == []
        assert not ledger.exists()
        kept = sorted((env.spool / STATE_DIR).glob(f"{DAMAGED_PREFIX}*.json"))
        assert [p.read_bytes() for p in kept] == [damaged], "the damaged ledger is kept, unchanged"
        assert env.config_path.exists(), "a file the damaged ledger named outside the spool was deleted"
        errors = [line for line in log_lines(result.stderr) if "LEDGER DAMAGED" in str(line["event"])]
        assert errors, result.stderr[-3000:]
        assert errors[0]["level"] == "error"
        assert says in result.stderr, result.stderr[-3000:]
        status, report = verify("--config", str(env.config_path))
        assert (status, report["findings"]) == (0, []), report

        env.write_events(5)  # the next batch's digest carries the recovery as evidence
        assert env.run_agent_once().returncode == 0
        status, report = verify("--config", str(env.config_path))
        assert (status, report["findings"]) == (0, []), report
        noted = [note for note in report["notes"] if "recovered from a damaged state file" in note]
        assert len(noted) == 1, report["notes"]
        assert kept[0].name in noted[0]

    def test_a_second_restart_finds_nothing_to_recover(self, env: ArchiveEnv) -> None:
        """The damaged file is set aside once; the next start is an ordinary start."""
        kill_at(env, "after_put:1")
        (env.spool / STATE_DIR / LEDGER_FILE).write_bytes(b"{")
        assert env.run_agent_once().returncode == 0
        again = env.run_agent_once()
        assert again.returncode == 0, again.stderr[-3000:]
        assert "LEDGER DAMAGED" not in again.stderr
        assert len(list((env.spool / STATE_DIR).glob(f"{DAMAGED_PREFIX}*.json"))) == 1


class TestDamagedChainState:
    """A damaged digest-chain state file does not crash-loop the agent: set aside, a new chain, said loudly."""

    def test_a_new_chain_starts_and_its_first_digest_says_why(self, env: ArchiveEnv) -> None:
        """Garbage in digest-chain.json: the agent ships under a new agent id; verify is clean and notes it."""
        assert env.run_agent_once().returncode == 0
        state = env.spool / STATE_DIR / CHAIN_FILE
        old_id = orjson.loads(state.read_bytes())["agent_id"]
        state.write_bytes(b'{"agent_id": 7')
        env.write_events(5)

        result = env.run_agent_once()

        assert result.returncode == 0, result.stderr[-3000:]
        assert "DIGEST CHAIN STATE DAMAGED" in result.stderr
        assert [p.read_bytes() for p in (env.spool / STATE_DIR).glob("digest-chain.damaged-*.json")] == [
            b'{"agent_id": 7']
        assert orjson.loads(state.read_bytes())["agent_id"] != old_id
        status, report = verify("--config", str(env.config_path))
        assert (status, report["findings"]) == (0, []), report
        assert [note for note in report["notes"] if "recovered from a damaged state file (digest-chain" in note]
