"""Hostile text reaching a terminal: control characters from the archive are shown escaped (issue #15 item 10).

The hostile actor ids and keys are written straight into the bucket, as an attacker with write access would:
the handler refuses such actor ids at write time, so they cannot come through it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.cli import main
from auditlock.demo.run import INDENT, Narrator
from auditlock.errors import ConfigError
from auditlock.textsafe import error_text, terminal_safe
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket

FORGED_VERDICT = "\x1b[2J\x1b[H result: clean"
HOSTILE_ACTOR = "user:" + FORGED_VERDICT
HOSTILE_TARGET_ID = "7\rresult: clean"
HOSTILE_STATUS = "paid\u202eevil"
RAW_CONTROLS = ("\x1b", "\r", "\u202e", "\x9b", "\x08", "\x07")


def event_line(actor_id: str, target_id: str, status: str, *, writer: str) -> bytes:
    """One complete `auditlock/1` line (not chained to anything) as a hostile writer would put it in an object."""
    event: dict[str, Any] = {
        "schema": "auditlock/1", "event_id": "0190a5f4-1c2b-7d3e-8f40-" + uuid.uuid4().hex[:12],
        "event_type": "order.updated", "occurred_at": "2026-01-02T03:04:05.000006Z",
        "actor_id": actor_id, "actor_type": "user", "actor_ip": None, "target_type": "Order",
        "target_id": target_id, "payload": {"status": status}, "service": "shop", "host": "h",
        "retention": "standard", "trace_id": None, "span_id": None, "writer": writer, "seq": 0, "prev": "0" * 64,
    }
    return orjson.dumps(event) + b"\n"


def put_object(env: ArchiveEnv, key: str, lines: bytes) -> None:
    """PUT an events object straight into the bucket."""
    body = gzip.compress(lines, mtime=0)
    env.endpoint.client().put_object(Bucket=env.bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")


@pytest.fixture
def hostile(tmp_path: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A lock bucket on moto holding an object whose event has a hostile actor id, target id and payload, and an
    object whose key holds a carriage return and an escape sequence (2026-01, a month the tests name)."""
    use_credentials(monkeypatch, moto_s3)
    monkeypatch.setenv("COLUMNS", "200")
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-hostile-{uuid.uuid4().hex[:12]}")
    env = ArchiveEnv.create(tmp_path, moto_s3, bucket)
    lines = event_line(HOSTILE_ACTOR, HOSTILE_TARGET_ID, HOSTILE_STATUS, writer="a" * 32)
    content = hashlib.sha256(lines).hexdigest()[:32]
    put_object(env, f"audit/events/year=2026/month=01/20260102T030405Z-standard-{content}.jsonl.gz", lines)
    put_object(env, f"audit/events/year=2026/month=01/20260102T030405Z-standard-{'0' * 32}\r{FORGED_VERDICT}"
                    ".jsonl.gz", event_line("user:1", "8", "paid", writer="b" * 32))
    return env


