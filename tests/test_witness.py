"""The agent's witness (issue #16): a segment rewritten after the agent saw it is never shipped as if clean.

A script with the application's rights edits a segment the witness copied — an actor changed and `prev` recomputed
down the chain, lines removed, a forged line inserted or appended, the segment deleted, an open segment's witnessed
line rewritten under its live writer — and each is found at shipping, named, set aside with the witness's copy of
what the agent saw, counted, recorded in the trail and in the next digest, and reported by `auditlock verify` on
the archive; untouched segments ship as before.

Real agents: in-process where the test drives the witness tick by tick (`follow_once`), subprocesses where the
witness thread or a SIGKILL between witnessing and shipping matters. Real files, the session's moto server.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.agent.service import STATE_DIR, Agent
from auditlock.agent.witness import Witness
from auditlock.handler.core import AuditCore
from auditlock.spool.format import OPEN_SUFFIX, QUARANTINE_DIR, SEALED_SUFFIX, parse_segment_name
from auditlock.spool.witnessed import MISSING, REWRITTEN, WITNESS_DIR
from auditlock.spool.writer import SpoolWriter
from tests.support.archive_env import REPO, ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint
from tests.support.shipping import drain_or_fail
from tests.support.spool_child import LineReader
from tests.support.verify_env import download, enable_signing, kinds, make_keypair, subjects, verify
from tests.support.verify_forgery import ArchiveCopy, reseal
from tests.support.waiting import wait_for
from tests.test_agent_service import SHIP_TIMEOUT, WRITER_SCRIPT, AgentProcess

FORGED_ACTOR = "user#999"


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """Every test here ships to the session's moto server."""
    return moto_s3


