"""Two identities (issue #16): the application and the agent as two real users sharing only the spool's group.

The spool is laid out as docs/operations.md ("Two identities") tells an operator to: owned by the agent's user,
group the spool's group, mode 3770. The application's side is the real writer in a subprocess of the application's
user; the agent is `auditlock agent --once` in a subprocess of the agent's user, shipping to moto.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.agent.service import AGENT_LOCK_FILE, STATE_DIR
from auditlock.spool.format import DROPS_DIR, QUARANTINE_DIR
from tests.support.archive_env import ArchiveEnv
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.spool_files import segment_paths
from tests.support.users import TwoUsers, User, attempt, child_env
from tests.support.waiting import wait_for

WARNING = "run as this agent's own user"
SPOOL_MODE = 0o3770  # docs/operations.md, "Two identities": the agent's, setgid, sticky, the group may write
SEGMENT_MODE = 0o640  # written by the application, read by the agent through the group
REFUSED = {"EACCES", "EPERM"}


class Deployment:
    """A spool prepared for two users, its config, and the two users' processes."""

    def __init__(self, root: Path, users: TwoUsers, env: ArchiveEnv) -> None:
        self.root = root
        self.users = users
        self.env = env
        self.spool = env.spool
        self.spool.mkdir()
        os.chown(self.spool, users.agent.uid, users.spool_gid)  # install -d -o agent -g spool -m 3770
        os.chmod(self.spool, SPOOL_MODE)
        env.config_path.chmod(0o644)

    def write(self, count: int, *, user: User | None = None, torn: bool = False) -> list[str]:
        """Write `count` events as the application's user (or `user`); their event ids."""
        argv = [sys.executable, "-m", "tests.support.users", "write", str(self.env.config_path), str(count)]
        done = subprocess.run([*argv, *(["--torn"] if torn else [])], capture_output=True, timeout=120, check=False,
                              env=child_env(self.root), **self.users.popen_args(user or self.users.app))
        assert done.returncode == 0, done.stderr.decode()
        ids: list[str] = orjson.loads(done.stdout)
        return ids

    def agent_once(self) -> subprocess.CompletedProcess[str]:
        """`auditlock agent --once` as the agent's user."""
        return subprocess.run(self.env.agent_command("--once"), capture_output=True, text=True, timeout=180,
                              check=False, env={**self.env.env(), "HOME": str(self.root)},
                              **self.users.popen_args(self.users.agent))

    def start_agent(self, log: Path) -> subprocess.Popen[bytes]:
        """The long-running `auditlock agent` as the agent's user, its stderr into `log`."""
        with log.open("wb") as stderr:
            return subprocess.Popen(self.env.agent_command(), stdout=subprocess.DEVNULL, stderr=stderr,
                                    env={**self.env.env(), "HOME": str(self.root)},
                                    **self.users.popen_args(self.users.agent))

    def ship(self) -> str:
        """Run the agent once, which must succeed; its stderr."""
        result = self.agent_once()
        assert result.returncode == 0, result.stderr
        return result.stderr

    def digests(self) -> list[dict[str, Any]]:
        """Every digest the agent stored, parsed."""
        client = self.env.endpoint.client()
        listed = client.list_objects_v2(Bucket=self.env.bucket, Prefix="audit/digests/").get("Contents", [])
        return [orjson.loads(client.get_object(Bucket=self.env.bucket, Key=o["Key"])["Body"].read()) for o in listed]

    def attempt_as_app(self, *operations: list[str]) -> dict[str, str]:
        """File operations tried as the application's user."""
        return attempt(self.users, self.users.app, self.root, [list(op) for op in operations])


@pytest.fixture
def deployment(two_users: TwoUsers, moto_s3: S3Endpoint) -> Iterator[Deployment]:
    """A two-user spool under a directory both users may traverse (pytest's tmp_path is 0700 root's)."""
    root = Path(tempfile.mkdtemp(prefix="auditlock-identities-"))
    root.chmod(0o755)
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-ids-{uuid.uuid4().hex[:12]}")
    try:
        yield Deployment(root, two_users, ArchiveEnv.create(root, moto_s3, bucket))
    finally:
        shutil.rmtree(root)


