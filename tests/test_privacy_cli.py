"""`auditlock erase` and `auditlock subject request|export` on the command line: usage, fail-closed order,
and what is recorded."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from auditlock.cli import main
from auditlock.config import load_config
from auditlock.privacy.keystore import open_store
from tests.conftest import config_dict
from tests.support.privacy_env import erasable_doc, write_toml
from tests.support.spool_files import spool_events


def run(*argv: str) -> tuple[int, str, str]:
    """`auditlock ARGV` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A config with erasable fields over a file store, its spool and keys under tmp_path."""
    return write_toml(tmp_path / "auditlock.toml",
                      erasable_doc(tmp_path / "spool", {"store": "file", "dir": str(tmp_path / "keys")}))


def privacy_events(config_path: Path) -> list[dict[str, object]]:
    """The privacy.* events in the config's spool."""
    spool = load_config(config_path).spool.dir
    if not spool.exists():
        return []
    return [e for e in spool_events(spool) if str(e["event_type"]).startswith("privacy.")]


class TestEraseUsage:
    @pytest.mark.parametrize("missing", ["--subject", "--actor", "--reason"])
    def test_required_flags(self, config_path: Path, missing: str) -> None:
        """Subject, actor and reason are required: exit 2 naming the flag."""
        flags = {"--subject": "Customer:42", "--actor": "user:7", "--reason": "R-1"}
        argv = [part for flag, value in flags.items() if flag != missing for part in (flag, value)]
        status, _, err = run("erase", "--config", str(config_path), *argv)
        assert status == 2
        assert missing in err

    @pytest.mark.parametrize(("subject", "reason", "message"), [
        ("42", "R-1", "is not <Type>:<id>"), ("Customer:42\n", "R-1", "is not <Type>:<id>"),
        ("Customer:42", "  ", "--reason is empty"),
    ])
    def test_bad_values_erase_and_record_nothing(self, config_path: Path, subject: str, reason: str,
                                                 message: str) -> None:
        """A malformed subject or an empty reason: exit 1 with the rule, nothing recorded."""
        status, _, err = run("erase", "--config", str(config_path), "--subject", subject, "--actor", "user:7",
                             "--reason", reason)
        assert status == 1
        assert message in err
        assert privacy_events(config_path) == []


class TestEraseFailsClosed:
    def test_store_down_records_and_destroys_nothing(self, config_path: Path, tmp_path: Path) -> None:
        """An unreachable key store: exit 1 naming it; no privacy.subject_erased is written."""
        (tmp_path / "keys").write_bytes(b"")  # the store's directory is a file: every open fails
        status, _, err = run("erase", "--config", str(config_path), "--subject", "Customer:42", "--actor",
                             "user:7", "--reason", "R-1")
        assert status == 1
        assert "file key store" in err
        assert privacy_events(config_path) == []

    def test_unrecordable_erasure_destroys_nothing(self, config_path: Path, tmp_path: Path) -> None:
        """When the event cannot be written to the spool, the keys stay (nothing done unrecorded)."""
        store = open_store(load_config(config_path).erasure)
        key = store.key_for("Customer:42")
        (tmp_path / "spool").write_bytes(b"")  # the spool directory is a file: the writer cannot start
        status, _, err = run("erase", "--config", str(config_path), "--subject", "Customer:42", "--actor",
                             "user:7", "--reason", "R-1")
        assert status == 1
        assert "spool" in err
        still = store.subject_key("Customer:42")
        assert still is not None
        assert still.key_id == key.key_id

    def test_erasure_is_recorded_before_the_keys_go(self, config_path: Path) -> None:
        """A successful erase leaves privacy.subject_erased (actor, reason, request, key count) in the spool."""
        open_store(load_config(config_path).erasure).key_for("Customer:42")
        status, out, err = run("erase", "--config", str(config_path), "--subject", "Customer:42", "--actor",
                               "user:7", "--reason", "R-1 received by mail", "--request-id", "R-1")
        assert status == 0, err
        assert "destroyed 1 key(s)" in out
        [event] = privacy_events(config_path)
        assert event["event_type"] == "privacy.subject_erased"
        assert event["actor_id"] == "user:7"
        assert event["payload"] == {"subject": "Customer:42", "reason": "R-1 received by mail",
                                    "request_id": "R-1", "keys": 1}


class TestSubjectCommands:
    @pytest.mark.parametrize("step", ["received", "fulfilled", "refused"])
    def test_request_steps_are_recorded(self, config_path: Path, step: str) -> None:
        """`subject request STEP` writes privacy.request_<step> with the request's type and id."""
        status, _, err = run("subject", "request", step, "--config", str(config_path), "--subject", "Customer:42",
                             "--actor", "user:7", "--type", "erasure", "--request-id", "R-9", "--reason", "no id")
        assert status == 0, err
        [event] = privacy_events(config_path)
        assert event["event_type"] == f"privacy.request_{step}"
        payload = {"request_type": "erasure", "request_id": "R-9", "subject": "Customer:42"}
        assert event["payload"] == (payload | {"reason": "no id"} if step == "refused" else payload)

    def test_refusal_needs_a_reason(self, config_path: Path) -> None:
        """A refused request without --reason is a usage error; nothing recorded."""
        status, _, err = run("subject", "request", "refused", "--config", str(config_path), "--subject",
                             "Customer:42", "--actor", "user:7", "--type", "access", "--request-id", "R-9")
        assert status == 2
        assert "--reason is required" in err
        assert privacy_events(config_path) == []

    def test_request_type_is_one_of_three(self, config_path: Path) -> None:
        """--type takes access, erasure or rectification only."""
        status, _, err = run("subject", "request", "received", "--config", str(config_path), "--subject",
                             "Customer:42", "--actor", "user:7", "--type", "deletion", "--request-id", "R-9")
        assert status == 2
        assert "rectification" in err

    def test_export_needs_a_key_store(self, tmp_path: Path) -> None:
        """`subject export` without [erasure] exits 1 naming the section, and records nothing."""
        path = write_toml(tmp_path / "auditlock.toml", config_dict(tmp_path / "spool"))
        status, _, err = run("subject", "export", "--config", str(path), "--subject", "Customer:42", "--actor",
                             "user:7", "--cache-dir", str(tmp_path / "cache"))
        assert status == 1
        assert "[erasure]" in err
        assert not (tmp_path / "spool").exists()


class TestCheckConfig:
    def test_missing_key_store_url_is_a_warning(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """check-config accepts a SQL store whose URL variable is unset here, and warns naming it."""
        monkeypatch.delenv("AUDITLOCK_TEST_NO_SUCH_DSN", raising=False)
        path = write_toml(tmp_path / "auditlock.toml", erasable_doc(
            tmp_path / "spool", {"store": "sql", "dsn_env": "AUDITLOCK_TEST_NO_SUCH_DSN"}))
        status, out, _ = run("check-config", str(path))
        assert status == 0
        assert "warning: [erasure] dsn_env: environment variable AUDITLOCK_TEST_NO_SUCH_DSN is not set" in out
