"""The demo's steps, in order, with numbered progress on stdout and a machine-readable last line."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from auditlock.config import Config
from auditlock.demo import server, show
from auditlock.demo.workspace import PREFIX, Workspace
from auditlock.textsafe import terminal_safe

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

STEPS = 8
INDENT = "      "
ORDER_ID = "1234"


@dataclass
class Outcome:
    """What the demo established; `summary()` is its last line."""

    emitted: int = 0
    shipped: int = 0
    verify: str = "not run"
    delete: str = "not tried"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything shipped, verify clean, the delete refused."""
        return self.emitted == self.shipped > 0 and self.verify == "clean" and self.delete == "refused"

    def summary(self) -> str:
        """`demo: events emitted=N shipped=N verify=clean delete=refused`."""
        return (f"demo: events emitted={self.emitted} shipped={self.shipped} verify={self.verify} "
                f"delete={self.delete}")


class Narrator:
    """Prints numbered steps and indented detail lines, flushing each so progress is visible through a pipe."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.step_no = 0
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        """A numbered step."""
        self.step_no += 1
        self._write(f"[{self.step_no}/{STEPS}] {text}")

    def say(self, text: str = "") -> None:
        """A detail line under the current step."""
        self._write(f"{INDENT}{text}" if text else "")

    def block(self, text: str) -> None:
        """Several detail lines (a command's output)."""
        for line in text.rstrip("\n").splitlines():
            self.say(line)

    def _write(self, line: str) -> None:
        # Keys, tags and the query/verify outputs shown come from the bucket: escaped like every terminal output.
        self.out.write(terminal_safe(line.rstrip()) + "\n")
        self.out.flush()


def run_demo(keep: Path | None, out: IO[str] = sys.stdout) -> int:
    """Run the whole demo; 0 when shipped = emitted, verify is clean and the delete was refused, else 1."""
    narrator, outcome = Narrator(out), Outcome()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", server.ACCESS_KEY)  # boto3 signs; moto accepts anything
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", server.SECRET_KEY)
    _no_proxy_for_loopback()
    out.write("auditlock demo: the whole pipeline on a throwaway S3 server in this process\n")
    try:
        with _sigterm_as_interrupt(), _workdir(keep) as root, server.DemoS3() as s3:
            ws = Workspace(root)
            bucket = _pipeline(ws, s3, narrator, outcome)
            if keep is not None:
                ws.copy_archive(s3.client(), bucket)
                _explore_hints(ws, narrator)
    except KeyboardInterrupt:
        out.write("\ninterrupted; the S3 server is stopped\n")
        return 130
    out.write(f"finished in {time.monotonic() - narrator.started:.1f} s; nothing is left running\n")
    for problem in outcome.problems:
        out.write(f"problem: {terminal_safe(problem)}\n")
    out.write(outcome.summary() + "\n")
    return 0 if outcome.ok else 1


def _pipeline(ws: Workspace, s3: server.DemoS3, n: Narrator, outcome: Outcome) -> str:
    """Steps 1-8 (recording the results in `outcome`); returns the bucket's name."""
    bucket, config = _setup(ws, s3, n)
    outcome.emitted = _emit(config, n)
    outcome.shipped = _ship(config, n)
    if outcome.shipped != outcome.emitted:
        outcome.problems.append(f"{outcome.emitted} events emitted but {outcome.shipped} shipped")
    client = s3.client()
    layout = show.list_layout(client, bucket, PREFIX)
    example = layout.locked_example(config)
    _layout(client, bucket, layout, example, n)
    n.step(f"who changed order {ORDER_ID}?   $ auditlock query --target-type Order --target-id {ORDER_ID}")
    n.block(show.query_order(config, ws.cache, ORDER_ID, _table_width(n.out)))
    outcome.verify = _verify(config, ws, n)
    outcome.delete = _delete(client, bucket, example, n)
    return bucket


def _setup(ws: Workspace, s3: server.DemoS3, n: Narrator) -> tuple[str, Config]:
    bucket = s3.make_lock_bucket(f"auditlock-demo-{uuid.uuid4().hex[:8]}")
    n.step(f"S3: moto on {s3.url}; bucket {bucket} created with Object Lock (versioning comes with it)")
    ws.write(bucket, s3.url)
    n.step(f"config: {ws.config_path}")
    n.say("service shop-api; retention classes standard (GOVERNANCE 400 d), orders (COMPLIANCE 10 y), "
          "security (COMPLIANCE 400 d); digests signed with an Ed25519 key")
    return bucket, ws.load_config()


def _emit(config: Config, n: Narrator) -> int:
    from auditlock.demo.service import Shop, run_story  # noqa: PLC0415 - structlog only once it runs

    n.step("the sample service logs: web requests through structlog + auditlock.AuditProcessor, "
           "the nightly job through logging + AuditHandler")
    n.say(f"{'actor':<19} {'event':<21} {'target':<13} what")
    shop = Shop(config, n.say)
    try:
        run_story(shop)
    finally:
        writers = shop.close()  # also on errors: nothing may write into the workdir once it is removed
    n.say(f"closed {writers} writers: {shop.emitted} events + {writers} clean-end records "
          "(auditlock.writer_closed) sealed in the spool")
    return shop.emitted + writers


def _ship(config: Config, n: Narrator) -> int:
    from auditlock.agent.service import Agent  # noqa: PLC0415 - boto3, watchfiles

    agent = Agent(config, serve_http=False)
    result = agent.run_once()
    n.step(f"agent: drained the spool: {result.events_shipped} events shipped, {result.segments_left} segments left")
    if agent.identity.shares_writer_uid:  # its WARNING is on stderr above: say why, and what a deployment does
        n.say("one user here: the demo's service and agent share it, as one laptop user must; a deployment runs the "
              "agent as a user of its own (docs/operations.md, \"Two identities\")")
    return result.events_shipped


def _layout(client: S3Client, bucket: str, layout: show.Layout, example: str, n: Narrator) -> None:
    n.step("the archive in S3: one gzip JSONL object per (month, retention class), one digest per batch")
    show.show_layout(client, bucket, layout, n.say)
    n.say()
    show.show_object(client, bucket, example, n.say)
    if layout.digests:
        n.say()
        show.show_digest(client, bucket, layout.digests[-1], n.say)


def _verify(config: Config, ws: Workspace, n: Narrator) -> str:
    n.step(f"verify the archive   $ auditlock verify --public-key {ws.public_key.name}")
    report, text = show.verify(config, ws.public_key)
    n.block(text)
    return "clean" if report.clean else "findings"


def _delete(client: S3Client, bucket: str, key: str, n: Narrator) -> str:
    n.step("delete that object's locked version (with the bypass-governance header, for good measure)")
    refused, answer = show.try_delete(client, bucket, key)
    n.say(f"DeleteObject {key.rpartition('/')[2]} versionId=…  →  {answer}")
    n.say("COMPLIANCE mode: nobody, not even the account root, can delete it before retain-until" if refused
          else "the delete was NOT refused: this bucket does not protect the archive")
    return "refused" if refused else "allowed"


def _explore_hints(ws: Workspace, n: Narrator) -> None:
    c = ws.config_path
    n.say()
    n.say(f"kept in {ws.root}: auditlock.toml, hmac.key, digest-key(.pub).pem, spool/, cache/, archive/ "
          "(a copy of the bucket's prefix; the S3 server itself is gone). Try:")
    events = f"{ws.archive}/events/year=*/month=*/*.jsonl.gz"
    columns = "occurred_at, actor_id, event_type, target_type, target_id"
    sql = f"SELECT {columns} FROM read_json_auto('{events}') ORDER BY 1"  # noqa: S608 - printed, never run here
    for command in (
        f"uv run auditlock verify --source {ws.archive} --public-key {ws.public_key}",
        f"zcat {events} | head -3",
        f'zgrep -c "$(uv run auditlock hash --config {c} alice@example.com)" {events}',
        f"uv run python -c \"import duckdb; duckdb.sql(\\\"{sql}\\\").show()\"",
        f"uv run auditlock check-config {c}",
        f"uv run auditlock athena-ddl --config {c}",
    ):
        n.say(f"  {command}")


def _table_width(out: IO[str]) -> int:
    """A terminal's width less the indent; wide enough for whole payloads when the output is not a terminal."""
    if out.isatty():
        return max(shutil.get_terminal_size().columns - len(INDENT), 60)
    return 160


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(mode=0o700, parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="auditlock-demo-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `finally`s stop the server and remove the temp dir."""
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _no_proxy_for_loopback() -> None:
    """An HTTP(S)_PROXY in the environment must not capture requests to the loopback server."""
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        if "127.0.0.1" not in current:
            os.environ[name] = f"{current},127.0.0.1" if current else "127.0.0.1"