@pytest.fixture
def env(tmp_path: Path, bucket: tuple[S3Endpoint, str], monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool of 4 KiB segments whose batches are never due on their own (only a drain ships them); boto3
    credentials in the environment for the in-process agents and verify."""
    endpoint, name = bucket
    use_credentials(monkeypatch, endpoint)
    return ArchiveEnv.create(tmp_path, endpoint, name, batch_max_age_s=3600)


def sealed(env: ArchiveEnv) -> list[Path]:
    """The spool's sealed segments in chain order (one writer: name order)."""
    return sorted(p for p in env.spool.glob(f"*{SEALED_SUFFIX}") if not p.name.endswith(OPEN_SUFFIX))


def witness_dir(env: ArchiveEnv) -> Path:
    """The agent's witness copies (default state directory)."""
    return env.spool / STATE_DIR / WITNESS_DIR


def fully_witnessed(env: ArchiveEnv) -> bool:
    """Every sealed segment has a sealed copy with its exact bytes."""
    segments = sealed(env)
    return bool(segments) and all((witness_dir(env) / p.name).is_file()
                                  and (witness_dir(env) / p.name).read_bytes() == p.read_bytes() for p in segments)


def line_hash(line: bytes) -> str:
    """A line's chain hash (without its newline)."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def rewrite_chain(segments: list[Path], segment: int, line: int, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit one line and recompute `prev` down the writer's chain through all its later segments (as the issue's
    tester did): only the chain's own hashes are left to differ from what the agent saw."""
    previous: bytes | None = None
    for n, path in enumerate(segments[segment:], segment):
        lines = path.read_bytes().splitlines(keepends=True)
        for i, raw in enumerate(lines):
            event = orjson.loads(raw)
            if n == segment and i == line:
                edit(event)
            elif previous is not None:
                event["prev"] = line_hash(previous)
            if previous is not None or (n == segment and i == line):
                lines[i] = orjson.dumps(event) + b"\n"
                previous = lines[i]
        path.write_bytes(b"".join(lines))


def forge_actor(event: dict[str, Any]) -> None:
    """The tester's edit: another actor."""
    event["actor_id"] = FORGED_ACTOR


def renumbered(lines: list[bytes], first_seq: int) -> list[bytes]:
    """The lines with seq renumbered from `first_seq` and `prev` re-chained from the first line's own prev."""
    out: list[bytes] = []
    for n, raw in enumerate(lines):
        event = orjson.loads(raw)
        event["seq"] = first_seq + n
        if out:
            event["prev"] = line_hash(out[-1])
        out.append(orjson.dumps(event) + b"\n")
    return out


def insert_forged_line(path: Path) -> None:
    """A forged event inserted after the first line, seq renumbered and the chain recomputed in the segment."""
    lines = path.read_bytes().splitlines(keepends=True)
    forged = orjson.loads(lines[0])
    forged.update(actor_id=FORGED_ACTOR, event_id="0190f0f0-0000-7000-8000-000000000999")
    first_seq = orjson.loads(lines[0])["seq"]
    path.write_bytes(b"".join(renumbered([lines[0], orjson.dumps(forged) + b"\n", *lines[1:]], first_seq)))


def append_forged_line(path: Path) -> None:
    """A forged event appended after the last line of a sealed segment, continuing its chain."""
    lines = path.read_bytes().splitlines(keepends=True)
    forged = orjson.loads(lines[-1])
    forged.update(actor_id=FORGED_ACTOR, event_id="0190f0f0-0000-7000-8000-000000000998", seq=forged["seq"] + 1,
                  prev=line_hash(lines[-1]))
    path.write_bytes(b"".join(lines) + orjson.dumps(forged) + b"\n")


def truncate_two_lines(path: Path) -> None:
    """The segment's last two lines removed (what is left is still a valid chain)."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))


def witnessing_agent(env: ArchiveEnv) -> Agent:
    """An in-process agent whose witness has read everything in the spool once."""
    agent = Agent(env.config, serve_http=False)
    agent.shipper.witness.witness.follow_once()
    return agent


def rewritten_count(agent: Agent, finding: str) -> float:
    """`auditlock_segments_rewritten_total{finding}` of an in-process agent."""
    value = agent.metrics.registry.get_sample_value("auditlock_segments_rewritten_total", {"finding": finding})
    return value or 0.0


def trail_records(env: ArchiveEnv) -> list[dict[str, Any]]:
    """The agent's `auditlock.spool_rewritten` events in the archive."""
    return [e for e in env.archive_events() if e["event_type"] == "auditlock.spool_rewritten"]


def assert_set_aside(env: ArchiveEnv, name: str, original: bytes, finding: str) -> dict[str, Any]:
    """The segment is in quarantine/ with the finding as its reason (unless it vanished), the witness's copy of what
    the agent saw beside it byte for byte, and the finding's evidence; returns the evidence."""
    quarantine = env.spool / QUARANTINE_DIR
    if finding == REWRITTEN:
        assert (quarantine / f"{name}.reason.txt").read_text().split(" ", 1)[1].startswith(f"{finding}: ")
    assert (quarantine / f"{name}.witnessed").read_bytes() == original, "what the agent saw is kept"
    evidence: dict[str, Any] = orjson.loads((quarantine / f"{name}.witness.json").read_bytes())
    assert (evidence["finding"], evidence["segment"]) == (finding, name)
    assert evidence["witnessed_hash"] == line_hash(original.splitlines()[-1])
    return evidence


def assert_archive_reports(env: ArchiveEnv, finding: str, names: list[str]) -> None:
    """The archive holds the trail's record of each set-aside segment, and `verify` names each one."""
    assert sorted(r["payload"]["segment"] for r in trail_records(env) if r["payload"]["finding"] == finding) == names
    status, report = verify("--config", str(env.config_path))
    assert status == 1
    assert finding in kinds(report)
    assert subjects(report, finding) == {f"segment {name}" for name in names}
    assert "witness mismatch" not in kinds(report), "what shipped is what was witnessed"


class TestRewriteOfASealedSegment:
    """A witnessed sealed segment changed in any way is set aside as `rewritten before shipping`."""

    @pytest.mark.parametrize("tamper", [
        pytest.param(lambda p: rewrite_chain([p], 0, 3, forge_actor), id="actor-rechained"),
        pytest.param(truncate_two_lines, id="truncated"),
        pytest.param(insert_forged_line, id="inserted"),
        pytest.param(append_forged_line, id="appended"),
    ])
    def test_tampered_segment_is_set_aside_and_the_rest_ships(self, env: ArchiveEnv,
                                                              tamper: Callable[[Path], None]) -> None:
        """Only the tampered segment is held back: named, counted, its original kept; the others ship."""
        written = env.write_events(30)
        segments = sealed(env)
        assert len(segments) >= 3
        agent = witnessing_agent(env)
        target, original = segments[1], segments[1].read_bytes()
        tamper(target)

        drain_or_fail(env.config, agent=agent)

        assert_set_aside(env, target.name, original, REWRITTEN)
        assert rewritten_count(agent, REWRITTEN) == 1
        held_back = {orjson.loads(line)["event_id"] for line in original.splitlines()}
        shipped = {e["event_id"] for e in env.archive_events() if e["event_type"] == "order.updated"}
        assert shipped == {r["event_id"] for r in written} - held_back
        assert FORGED_ACTOR not in {e["actor_id"] for e in env.archive_events()}
        assert_archive_reports(env, REWRITTEN, [target.name])

    def test_chain_recomputed_through_later_segments_sets_each_aside(self, env: ArchiveEnv) -> None:
        """The issue's forgery: user#999 and prev recomputed down the chain; every changed segment is held back."""
        env.write_events(30)
        segments = sealed(env)
        originals = [p.read_bytes() for p in segments]
        agent = witnessing_agent(env)
        rewrite_chain(segments, 1, 2, forge_actor)

        drain_or_fail(env.config, agent=agent)

        for path, original in zip(segments[1:], originals[1:], strict=True):
            assert_set_aside(env, path.name, original, REWRITTEN)
        assert rewritten_count(agent, REWRITTEN) == len(segments) - 1
        assert_archive_reports(env, REWRITTEN, sorted(p.name for p in segments[1:]))


class TestDeletedSegment:
    """A witnessed segment that vanishes without the agent shipping it is `witnessed segment missing`."""

    def test_deleted_segment_is_reported_with_what_the_agent_saw(self, env: ArchiveEnv) -> None:
        """The witness's copy is kept in quarantine/ as the evidence; the other segments ship."""
        env.write_events(30)
        segments = sealed(env)
        agent = witnessing_agent(env)
        target, original = segments[1], segments[1].read_bytes()
        target.unlink()

        drain_or_fail(env.config, agent=agent)

        evidence = assert_set_aside(env, target.name, original, MISSING)
        assert evidence["witnessed_bytes"] == len(original)
        assert rewritten_count(agent, MISSING) == 1
        assert_archive_reports(env, MISSING, [target.name])


class TestUntouchedSpool:
    """Without tampering the witness changes nothing that ships; digests carry its heads and verify agrees."""

    def test_everything_ships_and_the_witness_is_emptied(self, env: ArchiveEnv) -> None:
        """Every event ships once, no finding, the copies go with their segments, the digest records the heads."""
        written = env.write_events(30)
        last = sealed(env)[-1].read_bytes().splitlines()[-1]
        agent = witnessing_agent(env)

        drain_or_fail(env.config, agent=agent)

        assert sorted(e["event_id"] for e in env.archive_events()) == sorted(r["event_id"] for r in written)
        assert not [p for p in witness_dir(env).iterdir() if p.name.endswith(".jsonl")], "copies released"
        assert not (env.spool / QUARANTINE_DIR).exists()
        status, report = verify("--config", str(env.config_path))
        assert status == 0, report["findings"]
        heads = [d["witness"]["heads"] for d in env_digests(env) if "witness" in d]
        writer = orjson.loads(last)["writer"]
        assert {"seq": orjson.loads(last)["seq"], "hash": line_hash(last)} in [h[writer] for h in heads]


def env_digests(env: ArchiveEnv) -> list[dict[str, Any]]:
    """Every digest body in the bucket."""
    client = env.endpoint.client()
    keys = [k for k in env.stored_keys() if "/digests/" in k]
    return [orjson.loads(client.get_object(Bucket=env.bucket, Key=k)["Body"].read()) for k in keys]


class TestOpenSegment:
    """A line rewritten in an open segment, under its live writer, after the witness copied it."""

    def test_rewritten_open_line_is_found_once_the_writer_seals(self, env: ArchiveEnv) -> None:
        """Same length, chain recomputed in place; the writer goes on and seals; the segment is set aside."""
        config = env.config
        writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
        core = AuditCore(config, writer=writer)
        with auditlock.actor("user#1"):
            for n in range(4):
                core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
        [open_segment] = env.spool.glob(f"*{OPEN_SUFFIX}")
        agent = witnessing_agent(env)
        witnessed = open_segment.read_bytes()
        assert (witness_dir(env) / open_segment.name).read_bytes() == witnessed
        rewrite_chain([open_segment], 0, 1, lambda e: e.update(actor_id="user#9"))  # same length: the writer appends
        with auditlock.actor("user#1"):
            core.emit("order.updated", {"target_type": "Order", "target_id": 9, "status": "paid"})
        writer.close()
        agent.shipper.witness.witness.follow_once()

        drain_or_fail(config, agent=agent)

        name = open_segment.name.replace(OPEN_SUFFIX, SEALED_SUFFIX)
        evidence = assert_set_aside(env, name, (env.spool / QUARANTINE_DIR / f"{name}.witnessed").read_bytes(),
                                    REWRITTEN)
        assert (env.spool / QUARANTINE_DIR / f"{name}.witnessed").read_bytes().startswith(witnessed)
        assert "line 2 " in evidence["detail"]
        assert_archive_reports(env, REWRITTEN, [name])


class TestWitnessIsDurable:
    """The long-running agent's witness thread copies what is written; a SIGKILL does not lose it."""

    def test_rewrite_after_a_kill_is_found_by_the_restarted_agent(self, env: ArchiveEnv) -> None:
        """Witnessed by one agent process, killed -9, rewritten, shipped by the next: set aside, reported."""
        env.write_events(30)
        segments = sealed(env)
        agent = AgentProcess(env)
        try:
            wait_for(lambda: fully_witnessed(env) or agent.proc.poll() is not None, SHIP_TIMEOUT, "witness copies")
            assert agent.proc.poll() is None, agent.stderr_tail()
        finally:
            agent.proc.kill()
            assert agent.proc.wait(timeout=30) == -signal.SIGKILL
        original = segments[0].read_bytes()
        rewrite_chain(segments[:1], 0, 1, forge_actor)

        result = env.run_agent_once()

        assert result.returncode == 0, result.stderr
        assert "REWRITTEN BEFORE SHIPPING" in result.stderr
        assert_set_aside(env, segments[0].name, original, REWRITTEN)
        assert_archive_reports(env, REWRITTEN, [segments[0].name])


class TestVerifySpool:
    """`auditlock verify --spool` compares the spool with the agent's witness before anything ships."""

    def test_rewritten_and_deleted_segments_are_named(self, env: ArchiveEnv) -> None:
        """A rechained segment is `rewritten before shipping`, a deleted one `witnessed segment missing`."""
        env.write_events(30)
        segments = sealed(env)
        witnessing_agent(env)
        status, clean = verify("--spool", str(env.spool))
        assert status == 0, clean["findings"]
        assert clean["counts"]["witnessed segments"] == len(segments)
        rewrite_chain(segments[:1], 0, 2, forge_actor)
        segments[1].unlink()

        status, report = verify("--spool", str(env.spool))

        assert status == 1
        assert subjects(report, REWRITTEN) == {segments[0].name}
        assert subjects(report, MISSING) == {segments[1].name}

    def test_witness_in_another_state_dir(self, env: ArchiveEnv, tmp_path: Path) -> None:
        """`--state-dir` points at an agent whose state lives outside the spool."""
        env.write_events(10)
        config = env.config_path.read_text().replace("[agent]\n", f'[agent]\nstate_dir = "{tmp_path / "state"}"\n')
        env.config_path.write_text(config)
        witnessing_agent(env)
        append_forged_line(sealed(env)[0])

        _status, default = verify("--spool", str(env.spool))
        status, report = verify("--spool", str(env.spool), "--state-dir", str(tmp_path / "state"))

        assert REWRITTEN not in kinds(default)
        assert status == 1
        assert subjects(report, REWRITTEN) == {sealed(env)[0].name}


def new_witness(env: ArchiveEnv) -> Witness:
    """The witness of the env's agent, as a start of the agent would load it."""
    config = env.config
    return Witness(env.spool / STATE_DIR, env.spool, 2 * config.spool.segment_max_bytes,
                   2 * config.events.max_event_bytes)


class TestWitnessCopies:
    """The copies themselves: whole lines only, continuing the chain, durable across a crash mid-append."""

    def test_a_torn_copy_is_cut_back_to_whole_lines_at_start(self, env: ArchiveEnv) -> None:
        """A crash mid-append leaves half a line: the next start cuts it and re-reads the rest from the spool."""
        env.write_events(5)
        [segment] = sealed(env)
        new_witness(env).follow_once()
        copy = witness_dir(env) / segment.name
        whole = copy.read_bytes()
        first_line = whole.split(b"\n")[0] + b"\n"
        copy.rename(witness_dir(env) / segment.name.replace(SEALED_SUFFIX, OPEN_SUFFIX))
        (witness_dir(env) / segment.name.replace(SEALED_SUFFIX, OPEN_SUFFIX)).write_bytes(first_line + b'{"sch')

        witness = new_witness(env)
        witness.follow_once()

        assert copy.read_bytes() == whole, "cut back, then caught up and sealed"
        assert witness.compare(segment, parse_segment_name(segment.name)) is None  # type: ignore[arg-type]

    def test_lines_that_do_not_continue_the_copy_are_not_copied(self, env: ArchiveEnv) -> None:
        """Witnessed lines rewritten to another length under the witness: it stops, keeping what it saw."""
        config = env.config
        writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
        core = AuditCore(config, writer=writer)
        with auditlock.actor("user#1"):
            core.emit("order.updated", {"target_type": "Order", "target_id": 1, "status": "paid"})
            core.emit("order.updated", {"target_type": "Order", "target_id": 2, "status": "paid"})
        [open_segment] = env.spool.glob(f"*{OPEN_SUFFIX}")
        witness = new_witness(env)
        witness.follow_once()
        seen = (witness_dir(env) / open_segment.name).read_bytes()
        rewrite_chain([open_segment], 0, 0, forge_actor)  # longer: the writer's next line lands past the old end
        with auditlock.actor("user#1"):
            core.emit("order.updated", {"target_type": "Order", "target_id": 3, "status": "paid"})

        witness.follow_once()

        assert (witness_dir(env) / open_segment.name).read_bytes() == seen
        problem = witness.compare(open_segment, parse_segment_name(open_segment.name))  # type: ignore[arg-type]
        assert problem is not None
        assert problem.startswith("line 1 ")
        writer.close()


class TestArchiveAgainstTheWitness:
    """Digests carry the witnessed heads: an archive re-sealed after an edit still disagrees with them."""

    def test_resealed_copy_names_the_writer_whose_chain_differs(self, env: ArchiveEnv, tmp_path: Path) -> None:
        """A forger with the signing key edits a shipped event and recomputes every hash: `witness mismatch`."""
        private, public = make_keypair(tmp_path)
        enable_signing(env, private)
        written = env.write_events(30)
        drain_or_fail(env.config, agent=witnessing_agent(env))
        pristine = download(env, tmp_path / "pristine")
        status, clean = verify("--source", str(pristine), "--public-key", str(public))
        assert status == 0, clean["findings"]
        forged = ArchiveCopy.of(pristine, tmp_path / "forged")
        [key] = forged.stored()
        events = forged.events(key)
        events[3]["actor_id"] = FORGED_ACTOR
        forged.write_events(key, events)
        reseal(forged, private.read_bytes())

        status, report = verify("--source", str(forged.root), "--public-key", str(public))

        assert status == 1
        assert kinds(report) == {"witness mismatch"}, report["findings"]
        assert subjects(report, "witness mismatch") == {f"writer {written[0]['writer']}"}


class TestDeadWritersSegment:
    """A witnessed open segment of a dead writer that recovery quarantines keeps its copy; a change is named."""

    def test_edited_segment_of_a_killed_writer_is_reported_as_rewritten(self, env: ArchiveEnv) -> None:
        """Edited without re-chaining, recovery quarantines it as damaged; the witness names the rewrite too."""
        writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(env.config_path), "6"], env=env.env(),
                                  cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            LineReader(writer).until_count(6, timeout=SHIP_TIMEOUT)
        finally:
            writer.kill()
            writer.wait(timeout=30)
        [open_segment] = env.spool.glob(f"*{OPEN_SUFFIX}")
        agent = witnessing_agent(env)
        seen = open_segment.read_bytes()
        lines = seen.splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"user#7"', b'"user#9"')  # the chain now breaks at line 4
        open_segment.write_bytes(b"".join(lines))

        drain_or_fail(env.config, agent=agent)

        quarantine = env.spool / QUARANTINE_DIR
        assert "damaged open segment" in (quarantine / f"{open_segment.name}.reason.txt").read_text()
        assert (quarantine / f"{open_segment.name}.witnessed").read_bytes() == seen, "what the agent saw is kept"
        evidence = orjson.loads((quarantine / f"{open_segment.name}.witness.json").read_bytes())
        assert evidence["finding"] == REWRITTEN
        assert evidence["segment"] == open_segment.name.replace(OPEN_SUFFIX, SEALED_SUFFIX)
        assert evidence["detail"].startswith("line 3 ")
        assert rewritten_count(agent, REWRITTEN) == 1
