"""The agent treats the spool as hostile (issue #15 items 3-7, 11, 19, 20): what an attacker with write access to
the spool leaves there is quarantined with a reason, never followed, never blocks, never crashes a pass, and the
good segments still ship. Real files (symlinks, FIFOs, directories, sparse files), a real agent, real moto."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from auditlock.agent.ledger import LEDGER_FILE
from auditlock.archive import layout
from auditlock.errors import SpoolError
from auditlock.handler.encode import MAX_DEPTH
from auditlock.query.spool import count_spool_events
from auditlock.spool.files import refuse_world_writable
from auditlock.spool.format import QUARANTINE_DIR
from tests.support.archive_env import REPO, ArchiveEnv, use_credentials
from tests.support.hostile_spool import (
    planted_name,
    quarantine_reason,
    rechain,
    run_agent_once_limited,
    sealed_segments,
    set_field,
)
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.shipping import drain_or_fail

AGENT_MEMORY_CAP = 2 * 1024**3  # far above what the agent needs for these spools; far below an endless read
KEY = re.compile(r"audit/events/year=\d{4}/month=\d\d/\d{8}T\d{6}Z-[a-z0-9_-]+-[0-9a-f]{32}\.jsonl\.gz")


@pytest.fixture
def env(moto_s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool shipping to a fresh lock bucket on moto, with good events already sealed in it."""
    use_credentials(monkeypatch, moto_s3)
    name = make_lock_bucket(moto_s3.client(), f"hostile-spool-{os.urandom(6).hex()}")
    env = ArchiveEnv.create(tmp_path, moto_s3, name)
    env.write_events(20)
    return env


def good_events_shipped(env: ArchiveEnv, expected: int) -> None:
    """The spool holds no sealed segment any more, and the archive holds `expected` events under sane keys."""
    assert sealed_segments(env.spool) == []
    assert len(env.archive_events()) == expected
    assert all(KEY.fullmatch(key) for key in env.archive_keys()), env.archive_keys()


def events_in(path: Path) -> int:
    """Events of a segment other than a writer's clean-end record."""
    return sum(b"auditlock.writer_closed" not in line for line in path.read_bytes().splitlines())


class TestSymlinks:
    def test_a_symlinked_dead_writer_segment_leaves_its_target_intact(self, env: ArchiveEnv, tmp_path: Path) -> None:
        """A symlink named like a dead writer's open segment is quarantined; the file it points to keeps its bytes."""
        victim = tmp_path / "victim.db"
        victim.write_bytes(b"precious bytes that are not an event\n")
        link = env.spool / planted_name(is_open=True)
        link.symlink_to(victim)
        drain_or_fail(env.config)
        assert victim.read_bytes() == b"precious bytes that are not an event\n"
        assert "symbolic link" in quarantine_reason(env.spool, link.name)
        good_events_shipped(env, 20)

    def test_a_symlink_to_dev_zero_is_quarantined_unread(self, env: ArchiveEnv) -> None:
        """A sealed segment that is a symlink to /dev/zero is quarantined, not read until memory runs out."""
        link = env.spool / planted_name()
        link.symlink_to("/dev/zero")
        done = run_agent_once_limited(env, AGENT_MEMORY_CAP)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "symbolic link" in quarantine_reason(env.spool, link.name)
        good_events_shipped(env, 20)


