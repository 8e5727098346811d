"""`auditlock query` and events not shipped yet: the spool read before a bucket exists (`--include-spool`
without `[sink] bucket`), and the note on stderr when the archive has nothing for the period."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from auditlock.cli import main
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket


@pytest.fixture
def env(moto_s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool and config for an (empty, Object Lock) bucket on moto; its credentials in the environment."""
    use_credentials(monkeypatch, moto_s3)
    bucket = f"auditlock-query-{uuid.uuid4().hex[:12]}"
    make_lock_bucket(moto_s3.client(), bucket)
    return ArchiveEnv.create(tmp_path, moto_s3, bucket)


def without_bucket(env: ArchiveEnv) -> Path:
    """The env's config with no `[sink] bucket` (nor endpoint): a service whose bucket does not exist yet."""
    lines = [line for line in env.config_path.read_text().splitlines()
             if not line.startswith(("bucket =", "endpoint_url ="))]
    path = env.root / "no-bucket.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def spool_lines(spool: Path) -> int:
    """How many complete lines the spool's segments hold (what the note counts)."""
    return sum(path.read_bytes().count(b"\n") for path in spool.glob("*.jsonl"))


def query(config: Path, tmp_path: Path, *args: str) -> list[str]:
    """argv of `auditlock query` with a private cache."""
    return ["query", "--config", str(config), "--cache-dir", str(tmp_path / "cache"), *args]


class TestSpoolWithoutBucket:
    def test_include_spool_reads_the_spool_without_a_bucket(self, env: ArchiveEnv, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
        """With no [sink] bucket, --include-spool prints the spool's events and says the archive was not read."""
        written = env.write_events(3)
        assert main(query(without_bucket(env), tmp_path, "--include-spool", "--format", "jsonl",
                          "--type", "order.*")) == 0
        out, err = capsys.readouterr()
        assert sorted(orjson.loads(line)["event_id"] for line in out.splitlines()) == sorted(
            e["event_id"] for e in written)
        assert "[sink] bucket is not set: the archive was not read" in err

    def test_without_include_spool_a_bucket_is_still_needed(self, env: ArchiveEnv, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
        """Without --include-spool there is nothing to read: exit 1 naming [sink] bucket."""
        assert main(query(without_bucket(env), tmp_path)) == 1
        assert "[sink] bucket is not set" in capsys.readouterr().err


class TestEmptyArchiveNote:
    def test_note_counts_the_unshipped_events(self, env: ArchiveEnv, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """An empty archive: stdout holds only the (empty) result; stderr says how many spool events
        --include-spool would add."""
        env.write_events(4)
        assert main(query(env.config_path, tmp_path)) == 0
        out, err = capsys.readouterr()
        assert out.splitlines()[-1] == "(0 rows)"
        assert "spool" not in out
        pending = spool_lines(env.spool)
        assert pending >= 4
        assert (f"has no objects for this period; the spool {env.spool} holds {pending} events not shipped yet: "
                "add --include-spool to see them") in err

    def test_note_without_a_spool_here(self, env: ArchiveEnv, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """Where the spool directory is not (a laptop, not the service's host), the note says where to run."""
        assert main(query(env.config_path, tmp_path, "--format", "jsonl")) == 0
        out, err = capsys.readouterr()
        assert out == ""
        assert "not readable here): run with --include-spool where it is" in err

    def test_no_note_with_include_spool(self, env: ArchiveEnv, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """With --include-spool the unshipped events are in the result: no note."""
        env.write_events(2)
        assert main(query(env.config_path, tmp_path, "--include-spool", "--type", "order.*",
                          "--format", "jsonl")) == 0
        out, err = capsys.readouterr()
        assert len(out.splitlines()) == 2
        assert "not shipped yet" not in err

    def test_no_note_once_the_archive_has_the_period(self, env: ArchiveEnv, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
        """After the agent shipped, the archive answers and no note is printed."""
        env.write_events(2)
        assert env.run_agent_once().returncode == 0
        assert main(query(env.config_path, tmp_path, "--type", "order.*", "--format", "jsonl")) == 0
        out, err = capsys.readouterr()
        assert len(out.splitlines()) == 2
        assert "has no objects" not in err
