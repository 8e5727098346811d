"""`auditlock verify` on an archive with nothing in it (an empty bucket, a wrong prefix, a range before the first
batch): never `result: clean` — exit 3, "nothing to verify" — while a shipped archive still verifies clean."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from auditlock.agent.service import Agent
from auditlock.cli import main
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.verify_env import verify


@pytest.fixture
def env(s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool and config for an empty Object Lock bucket (moto and RGW); credentials in the environment."""
    use_credentials(monkeypatch, s3)
    bucket = f"auditlock-verify-{uuid.uuid4().hex[:12]}"
    make_lock_bucket(s3.client(), bucket)
    return ArchiveEnv.create(tmp_path, s3, bucket)


def with_prefix(env: ArchiveEnv, prefix: str) -> Path:
    """The env's config pointing at another prefix of the same bucket."""
    path = env.root / f"{prefix}.toml"
    path.write_text(env.config_path.read_text().replace('prefix = "audit"', f'prefix = "{prefix}"'))
    return path


class TestNothingToVerify:
    def test_empty_bucket(self, env: ArchiveEnv, capsys: pytest.CaptureFixture[str]) -> None:
        """An empty bucket prints `result: nothing to verify` with what to check, and exits 3."""
        assert main(["verify", "--config", str(env.config_path)]) == 3
        out = capsys.readouterr().out
        assert "Check [sink] bucket and prefix" in out
        assert out.splitlines()[-1] == "result: nothing to verify"

    def test_wrong_prefix_of_a_shipped_archive(self, env: ArchiveEnv) -> None:
        """The right bucket with a wrong prefix is not clean: exit 3; the right prefix verifies clean (0)."""
        env.write_events(5)
        Agent(env.config, serve_http=False).run_once()
        status, report = verify("--config", str(with_prefix(env, "audits")))
        assert (status, report["clean"], report["nothing_to_verify"]) == (3, False, True)
        status, report = verify("--config", str(env.config_path))
        assert (status, report["clean"], report["nothing_to_verify"]) == (0, True, False)

    def test_range_before_the_first_batch(self, env: ArchiveEnv) -> None:
        """A range in which nothing was shipped has nothing to verify either (the range is named in the note)."""
        env.write_events(3)
        Agent(env.config, serve_http=False).run_once()
        status, report = verify("--config", str(env.config_path), "--since", "2001-01", "--until", "2001-02")
        assert status == 3
        assert any("in the selected months" in note for note in report["notes"])

    def test_missing_bucket_could_not_run(self, env: ArchiveEnv, capsys: pytest.CaptureFixture[str]) -> None:
        """A bucket that does not exist is an error, not an empty archive: exit 2."""
        path = env.root / "missing.toml"
        path.write_text(env.config_path.read_text().replace(f'bucket = "{env.bucket}"',
                                                            f'bucket = "{env.bucket}-missing"'))
        assert main(["verify", "--config", str(path)]) == 2
        assert "cannot verify" in capsys.readouterr().err
