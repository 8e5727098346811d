"""The command line: check-config, and the console script itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auditlock.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "auditlock.toml"


class TestCheckConfig:
    def test_example_config_is_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The shipped example config passes and prints OK."""
        assert main(["check-config", str(EXAMPLE)]) == 0
        assert capsys.readouterr().out.startswith(f"OK: {EXAMPLE}")

    def test_every_error_is_printed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad file lists every problem and exits 1."""
        path = tmp_path / "bad.toml"
        path.write_text('service = "x"\n[spool]\ndirr = "s"\n[events]\ninclude = ["a.*"]\n[retention]\n'
                        'default = "std"\n')
        assert main(["check-config", str(path)]) == 1
        out = capsys.readouterr().out
        assert "unknown key 'dirr' in [spool]; did you mean 'dir'?" in out
        assert "[spool] dir is required" in out
        assert "[retention.classes] must define at least one class" in out

    def test_missing_hmac_key_is_a_warning(self, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        """A key variable not set here warns but does not fail (the agent does not need it)."""
        monkeypatch.delenv("SHOP_AUDIT_HMAC_KEY", raising=False)
        assert main(["check-config", str(EXAMPLE)]) == 0
        assert "warning: [hmac] key_env: environment variable SHOP_AUDIT_HMAC_KEY is not set" in capsys.readouterr().out


class TestConsoleScript:
    def test_python_dash_m(self) -> None:
        """`python -m auditlock check-config` runs the same command."""
        result = subprocess.run([sys.executable, "-m", "auditlock", "check-config", str(EXAMPLE)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("OK:")

    def test_usage_error_exits_2(self) -> None:
        """An unknown command is a usage error with exit status 2."""
        result = subprocess.run([sys.executable, "-m", "auditlock", "frobnicate"], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 2
        assert "invalid choice" in result.stderr