class TestShippingAcrossUsers:
    def test_app_segments_are_group_readable_and_not_the_agents(self, deployment: Deployment) -> None:
        """The application's user writes segments 0640 in the spool's group, owned by itself."""
        deployment.write(3)
        [segment] = segment_paths(deployment.spool)
        st = segment.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            deployment.users.app.uid, deployment.users.spool_gid, SEGMENT_MODE)

    def test_agent_ships_the_apps_events_exactly_once(self, deployment: Deployment) -> None:
        """The agent's user ships what the application's user wrote, once each, and deletes the segments."""
        written = deployment.write(5) + deployment.write(4)
        stderr = deployment.ship()
        assert [e["event_id"] for e in deployment.env.archive_events()] == written
        assert deployment.env.archive_versions() == len(deployment.env.archive_keys())
        assert segment_paths(deployment.spool) == []
        assert WARNING not in stderr

    def test_agent_drops_a_dead_app_writers_torn_tail_without_writing_its_file(self, deployment: Deployment) -> None:
        """A torn tail in the application user's 0640 segment is dropped by copy; every whole line ships."""
        written = deployment.write(4, torn=True)
        deployment.ship()
        assert [e["event_id"] for e in deployment.env.archive_events()] == written
        assert sorted(p.name for p in deployment.spool.iterdir() if not p.name.startswith(".")) == []


    def test_agent_reads_the_drop_counts_of_an_app_user(self, deployment: Deployment) -> None:
        """Drop files (and drops/) an application user writes under a tight umask reach the agent's digest."""
        config = deployment.root / "app.toml"
        config.write_text(deployment.env.config_path.read_text().replace(
            "[spool]\n", '[spool]\non_error = "drop"\nmax_bytes = 65536\n', 1))
        config.chmod(0o644)
        argv = [sys.executable, "-m", "tests.support.users", "overflow", str(config), "400"]
        done = subprocess.run(argv, capture_output=True, timeout=120, check=False, env=child_env(deployment.root),
                              umask=0o077, **deployment.users.popen_args(deployment.users.app))
        assert done.returncode == 0, done.stderr.decode()
        dropped = int(done.stdout)
        assert dropped > 0, "the test meant the spool to overflow"
        drops = deployment.spool / DROPS_DIR
        [drop_file] = list(drops.iterdir())
        assert (stat.S_IMODE(drops.stat().st_mode), stat.S_IMODE(drop_file.stat().st_mode)) == (SPOOL_MODE, 0o640)
        deployment.ship()
        recorded = [d["app_drops"] for d in deployment.digests() if "app_drops" in d]
        assert [drops["dropped"] for drops in recorded[0].values()] == [{"spool_full": dropped}]


