"""SIGKILL of the agent at seeded random failpoints, then a clean restart: every event in the archive exactly once.

Each run has its own spool (small segments, so a drain takes several batches of several segments, and each
batch becomes one object per retention class) and its own Object Lock bucket. It writes a seeded mix of
`order.updated` (class standard) and `auth.login_failed` (class security) events in alternating chunks, then
runs `auditlock agent --once` with `AUDITLOCK_FAILPOINT=<name>:<n>` (see `auditlock.agent.failpoints`), so the
agent SIGKILLs itself at the n-th pass through that step — after the ledger intent, before or after a PUT,
after the ledger says confirmed, between segment deletions, or before the ledger is cleared. Some runs are
killed twice in a row, at two different failpoints. Then the agent runs once more without a failpoint.

How n is chosen: before each killed start the test replays the drain that start will do (the ledger's batch,
then `plan_batch` over the remaining sealed segments, `build_objects` for the keys, the bucket for what is
already there) and counts the passes through every failpoint; n is that count's first, last or a seeded
random pass, so kills land at both ends of a multi-batch drain and in between.

Checked after every kill: nothing is lost yet (each written event is in the archive or still in a sealed
segment). Checked after the restart: the archive holds exactly the written events, each once and unchanged;
there is one object version per key; the spool holds no segments; the ledger file is gone.

Each run is its own test (targeted rather than many: every failpoint at its first, a random and its last
pass on moto, seeded double kills, and the RADOS Gateway plans), so no test nears pytest's timeout and a
failure names its seed and plan; rerun one by its test id. The session's moto server is shared.
"""

from __future__ import annotations

import gzip
import random
import signal
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from auditlock.agent.batch import SealedSegment, build_objects, list_sealed, plan_batch
from auditlock.agent.failpoints import NAMES
from auditlock.agent.ledger import CONFIRMED, DIGESTING, LEDGER_FILE, Ledger
from auditlock.agent.service import STATE_DIR
from auditlock.spool.format import NEW_SUFFIX, QUARANTINE_DIR, SEALED_SUFFIX
from auditlock.spool.reader import group_lines
from tests.support.archive_env import ArchiveEnv
from tests.support.s3servers import S3Endpoint, make_lock_bucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SEED = 20261127
FIRST, ANY, LAST = "first", "any", "last"  # which predicted pass of the failpoint the kill lands on
# Per kill: (a failpoint, or None for a seeded choice among those the start will pass; which pass).
Plan = tuple[tuple[str | None, str], ...]
MOTO_SINGLE: tuple[Plan, ...] = tuple(((name, hit),) for name in NAMES for hit in (FIRST, ANY, LAST))
MOTO_DOUBLE: tuple[Plan, ...] = ((("after_put", ANY), ("before_put", FIRST)),
                                 (("after_ledger_intent", LAST), (None, ANY)),
                                 (("before_digest_put", ANY), ("after_put", ANY)),
                                 (("during_delete", FIRST), (None, ANY)),
                                 ((None, ANY), (None, ANY)),
                                 ((None, ANY), (None, LAST)))
# RADOS Gateway: every failpoint, and a kill right after a PUT (the case the HEAD check exists for) in most runs.
RGW_PLANS: tuple[Plan, ...] = tuple(
    tuple((name, ANY) for name in names) for names in (
        ("after_put",), ("after_put",), ("before_put",), ("after_ledger_intent",), ("after_ledger_confirmed",),
        ("during_delete",), ("before_ledger_clear",), ("before_digest_put",),
        ("after_put", "before_put"), ("during_delete", "after_put"), ("after_ledger_intent", "after_put")))
EVENT_TYPES = {"standard": "order.updated", "security": "auth.login_failed"}
KILLED = -signal.SIGKILL


@dataclass
class Kill:
    """One start of the agent with a failpoint armed, and how it ended."""

    failpoint: str
    n: int
    predicted_hits: int
    returncode: int | None = None

    @property
    def crashed(self) -> bool:
        """The agent died by SIGKILL at the failpoint."""
        return self.returncode == KILLED

    def __str__(self) -> str:
        return f"{self.failpoint}:{self.n} (of {self.predicted_hits} predicted hits) -> rc {self.returncode}"


@dataclass
class CrashRun:
    """One run: its plan, what happened, and every broken property (empty when the run passed)."""

    seed: int
    plan: Plan
    events: int = 0
    objects: int = 0
    kills: list[Kill] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Seed, size and failpoints: enough to reproduce the run."""
        kills = "; ".join(str(k) for k in self.kills)
        return f"seed={self.seed} plan={self.plan} events={self.events} objects={self.objects} [{kills}]"


# ----------------------------------------------------------------------------------------------- reading


def _archive_keys(client: S3Client, bucket: str) -> list[str]:
    """The events object keys of a bucket."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="audit/events/"):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def _archive(client: S3Client, bucket: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The events object keys of a bucket and every event in them (writers' clean-end records left out)."""
    keys = _archive_keys(client, bucket)
    events: list[dict[str, Any]] = []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        events += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
    return keys, [e for e in events if e["event_type"] != CLOSED]


