"""The witness with two real users (issue #16): the application's user can rewrite its own spool segment, but not
the agent's state, so the rewrite is still found at shipping.

The application runs as a second user (`tests/support/users.py`) in a spool directory shared through its
group (0770); the agent runs as root with its state in the spool's `.agent` (0700, root's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from auditlock.agent.service import STATE_DIR, Agent
from auditlock.spool.format import QUARANTINE_DIR, SEALED_SUFFIX
from auditlock.spool.witnessed import REWRITTEN, WITNESS_DIR
from tests.support.archive_env import REPO, ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint
from tests.support.shipping import drain_or_fail
from tests.support.users import TwoUsers, User
from tests.test_agent_service import WRITER_SCRIPT

# Run as the application's user: rewrite a segment (its own file) with a recomputed chain, then try the same on the
# agent's copy of it; print what each attempt did.
TAMPER_SCRIPT = """
import hashlib, sys
import orjson

def rewrite(path):
    lines = open(path, "rb").read().splitlines(keepends=True)
    event = orjson.loads(lines[1]); event["actor_id"] = "user#999"; lines[1] = orjson.dumps(event) + b"\\n"
    for n in range(2, len(lines)):
        event = orjson.loads(lines[n]); event["prev"] = hashlib.sha256(lines[n - 1][:-1]).hexdigest()
        lines[n] = orjson.dumps(event) + b"\\n"
    open(path, "wb").write(b"".join(lines))

outcome = {}
for what, path in (("segment", sys.argv[1]), ("copy", sys.argv[2])):
    try:
        rewrite(path)
        outcome[what] = "rewritten"
    except OSError as exc:
        outcome[what] = type(exc).__name__
print(orjson.dumps(outcome).decode())
"""


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """The session's moto server."""
    return moto_s3


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A fresh directory (0755) under /tmp that every user can traverse; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="auditlock-witness-uids-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_as(user: User, spool_gid: int, env: ArchiveEnv, *argv: str) -> str:
    """Run a Python script as the application's user (with the spool's group); its stdout."""
    result = subprocess.run([sys.executable, *argv], user=user.uid, group=user.gid, extra_groups=[spool_gid],
                            env=env.env(),
                            cwd=REPO, input=b"", capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


class TestTwoUsers:
    """The application's user cannot write the agent's witness, so its rewrite of the spool is still caught."""

    def test_application_user_rewrites_its_segment_but_not_the_witness(
        self, two_users: TwoUsers, shared_root: Path,
        bucket: tuple[S3Endpoint, str], monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The copy refuses the application's user (EACCES); the rewritten segment is set aside at shipping."""
        endpoint, name = bucket
        use_credentials(monkeypatch, endpoint)
        env = ArchiveEnv.create(shared_root, endpoint, name, batch_max_age_s=3600)
        env.spool.mkdir(mode=0o770)
        os.chown(env.spool, 0, two_users.spool_gid)
        env.spool.chmod(0o770)  # the application's group writes the spool; nobody else
        run_as(two_users.app, two_users.spool_gid, env, "-c", WRITER_SCRIPT, str(env.config_path), "10")
        segment = sorted(env.spool.glob(f"*{SEALED_SUFFIX}"))[0]
        assert segment.stat().st_uid == two_users.app.uid, "written by the application's user"
        agent = Agent(env.config, serve_http=False)
        agent.shipper.witness.witness.follow_once()
        assert (env.spool / STATE_DIR).stat().st_uid == 0, "the agent's state is the agent's user's"
        copy = env.spool / STATE_DIR / WITNESS_DIR / segment.name
        assert copy.read_bytes() == segment.read_bytes()

        tampered = run_as(two_users.app, two_users.spool_gid, env, "-c", TAMPER_SCRIPT, str(segment), str(copy))
        outcome = orjson.loads(tampered)

        assert outcome == {"segment": "rewritten", "copy": "PermissionError"}
        drain_or_fail(env.config, agent=agent)
        reason = (env.spool / QUARANTINE_DIR / f"{segment.name}.reason.txt").read_text()
        assert f" {REWRITTEN}: line 2 " in reason
        assert "user#999" not in {e["actor_id"] for e in env.archive_events()}