class TestAgentStateIsTheAgents:
    def test_app_cannot_write_create_or_delete_the_agents_state(self, deployment: Deployment) -> None:
        """In the agent's state directory every write, create and delete by the application's user fails EACCES."""
        deployment.write(2)
        deployment.ship()
        state = deployment.spool / STATE_DIR
        [state_file, *_] = sorted(state.iterdir())
        results = deployment.attempt_as_app(
            ["append", str(state_file)], ["create", str(state / "forged.json")], ["unlink", str(state_file)],
            ["rename", str(state_file), str(state / "moved.json")], ["mkdir", str(state / "sub")])
        assert set(results.values()) == {"EACCES"}, results

    def test_app_cannot_move_or_replace_the_agents_entries_in_the_spool(self, deployment: Deployment) -> None:
        """The sticky spool keeps the application's user from renaming or deleting the agent's state and lock."""
        deployment.write(2)
        deployment.ship()
        spool = deployment.spool
        results = deployment.attempt_as_app(
            ["rename", str(spool / STATE_DIR), str(spool / "stolen")], ["rmdir", str(spool / STATE_DIR)],
            ["unlink", str(spool / AGENT_LOCK_FILE)], ["chmod", str(spool / STATE_DIR)], ["chmod", str(spool)])
        assert set(results.values()) <= REFUSED, results
        assert stat.S_IMODE((spool / STATE_DIR).stat().st_mode) == 0o700

    def test_app_cannot_delete_or_rename_quarantined_segments(self, deployment: Deployment) -> None:
        """What the agent quarantined (or set aside) is out of the application user's reach."""
        deployment.write(3)
        [segment] = segment_paths(deployment.spool)
        assert deployment.attempt_as_app(["append", str(segment)]) == {f"append {segment}": "ok"}  # damage it
        deployment.ship()
        quarantine = deployment.spool / QUARANTINE_DIR
        kept = quarantine / segment.name
        assert kept.exists()
        results = deployment.attempt_as_app(
            ["unlink", str(kept)], ["rename", str(kept), str(deployment.spool / segment.name)],
            ["unlink", f"{kept}.reason.txt"], ["rename", str(quarantine), str(deployment.spool / "q")],
            ["create", str(quarantine / "planted.jsonl")])
        assert set(results.values()) <= REFUSED, results
        assert kept.exists()

    def test_agent_refuses_a_state_directory_the_app_planted(self, deployment: Deployment) -> None:
        """A state directory the application's user created first is refused, naming its owner and the fix."""
        planted = deployment.spool / STATE_DIR
        assert deployment.attempt_as_app(["mkdir", str(planted)], ["chmod", str(planted)]) == {
            f"mkdir {planted}": "ok", f"chmod {planted}": "ok"}
        result = deployment.agent_once()
        assert result.returncode == 1
        assert f"belongs to uid {deployment.users.app.uid}" in result.stderr
        assert "Two identities" in result.stderr


class TestAgentDirectories:
    def test_agent_narrows_a_state_directory_an_fsgroup_widened(self, deployment: Deployment) -> None:
        """A state directory made group-writable (as a volume's fsGroup does) is narrowed back to 0700, with a
        warning."""
        deployment.write(1)
        assert "narrowed" not in deployment.ship(), "a state directory the agent created is private already"
        state = deployment.spool / STATE_DIR
        state.chmod(0o2770)
        deployment.write(1)
        stderr = deployment.ship()
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert "narrowed to 0700" in stderr

    def test_agent_refuses_a_sticky_spool_it_does_not_own(self, deployment: Deployment) -> None:
        """A sticky spool owned by the application's user is refused at start, with the chown that fixes it."""
        os.chown(deployment.spool, deployment.users.app.uid, deployment.users.spool_gid)
        deployment.write(1)
        result = deployment.agent_once()
        assert result.returncode == 1
        assert f"chown {deployment.users.agent.uid}" in result.stderr
        assert len(segment_paths(deployment.spool)) == 1


class TestSameIdentityWarning:
    def test_warns_when_the_writers_run_as_the_agents_user(self, deployment: Deployment) -> None:
        """Events written by the agent's own user make the agent warn what that gives up, and still ship."""
        written = deployment.write(2, user=deployment.users.agent)
        stderr = deployment.ship()
        assert WARNING in stderr
        assert "rewrite sealed, not yet shipped segments" in stderr
        assert [e["event_id"] for e in deployment.env.archive_events()] == written

    def test_an_agent_started_first_warns_once_a_writer_of_its_own_user_appears(
            self, deployment: Deployment, processes: list[subprocess.Popen[bytes]]) -> None:
        """An agent that found no writer at start warns when the first segment of its own user shows up."""
        log = deployment.root / "agent.log"
        agent = deployment.start_agent(log)
        processes.append(agent)
        wait_for((deployment.spool / AGENT_LOCK_FILE).exists, what="the agent's lock")
        deployment.write(2, user=deployment.users.agent)
        wait_for(lambda: WARNING in log.read_text(), what="the same-user warning")
        agent.terminate()
        assert agent.wait(timeout=120) == 0
        assert log.read_text().count(WARNING) == 1
