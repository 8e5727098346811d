"""`auditlock verify` on the command line: usage errors (exit 2), the text report, light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auditlock.verify.findings import CHAIN_BREAK, SEQ_GAP, Report, write_text
from tests.support.verify_env import verify


class TestUsageErrors:
    @pytest.mark.parametrize(("args", "flag"), [
        (["--since", "yesterday"], "--since"),
        (["--since", "2026-12", "--until", "2026-11"], "--until"),
        (["--open-grace", "soon"], "--open-grace"),
        (["--spool", ".", "--source", "."], "--spool"),
        (["--public-key", "/nonexistent/key.pem"], "--public-key"),
    ])
    def test_bad_arguments_exit_2_naming_the_flag(self, args: list[str], flag: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        """A bad flag value exits 2 with a message naming the flag."""
        status, report = verify(*args)
        assert status == 2
        assert report == {}
        assert f"argument {flag}" in capsys.readouterr().err

    def test_public_key_not_ed25519(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file that is not an Ed25519 public key in PEM is a usage error."""
        key = tmp_path / "key.pem"
        key.write_text("not a key\n")
        status, _ = verify("--source", str(tmp_path), "--public-key", str(key))
        assert status == 2
        assert "not an Ed25519 public key" in capsys.readouterr().err

    def test_missing_source_directory(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A --source that is not a directory means verification could not run: exit 2, not a finding."""
        status, _ = verify("--source", str(tmp_path / "absent"))
        assert status == 2
        assert "not a directory" in capsys.readouterr().err

    def test_missing_config(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Verifying the bucket without a readable config exits 2."""
        status, _ = verify("--config", str(tmp_path / "absent.toml"))
        assert status == 2
        assert "cannot verify" in capsys.readouterr().err


class TestReport:
    def test_empty_copy_is_nothing_to_verify(self, tmp_path: Path) -> None:
        """An empty directory copy (the wrong directory?) is not passed as clean: exit 3, nothing to verify."""
        status, report = verify("--source", str(tmp_path))
        assert status == 3
        assert (report["clean"], report["nothing_to_verify"], report["findings"]) == (False, True, [])
        assert any(note.startswith("nothing to verify: no digest and no events object") for note in report["notes"])

    def test_text_groups_findings_by_kind(self) -> None:
        """The text report prints each kind once with its count, findings under it, then the verdict."""
        report = Report("directory x")
        report.add(CHAIN_BREAK, "writer b", "seq 4 in k: prev does not match")
        report.add(SEQ_GAP, "writer a", "seq 1–2 missing")
        report.add(SEQ_GAP, "writer c", "seq 7–9 missing")
        report.count("events", 10)
        lines: list[str] = []

        class Out:
            def write(self, text: str) -> None:
                lines.extend(text.splitlines())

            def writelines(self, texts: list[str]) -> None:
                for text in texts:
                    self.write(text)

        write_text(report, Out())  # type: ignore[arg-type]
        assert lines[1] == "checked: 10 events"
        assert lines.index("seq gap (2)") < lines.index("chain break (1)")
        assert lines[lines.index("seq gap (2)") + 1] == "  writer a: seq 1–2 missing"
        assert lines[-1] == "result: 3 findings"

    def test_spool_check_does_not_import_boto3(self, tmp_path: Path) -> None:
        """`verify --spool` and `--source` run without loading boto3 (auditors may not have it)."""
        code = ("import sys; from auditlock.cli import main; "
                f"s = main(['verify', '--spool', {str(tmp_path)!r}]); "
                f"t = main(['verify', '--source', {str(tmp_path)!r}]); "
                "sys.exit(10 + s + t if 'boto3' in sys.modules else s + t)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert result.returncode == 3, result.stderr  # an empty spool is clean; an empty copy has nothing to verify