class TestSpecialFiles:
    @pytest.mark.parametrize("is_open", [False, True], ids=["sealed", "open"])
    def test_a_fifo_named_like_a_segment_is_quarantined_and_the_agent_ends(self, env: ArchiveEnv,
                                                                           is_open: bool) -> None:
        """A FIFO under a segment's name is quarantined; `agent --once` ends and ships the rest."""
        fifo = env.spool / planted_name(is_open=is_open)
        os.mkfifo(fifo)
        done = env.run_agent_once(timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "FIFO" in quarantine_reason(env.spool, fifo.name)
        good_events_shipped(env, 20)

    def test_query_include_spool_does_not_block_on_a_fifo(self, env: ArchiveEnv) -> None:
        """`query --include-spool` reads around a FIFO named like a segment (counted as skipped), and ends."""
        os.mkfifo(env.spool / planted_name())
        script = ("import sys; from pathlib import Path; from auditlock.query.spool import count_spool_events; "
                  "r = count_spool_events(Path(sys.argv[1])); print(r.events, r.skipped)")
        done = subprocess.run([sys.executable, "-c", script, str(env.spool)], capture_output=True, text=True,
                              timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        events, skipped = map(int, done.stdout.split())
        assert (events, skipped) == (21, 1)  # 20 events and the writer's clean-end record

    def test_a_directory_named_like_a_segment_is_quarantined(self, env: ArchiveEnv) -> None:
        """A directory under a sealed segment's name is quarantined, instead of crashing every start."""
        directory = env.spool / planted_name()
        directory.mkdir()
        drain_or_fail(env.config)
        assert "directory" in quarantine_reason(env.spool, directory.name)
        good_events_shipped(env, 20)

    @pytest.mark.parametrize("name", ["notes.jsonl", planted_name(is_open=True)], ids=["not-a-segment", "live-open"])
    def test_a_jsonl_file_with_a_bad_first_occurred_at_does_not_end_the_pass(self, env: ArchiveEnv,
                                                                              name: str) -> None:
        """A `*.jsonl` whose first line has an unparsable occurred_at (no segment, or a live writer's open one)
        does not crash the pass's gauges; the rest ships."""
        [first, *_] = sealed_segments(env.spool)
        line = orjson.loads(first.read_bytes().splitlines()[0])
        line["occurred_at"] = "2026-13-45T99:99:99.000000Z"
        (env.spool / name).write_bytes(orjson.dumps(line) + b"\n")
        with (env.spool / name).open("rb") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a live writer holds its open segment
            drain_or_fail(env.config)
        good_events_shipped(env, 20)
        assert (env.spool / name).exists()  # not a sealed segment: not the agent's to move


class TestCraftedLines:
    @pytest.mark.parametrize("occurred_at", ["2026-12!/../../../x", "2026-13-01T00:00:00.000000Z",
                                             "2026-02-30T00:00:00.000000Z", "2026-12-01T00:00:00Z"])
    def test_a_crafted_occurred_at_quarantines_the_segment_and_never_reaches_a_key(
            self, env: ArchiveEnv, occurred_at: str) -> None:
        """A re-chained line with an invalid occurred_at quarantines its segment; the others ship under sane keys."""
        [first, *_] = sealed_segments(env.spool)
        lost = events_in(first)
        rechain(first, 0, set_field("occurred_at", occurred_at))
        drain_or_fail(env.config)
        assert "occurred_at" in quarantine_reason(env.spool, first.name)
        good_events_shipped(env, 20 - lost)

    @pytest.mark.parametrize(("edit", "reason"), [
        (lambda line: line.replace(b'"actor_id":', b'"actor_id":"user#evil","actor_id":', 1), "duplicate key"),
        (set_field("payload", "a string"), "payload is a str"),
        (lambda line: line.replace(b'"payload":{', b'"payload":{"deep":' + b"[" * 1000 + b"]" * 1000 + b",", 1),
         "nested more than"),
        (set_field("retention", "../../evil"), "retention"),
    ], ids=["duplicate-key", "string-payload", "deep-payload", "retention-path"])
    def test_a_line_readers_cannot_read_quarantines_its_segment(self, env: ArchiveEnv, edit: object,
                                                                 reason: str) -> None:
        """A re-chained line that breaks readers quarantines its segment with the reason; the others ship."""
        [first, *_] = sealed_segments(env.spool)
        lost = events_in(first)
        rechain(first, 1, edit)  # type: ignore[arg-type]
        drain_or_fail(env.config)
        assert reason in quarantine_reason(env.spool, first.name)
        good_events_shipped(env, 20 - lost)

    def test_a_payload_at_the_writers_depth_bound_ships(self, env: ArchiveEnv) -> None:
        """A value nested as deep as the writer allows (MAX_DEPTH inside a field) is a valid line and ships."""
        deep: object = []
        other: object = [1]
        for _ in range(MAX_DEPTH - 1):
            deep, other = [deep], [other]
        env.write_events(1, total=deep)
        env.write_events(1, before={"status": deep}, after={"status": other})  # changes: [before, after] pairs
        drain_or_fail(env.config)
        good_events_shipped(env, 22)
        assert not (env.spool / QUARANTINE_DIR).exists()

    def test_a_same_length_edit_without_rechaining_is_quarantined(self, env: ArchiveEnv) -> None:
        """A middle line edited in place (same length, prev of the next line untouched) quarantines the segment."""
        [first, *_] = sealed_segments(env.spool)
        lost = events_in(first)
        data = first.read_bytes()
        edited = data.replace(b'"status":"paid"', b'"status":"void"', 1)
        assert len(edited) == len(data)
        assert edited != data
        first.write_bytes(edited)
        drain_or_fail(env.config)
        assert "does not match the previous line's hash" in quarantine_reason(env.spool, first.name)
        good_events_shipped(env, 20 - lost)
        assert all(e["payload"].get("status") != "void" for e in env.archive_events())


class TestSegmentSize:
    def test_an_oversized_sealed_segment_is_quarantined_unread(self, env: ArchiveEnv) -> None:
        """A sealed segment far over the read bound (an 8 GiB sparse file) is quarantined without being read."""
        huge = env.spool / planted_name()
        with huge.open("wb") as f:
            f.truncate(8 * 1024**3)
        done = run_agent_once_limited(env, AGENT_MEMORY_CAP)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "over the read bound" in quarantine_reason(env.spool, huge.name)
        good_events_shipped(env, 20)

    def test_a_segment_just_over_the_bound_is_refused_and_one_at_it_is_read(self, env: ArchiveEnv) -> None:
        """The bound is twice the largest segment a writer with the config writes: one byte over it is refused."""
        config = env.config
        bound = 2 * max(config.spool.segment_max_bytes, config.events.max_event_bytes)  # docs/agent.md
        over = env.spool / planted_name()
        over.write_bytes(b"x" * (bound + 1))
        at = env.spool / planted_name(1)
        at.write_bytes(b"x" * bound)
        drain_or_fail(config)
        assert "over the read bound" in quarantine_reason(env.spool, over.name)
        assert "line 1: incomplete line" in quarantine_reason(env.spool, at.name)  # read, found damaged


class TestStateFiles:
    def test_a_ledger_naming_a_path_outside_the_spool_leaves_it_untouched(self, env: ArchiveEnv,
                                                                            tmp_path: Path) -> None:
        """A crafted confirmed ledger naming `../../../victim` deletes nothing outside the spool."""
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep me")
        depth = len(env.spool.relative_to(tmp_path).parts) + 1  # spool/.agent/ -> tmp_path
        state = env.spool / ".agent"
        state.mkdir(mode=0o700, exist_ok=True)
        (state / LEDGER_FILE).write_bytes(orjson.dumps({
            "version": 1, "state": "confirmed", "segments": ["../" * depth + "victim"], "objects": [],
            "digest": None}))
        drain_or_fail(env.config)
        assert victim.read_bytes() == b"keep me"
        good_events_shipped(env, 20)

    def test_a_symlinked_agent_lock_leaves_its_target_intact(self, env: ArchiveEnv, tmp_path: Path) -> None:
        """`.agent.lock` planted as a symlink is not followed (it is truncated and written): a clear error instead."""
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep me")
        (env.spool / ".agent.lock").symlink_to(victim)
        done = env.run_agent_once(timeout=120)
        assert victim.read_bytes() == b"keep me"
        assert done.returncode != 0
        assert "remove it and start the agent again" in done.stderr

    @pytest.mark.parametrize("where", ["digest-chain", "ledger", "drops"])
    def test_a_fifo_as_a_state_file_does_not_block_the_agent(self, env: ArchiveEnv, where: str) -> None:
        """A FIFO in place of the digest-chain state, the ledger or a drop file is never waited on."""
        state = env.spool / ".agent"
        state.mkdir(mode=0o700, exist_ok=True)
        (env.spool / "drops").mkdir(mode=0o700, exist_ok=True)
        path = {"digest-chain": state / "digest-chain.json", "ledger": state / LEDGER_FILE,
                "drops": env.spool / "drops" / f"{'cd' * 16}.json"}[where]
        os.mkfifo(path)
        done = env.run_agent_once(timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        good_events_shipped(env, 20)


class TestWorldWritableCheck:
    """`refuse_world_writable` (the agent's start): only a spool every local user may write is refused."""

    @pytest.mark.parametrize("mode", [0o700, 0o750, 0o770], ids=oct)
    def test_private_or_group_writable_spool_is_accepted(self, tmp_path: Path, mode: int) -> None:
        """A spool private to its owner or shared with a trusted group passes the check."""
        tmp_path.chmod(mode)
        refuse_world_writable(tmp_path)

    @pytest.mark.parametrize("mode", [0o777, 0o702], ids=oct)
    def test_world_writable_spool_is_refused(self, tmp_path: Path, mode: int) -> None:
        """A spool others may write is refused, whatever the owner's and group's bits."""
        tmp_path.chmod(mode)
        with pytest.raises(SpoolError, match="writable by every local user"):
            refuse_world_writable(tmp_path)


class TestModes:
    def test_a_world_writable_spool_is_refused(self, env: ArchiveEnv) -> None:
        """The agent refuses to start on a spool directory every local user may write, naming `chmod`."""
        env.spool.chmod(0o777)
        done = env.run_agent_once(timeout=120)
        assert done.returncode != 0
        assert "writable by every local user" in done.stderr
        assert f"chmod 0700 {env.spool}" in done.stderr
        assert len(sealed_segments(env.spool)) > 0  # nothing shipped

    def test_a_group_writable_spool_is_used(self, env: ArchiveEnv) -> None:
        """A spool shared with a trusted group (0770) is used."""
        env.spool.chmod(0o770)
        drain_or_fail(env.config)
        good_events_shipped(env, 20)

    def test_state_and_quarantine_files_are_private_under_umask_022(self, env: ArchiveEnv) -> None:
        """digest-chain.json and quarantine reason files are 0600, the quarantine dir 0700, under umask 022."""
        os.mkdir(env.spool / planted_name())
        previous = os.umask(0o022)
        try:
            drain_or_fail(env.config)
        finally:
            os.umask(previous)
        quarantine = env.spool / QUARANTINE_DIR
        assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700
        assert stat.S_IMODE((quarantine / f"{planted_name()}.reason.txt").stat().st_mode) == 0o600
        assert stat.S_IMODE((env.spool / ".agent" / "digest-chain.json").stat().st_mode) == 0o600

    def test_a_quarantined_name_never_replaces_an_earlier_one(self, env: ArchiveEnv) -> None:
        """A second file quarantined under the same name is kept beside the first, with its own reason."""
        name = planted_name()
        for _ in range(2):
            os.mkdir(env.spool / name)
            drain_or_fail(env.config)
        quarantine = env.spool / QUARANTINE_DIR
        assert (quarantine / name).is_dir()
        assert (quarantine / f"{name}.1").is_dir()
        assert (quarantine / f"{name}.1.reason.txt").exists()


class TestQueryIncludeSpool:
    def test_symlinks_directories_and_huge_files_are_skipped(self, env: ArchiveEnv, tmp_path: Path) -> None:
        """`--include-spool` reads the good segments and counts a symlink, a directory and a huge file as skipped."""
        outside = tmp_path / "outside.jsonl"
        [first, *_] = sealed_segments(env.spool)
        outside.write_bytes(first.read_bytes())
        (env.spool / planted_name(0)).symlink_to(outside)
        (env.spool / planted_name(1)).mkdir()
        with (env.spool / planted_name(2)).open("wb") as f:
            f.truncate(2 * 1024**3)
        read = count_spool_events(env.spool)
        assert (read.events, read.skipped) == (21, 3)


class TestVerifySpool:
    def test_special_files_are_findings_and_never_block(self, env: ArchiveEnv) -> None:
        """`verify --spool` reports a FIFO and a symlink named like segments, and a FIFO reason file, and ends."""
        os.mkfifo(env.spool / planted_name(0))
        (env.spool / planted_name(1)).symlink_to("/dev/zero")
        quarantine = env.spool / QUARANTINE_DIR
        quarantine.mkdir(mode=0o700)
        (quarantine / planted_name(2)).write_bytes(b"")
        os.mkfifo(quarantine / f"{planted_name(2)}.reason.txt")
        script = ("import sys; from pathlib import Path; from auditlock.verify.spool import verify_spool; "
                  "r = verify_spool(Path(sys.argv[1])); print('\\n'.join(f'{f.kind} {f.subject} {f.detail}' "
                  "for f in r.findings))")
        done = subprocess.run([sys.executable, "-c", script, str(env.spool)], capture_output=True, text=True,
                              timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        assert f"{planted_name(0)} not read: a FIFO, not a regular file" in done.stdout
        assert f"{planted_name(1)} not read: a symbolic link, not a regular file" in done.stdout
        assert "reason file not read: a FIFO" in done.stdout


def test_layout_keys_are_what_the_key_pattern_expects() -> None:
    """The key pattern these tests check archive keys with matches a key the layout builds."""
    assert KEY.fullmatch(layout.object_key("audit", "2026-05-01T00:00:00.000000Z", "standard", "0" * 64))