def _spooled_ids(spool: Path) -> set[str]:
    """The event ids still in sealed segments of the spool (writers' clean-end records left out)."""
    events = (orjson.loads(line) for segment in list_sealed(spool)
              for group in group_lines(segment.path).groups.values() for line in group.lines)
    return {e["event_id"] for e in events if e["event_type"] != CLOSED}


CLOSED = "auditlock.writer_closed"


def _segment_files(spool: Path) -> list[str]:
    """Every segment file (open, sealed or being created) left in the spool."""
    return sorted(p.name for p in spool.iterdir() if p.name.endswith((SEALED_SUFFIX, NEW_SUFFIX)))


# ---------------------------------------------------------------------------------------------- predicting


def _expected_hits(env: ArchiveEnv, client: S3Client) -> Counter[str]:
    """How often the next `agent --once` passes each failpoint: replay its resume and drain without running it."""
    config = env.config
    present = set(_archive_keys(client, env.bucket))
    sealed = list_sealed(env.spool)
    hits: Counter[str] = Counter()

    def ship(batch: list[SealedSegment], *, fresh: bool) -> None:
        built = build_objects(batch, config.sink.prefix, config.retention.classes)
        hits["after_ledger_intent"] += fresh
        puts = sum(1 for obj in built.objects if obj.key not in present) + 1  # + the batch's digest
        hits["before_put"] += puts
        hits["after_put"] += puts
        hits["before_digest_put"] += 1
        finish()
        hits["during_delete"] += len(batch)

    def finish(*, digest_puts: int = 0) -> None:
        hits["before_put"] += digest_puts
        hits["after_put"] += digest_puts
        hits["after_ledger_confirmed"] += 1
        hits["before_ledger_clear"] += 1

    intent = Ledger(env.spool / STATE_DIR).read()
    if intent is not None:
        by_name = {s.path.name: s for s in sealed}
        in_flight = [by_name[name] for name in intent.segments if name in by_name]
        if intent.state == CONFIRMED:
            hits["during_delete"] += len(in_flight)
        elif intent.state == DIGESTING and intent.digest is not None:
            finish(digest_puts=0 if _exists(client, env.bucket, intent.digest[0]) else 1)
            hits["during_delete"] += len(in_flight)
        else:
            ship(in_flight, fresh=False)
        sealed = [s for s in sealed if s.path.name not in intent.segments]
    while sealed:
        batch = plan_batch(sealed, config.sink.batch_max_bytes)
        ship(batch, fresh=True)
        sealed = sealed[len(batch):]
    return hits


