"""`auditlock demo` as a newcomer runs it: a subprocess that must report a complete, clean, locked archive."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from auditlock.cli import main

SUMMARY = re.compile(r"^demo: events emitted=(\d+) shipped=(\d+) verify=(\S+) delete=(\S+)$")


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m auditlock demo ARGS`, output captured."""
    return subprocess.run([sys.executable, "-m", "auditlock", "demo", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def summary(stdout: str) -> tuple[int, int, str, str]:
    """The machine-readable last line: (emitted, shipped, verify, delete)."""
    match = SUMMARY.match(stdout.rstrip("\n").splitlines()[-1])
    assert match, stdout
    return int(match[1]), int(match[2]), match[3], match[4]


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """One plain run of the demo, shared by the tests that only read its output."""
    return run_demo()


class TestDemo:
    def test_reports_complete_clean_and_locked(self, demo: subprocess.CompletedProcess[str]) -> None:
        """Every emitted event shipped, verify is clean, the locked version's delete was refused; exit 0."""
        assert demo.returncode == 0, demo.stdout + demo.stderr
        emitted, shipped, verify, delete = summary(demo.stdout)
        assert emitted == shipped > 0
        assert (verify, delete) == ("clean", "refused")

    def test_shows_each_step(self, demo: subprocess.CompletedProcess[str]) -> None:
        """The numbered steps appear in order, ending with the query answer, the report and the 403."""
        steps = re.findall(r"^\[(\d+)/(\d+)\]", demo.stdout, flags=re.MULTILINE)
        assert [int(n) for n, _ in steps] == list(range(1, int(steps[0][1]) + 1))
        assert "AccessDenied (HTTP 403)" in demo.stdout
        assert "result: clean" in demo.stdout
        assert "(3 rows)" in demo.stdout

    def test_dropped_field_and_hmac_are_visible(self, demo: subprocess.CompletedProcess[str]) -> None:
        """The non-allowlisted field is shown dropped and the email stored only as hmac."""
        card = next(line for line in demo.stdout.splitlines() if line.strip().startswith("card_number"))
        assert "dropped" in card
        email = next(line for line in demo.stdout.splitlines() if "changes.email" in line)
        assert "hmac-sha256:" in email

    def test_says_its_service_and_agent_share_one_user(self, demo: subprocess.CompletedProcess[str]) -> None:
        """One user runs both: the agent's warning is shown, then what a deployment does instead."""
        assert "run as this agent's own user" in demo.stderr
        assert "a deployment runs the agent as a user of its own" in demo.stdout

    def test_keep_leaves_data_that_verifies(self, tmp_path: Path) -> None:
        """--keep DIR leaves config, keys, spool, cache and an archive copy that `verify --source` finds clean."""
        kept = tmp_path / "demo"
        done = run_demo("--keep", str(kept))
        assert done.returncode == 0, done.stdout + done.stderr
        for name in ("auditlock.toml", "hmac.key", "digest-key.pem", "digest-key.pub.pem"):
            assert (kept / name).is_file(), name
        assert (kept / "spool").is_dir()
        assert list((kept / "cache").rglob("*.jsonl.gz"))
        assert list((kept / "archive" / "events").rglob("*.jsonl.gz"))
        assert list((kept / "archive" / "digests").rglob("*.json"))
        assert f"auditlock verify --source {kept / 'archive'}" in done.stdout
        verify = subprocess.run([sys.executable, "-m", "auditlock", "verify", "--source", str(kept / "archive"),
                                 "--public-key", str(kept / "digest-key.pub.pem")], capture_output=True, text=True,
                                timeout=120, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "result: clean" in verify.stdout

    def test_keep_leaves_a_private_archive_copy_under_umask_022(self, tmp_path: Path) -> None:
        """With umask 022, --keep's directory and archive copy are 0700 and every archive file 0600."""
        kept = tmp_path / "demo"
        done = subprocess.run(["sh", "-c", 'umask 022 && exec "$0" -m auditlock demo --keep "$1"', sys.executable,
                               str(kept)], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert stat.S_IMODE(kept.stat().st_mode) == 0o700
        archive = kept / "archive"
        modes = {stat.S_IMODE(p.stat().st_mode) for p in archive.rglob("*") if p.is_file()}
        assert modes == {0o600}
        assert {stat.S_IMODE(p.stat().st_mode) for p in [archive, *archive.rglob("*")] if p.is_dir()} == {0o700}

    def test_keep_refuses_a_used_directory(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--keep on a non-empty directory is a usage error (exit 2) naming the flag; nothing starts."""
        (tmp_path / "something").write_text("x")
        assert main(["demo", "--keep", str(tmp_path)]) == 2
        assert "argument --keep" in capsys.readouterr().err