def run(*argv: str) -> tuple[int, str, str]:
    """`auditlock ARGV` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def assert_no_raw_controls(text: str) -> None:
    """No escape, carriage return, bidi override, CSI, backspace or bell reaches the terminal."""
    for char in RAW_CONTROLS:
        assert char not in text, f"raw {char!r} in the output"


class TestQueryTable:
    def test_hostile_actor_target_and_payload_are_shown_escaped(self, hostile: ArchiveEnv, tmp_path: Path) -> None:
        """The table shows `\\x1b[2J…`, `\\r` and `\\u202e` as text; the screen is not cleared, no row forged."""
        status, out, err = run("query", "--config", str(hostile.config_path), "--cache-dir", str(tmp_path / "c"),
                               "--since", "2026-01", "--until", "2026-01")
        assert status == 0, err
        assert_no_raw_controls(out)
        assert terminal_safe(HOSTILE_ACTOR) in out
        assert "user:\\x1b[2J\\x1b[H result: clean" in out
        assert "Order:7\\rresult: clean" in out
        assert "paid\\u202eevil" in out

    def test_jsonl_stays_exact(self, hostile: ArchiveEnv, tmp_path: Path) -> None:
        """JSONL is data: the actor id comes back exactly as stored. The object at the key with `\\r` and `ESC` is
        not an archive object (issue #15 item 2): not read, and the note naming it is escaped."""
        status, out, err = run("query", "--config", str(hostile.config_path), "--cache-dir", str(tmp_path / "c"),
                               "--since", "2026-01", "--until", "2026-01", "--format", "jsonl")
        assert status == 0, err
        actors = {orjson.loads(line)["actor_id"] for line in out.splitlines()}
        assert actors == {HOSTILE_ACTOR}
        assert_no_raw_controls(err)
        assert f"{'0' * 32}\\r\\x1b[2J\\x1b[H result: clean.jsonl.gz" in err


class TestVerifyReport:
    def test_a_hostile_key_cannot_make_the_report_read_clean(self, hostile: ArchiveEnv) -> None:
        """A key holding `\\r` and `ESC [2J` is shown escaped; the only verdict line is the real one."""
        status, out, _ = run("verify", "--config", str(hostile.config_path), "--since", "2026-01",
                             "--until", "2026-01")
        assert status == 1
        assert_no_raw_controls(out)
        assert f"{'0' * 32}\\r\\x1b[2J\\x1b[H result: clean.jsonl.gz" in out
        verdicts = [line for line in out.splitlines() if "result:" in line and not line.startswith("  ")]
        assert len(verdicts) == 1
        assert re.fullmatch(r"result: \d+ findings", verdicts[0])

    def test_json_report_stays_exact(self, hostile: ArchiveEnv) -> None:
        """The JSON report carries the key as it is (it is data)."""
        status, out, _ = run("verify", "--config", str(hostile.config_path), "--since", "2026-01",
                             "--until", "2026-01", "--format", "json")
        assert status == 1
        subjects = {f["subject"] for f in orjson.loads(out)["findings"]}
        assert any(f"\r{FORGED_VERDICT}" in subject for subject in subjects)


class TestEscaper:
    @pytest.mark.parametrize(("text", "shown"), [
        ("user:82", "user:82"),
        ("ünïcødé 名前 ok", "ünïcødé 名前 ok"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        ("x\x08\x07\x7f", "x\\x08\\x07\\x7f"),
        ("\x9b31m", "\\x9b31m"),
        ("abc\u202edef\u2066", "abc\\u202edef\\u2066"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone\ud800", "lone\\ud800"),
    ])
    def test_control_and_format_characters_are_escaped(self, text: str, shown: str) -> None:
        """C0, DEL, C1, bidi overrides, zero-width and separator characters are escaped; printable text is not."""
        assert terminal_safe(text) == shown

    def test_a_config_error_keeps_one_line_per_problem(self) -> None:
        """A ConfigError's problems stay one per line, each escaped: a problem cannot forge another line."""
        message = error_text(ConfigError(["unknown key 'a\nresult: clean'", "bad \x1b[2J"], source="f.toml"))
        assert message.splitlines() == ["f.toml: 2 configuration errors:", "  - unknown key 'a\\nresult: clean'",
                                        "  - bad \\x1b[2J"]


class TestMessages:
    def test_check_config_escapes_a_hostile_key(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A TOML key holding an escape sequence is named escaped by `auditlock check-config`."""
        file = tmp_path / "auditlock.toml"
        file.write_text('"\\u001b[2Jresult: clean" = 1\nservice = "s"\n[spool]\ndir = "spool"\n[events]\n'
                        'include = ["order.*"]\n[retention]\ndefault = "standard"\n'
                        '[retention.classes.standard]\ndays = 1\n')
        assert main(["check-config", str(file)]) == 1
        out = capsys.readouterr().out
        assert_no_raw_controls(out)
        assert "unknown key '\\x1b[2Jresult: clean' in the top level" in out

    def test_demo_narration_is_escaped(self) -> None:
        """What the demo says (keys, tags, command output) cannot move the cursor or forge a line."""
        out = io.StringIO()
        narrator = Narrator(out)
        narrator.say(f"    events/…-{'0' * 32}\r{FORGED_VERDICT}.jsonl.gz")
        narrator.block("line one\nline\u202etwo\n")
        assert_no_raw_controls(out.getvalue())
        assert out.getvalue().splitlines()[1:] == [f"{INDENT}line one", f"{INDENT}line\\u202etwo"]