def _exists(client: S3Client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- one run


def _write_events(env: ArchiveEnv, rng: random.Random) -> dict[str, dict[str, Any]]:
    """50–400 events in chunks of alternating retention class, each chunk by a fresh writer; by event_id."""
    total = rng.randint(50, 400)
    classes = ["standard", "security"]
    rng.shuffle(classes)
    written: dict[str, dict[str, Any]] = {}
    chunk_index = 0
    while len(written) < total:
        count = min(rng.randint(5, 60), total - len(written))
        event_type = EVENT_TYPES[classes[chunk_index % 2]]
        for record in env.write_events(count, event_type=event_type, actor=f"user#{chunk_index}"):
            written[record["event_id"]] = record
        chunk_index += 1
    return written


def _plan_kill(run: CrashRun, env: ArchiveEnv, client: S3Client, rng: random.Random,
               step: tuple[str | None, str]) -> Kill:
    """The next kill: the planned failpoint (or a seeded one the next start passes, not used yet in this run) at
    its first, last or a seeded pass as predicted by replaying the drain."""
    planned, hit = step
    hits = _expected_hits(env, client)
    unused = [name for name in NAMES if name not in {k.failpoint for k in run.kills}]
    failpoint = planned or rng.choice([name for name in unused if hits[name]] or unused)
    predicted = max(hits[failpoint], 1)
    n = {FIRST: 1, LAST: predicted}.get(hit) or rng.randint(1, predicted)
    kill = Kill(failpoint, n, hits[failpoint])
    run.kills.append(kill)
    return kill


def _crash_run(root: Path, endpoint: S3Endpoint, client: S3Client, seed: int, plan: Plan) -> CrashRun:
    """Write events, kill the agent once per `plan` entry, restart it cleanly, check everything."""
    rng = random.Random(seed)
    run = CrashRun(seed, plan)
    root.mkdir(parents=True)
    bucket = make_lock_bucket(client, f"crash-{seed}-{uuid.uuid4().hex[:8]}")
    env = ArchiveEnv.create(root, endpoint, bucket, segment_max_bytes=4096,
                            batch_max_bytes=rng.choice([16384, 24576, 32768]))
    written = _write_events(env, rng)
    run.events = len(written)
    for step in plan:
        kill = _plan_kill(run, env, client, rng, step)
        done = env.run_agent_once(AUDITLOCK_FAILPOINT=f"{kill.failpoint}:{kill.n}")
        kill.returncode = done.returncode
        if not kill.crashed:
            run.problems.append(f"the agent with failpoint {kill} did not die there (predicted wrong, or it failed):"
                                f"\n{done.stderr}")
            return run
        _, archived = _archive(client, bucket)
        lost = written.keys() - {e["event_id"] for e in archived} - _spooled_ids(env.spool)
        if lost:
            run.problems.append(f"after the kill at {kill}, {len(lost)} events are neither in the archive nor in a "
                                f"sealed segment, e.g. {sorted(lost)[:3]}")

    done = env.run_agent_once()
    if done.returncode != 0:
        run.problems.append(f"the clean restart exited {done.returncode}:\n{done.stderr}")
        return run
    for complaint in ("no longer rebuilds identically", "segments that are gone", "QUARANTINED"):
        if complaint in done.stderr:
            run.problems.append(f"the clean restart logged {complaint!r}:\n{done.stderr}")
    run.problems += _check_final_state(run, env, client, written)
    return run


def _check_final_state(run: CrashRun, env: ArchiveEnv, client: S3Client,
                       written: dict[str, dict[str, Any]]) -> list[str]:
    """Every event exactly once and unchanged, one version per key, an empty spool, no ledger."""
    problems = []
    keys, archived = _archive(client, env.bucket)
    run.objects = len(keys)
    counts = Counter(e["event_id"] for e in archived)
    duplicated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(written.keys() - counts.keys())
    unknown = sorted(counts.keys() - written.keys())
    if duplicated:
        problems.append(f"{len(duplicated)} events archived more than once, e.g. {duplicated[:3]}")
    if missing:
        problems.append(f"{len(missing)} events missing from the archive, e.g. {missing[:3]}")
    if unknown:
        problems.append(f"{len(unknown)} archived events were never written, e.g. {unknown[:3]}")
    changed = sorted(e["event_id"] for e in archived if e["event_id"] in written and e != written[e["event_id"]])
    if changed:
        problems.append(f"{len(changed)} archived events differ from what was written, e.g. {changed[:3]}")
    versions = env.archive_versions()
    if versions != len(set(keys)):
        problems.append(f"{versions} object versions for {len(set(keys))} keys: duplicate uploads")
    left = _segment_files(env.spool)
    if left:
        problems.append(f"segments left in the spool: {left}")
    quarantine = env.spool / QUARANTINE_DIR
    if quarantine.exists() and any(quarantine.iterdir()):
        problems.append(f"quarantined: {sorted(p.name for p in quarantine.iterdir())}")
    if (env.spool / STATE_DIR / LEDGER_FILE).exists():
        problems.append(f"the ledger is still there: {(env.spool / STATE_DIR / LEDGER_FILE).read_text()}")
    return problems


# ------------------------------------------------------------------------------------------------- tests


def _plan_id(plan: Plan) -> str:
    return "+".join(f"{name or 'seeded'}@{hit}" for name, hit in plan)


def _seeded(first_seed: int, plans: tuple[Plan, ...]) -> list[Any]:
    """pytest params (seed, plan), one seed per run, each with the plan as its id."""
    return [pytest.param(first_seed + i, plan, id=f"{i}-{_plan_id(plan)}") for i, plan in enumerate(plans)]


def _assert_run(run: CrashRun) -> None:
    """No broken property; the message carries the seed, the plan and what each kill did."""
    assert not run.problems, f"{run.describe()}\n  " + "\n  ".join(run.problems)


class TestAgentCrashMatrix:
    """Kill the agent anywhere in its ship cycle; a restart always leaves every event in S3 exactly once."""

    @pytest.mark.parametrize(("seed", "plan"), _seeded(SEED, MOTO_SINGLE))
    def test_one_kill_then_restart_moto(self, seed: int, plan: Plan, moto_s3: S3Endpoint, tmp_path: Path) -> None:
        """A run on moto killed once at a failpoint's first, a random or its last pass, then restarted cleanly."""
        _assert_run(_crash_run(tmp_path / "run", moto_s3, moto_s3.client(), seed, plan))

    @pytest.mark.parametrize(("seed", "plan"), _seeded(SEED + 10_000, MOTO_DOUBLE))
    def test_two_kills_then_restart_moto(self, seed: int, plan: Plan, moto_s3: S3Endpoint, tmp_path: Path) -> None:
        """A run on moto killed twice in a row at two different failpoints, then restarted cleanly."""
        _assert_run(_crash_run(tmp_path / "run", moto_s3, moto_s3.client(), seed, plan))

    @pytest.mark.rgw
    @pytest.mark.parametrize(("seed", "plan"), _seeded(SEED + 20_000, RGW_PLANS))
    def test_kills_then_restart_rados_gateway(self, seed: int, plan: Plan, rgw_s3: S3Endpoint,
                                              tmp_path: Path) -> None:
        """RADOS Gateway ignores If-None-Match in versioned buckets: the HEAD check alone must prevent duplicates."""
        _assert_run(_crash_run(tmp_path / "run", rgw_s3, rgw_s3.client(), seed, plan))
