"""A query test archive: a config with hmac'd fields, a known story of events over the three months before the
current one (and now, all from tests/support/calendar.py),
shipped by the real agent to an S3 server; plus helpers to run `auditlock query` and read its JSONL."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.cli import main
from auditlock.config import Config, load_config
from auditlock.handler.core import AuditCore
from auditlock.spool.writer import SpoolWriter
from tests.conftest import HMAC_KEY
from tests.support.archive_env import ArchiveEnv
from tests.support.calendar import TODAY, months_ago, to_ns
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.shipping import drain_or_fail

CONFIG = """
service = "shop"

[spool]
dir = "{spool}"
durability = "sync"
segment_max_bytes = 4096

[events]
include = ["order.*", "customer.*", "auth.*", "access.*", "data.*"]

[targets.Order]
fields = ["status", "total", "customer_email"]
hmac = ["customer_email"]

[targets.Customer]
fields = ["name", "email"]
hmac = ["email"]

[targets.User]
fields = ["roles"]

[hmac]
key_env = "AUDITLOCK_TEST_HMAC"

[retention]
default = "standard"

[retention.classes.standard]
days = {standard_days}
mode = "GOVERNANCE"

[retention.classes.security]
days = {security_days}
mode = "GOVERNANCE"

[retention.events]
"auth.*" = "security"
"access.*" = "security"

[sink]
bucket = "{bucket}"
prefix = "audit"
endpoint_url = "{endpoint}"
region = "{region}"
batch_max_bytes = 65536
batch_max_age_s = 0.2
"""

ALICE = "alice@example.com"

# The story's three past months, counted back from the session's current UTC month (tests/support/calendar.py):
# OLDEST holds the first two events, MIDDLE ends with an event half a second before its last instant, LAST
# begins with two events in its first second; the last three events happen "now" (the session's TODAY).
OLDEST, MIDDLE, LAST = months_ago(3), months_ago(2), months_ago(1)

# The story's events are up to four months old when shipped; their classes keep them locked longer than that, so
# every retain-until (last event + days) is in the future at shipping time, on any day of any month.
STORY_RETENTION_DAYS = {"standard": 150, "security": 300}


def at(moment: dt.datetime) -> int:
    """A UTC time as the writer's clock gives it: ns since the epoch."""
    return to_ns(moment)


def story_now(n: int) -> int:
    """The story's n-th "now" event: the session's TODAY plus n microseconds (one month, one order)."""
    return to_ns(TODAY + dt.timedelta(microseconds=n))


# (time, actor, event type, fields): the story every archive test queries.
STORY: list[tuple[int | None, str, str, dict[str, Any]]] = [
    (at(OLDEST.day(3)), "user#1", "order.created", {"target_type": "Order", "target_id": 1001, "status": "new",
                                                   "customer_email": ALICE}),
    (at(OLDEST.day(20)), "user#9", "auth.login_failed", {"actor_ip": "203.0.113.9", "reason": "bad_password"}),
    (at(MIDDLE.day(2)), "svc:admin-api", "access.role_granted", {"target_type": "User", "target_id": 5,
                                                                "role": "admin", "scope": "shop"}),
    (at(MIDDLE.day(10)), "user#2", "order.updated", {"target_type": "Order", "target_id": 1001,
                                                    "before": {"status": "new"}, "after": {"status": "paid"}}),
    (at(MIDDLE.day(12)), "user#4", "data.accessed", {"target_type": "Order", "target_id": 1001,
                                                    "justification": "support ticket 12"}),
    (at(MIDDLE.day(15)), "user#7", "customer.created", {"target_type": "Customer", "target_id": 7, "name": "Alice",
                                                       "email": ALICE}),
    (at(MIDDLE.end - dt.timedelta(seconds=0.5)), "user#1", "order.updated",
     {"target_type": "Order", "target_id": 1001, "before": {"status": "paid"}, "after": {"status": "shipped"}}),
    (at(LAST.start + dt.timedelta(seconds=0.25)), "user#3", "order.deleted", {"target_type": "Order",
                                                                             "target_id": 1001}),
    (at(LAST.start + dt.timedelta(seconds=1)), "user#9", "auth.login_failed", {"actor_ip": "203.0.113.9",
                                                                              "reason": "locked"}),
    (at(LAST.day(5)), "user#7", "customer.updated", {"target_type": "Customer", "target_id": 7,
                                                    "before": {"email": ALICE}, "after": {"email": "a@new.example"}}),
    (at(LAST.day(6)), "user#2", "order.created", {"target_type": "Order", "target_id": 1002, "status": "new",
                                                 "customer_email": ALICE}),
    (at(LAST.day(8)), "svc:admin-api", "access.permission_changed", {"target_type": "User", "target_id": 5,
                                                                    "permission": "refund", "scope": "shop"}),
    (at(LAST.day(9)), "svc:admin-api", "access.role_revoked", {"target_type": "User", "target_id": 5,
                                                              "role": "admin", "scope": "shop"}),
    (story_now(0), "user#9", "auth.login_failed", {"actor_ip": "203.0.113.9", "reason": "bad_password"}),
    (story_now(1), "user#8", "auth.login_succeeded", {"actor_ip": "198.51.100.4", "method": "password"}),
    (story_now(2), "user#8", "auth.login_failed", {"actor_ip": "198.51.100.4", "reason": "bad_otp"}),
]


@dataclass
class QueryEnv:
    """An archive on an S3 server holding STORY, and what was written."""

    archive: ArchiveEnv
    written: list[dict[str, Any]]

    @classmethod
    def create(cls, root: Path, endpoint: S3Endpoint, bucket: str) -> QueryEnv:
        """Write the config, emit STORY through the real handler core, ship it with the real agent."""
        root.mkdir(parents=True, exist_ok=True)
        path = root / "auditlock.toml"
        path.write_text(CONFIG.format(spool=root / "spool", bucket=bucket, endpoint=endpoint.url,
                                      region=endpoint.region, standard_days=STORY_RETENTION_DAYS["standard"],
                                      security_days=STORY_RETENTION_DAYS["security"]))
        env = cls(ArchiveEnv(root, endpoint, bucket, path), [])
        env.written = env.emit(STORY)
        env.ship()
        return env

    @property
    def config(self) -> Config:
        """The loaded config."""
        return load_config(self.archive.config_path)

    def emit(self, story: list[tuple[int | None, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Emit events (one writer, closed afterwards so its segments are sealed); returns the records."""
        times = iter([t for t, _, _, _ in story])
        clock = _StoryClock(times)
        config = self.config
        writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes, clock=clock)
        core = AuditCore(config, writer=writer)
        records = []
        for _, actor, event_type, fields in story:
            with auditlock.actor(actor):
                record = core.emit(event_type, dict(fields))
            assert record is not None
            records.append(dict(record))
        writer.close()
        return records

    def ship(self) -> None:
        """Drain the spool into the bucket with the real agent (in this process)."""
        assert drain_or_fail(self.config).segments_left == 0

    def query(self, *args: str, cache: Path) -> tuple[int, str, str]:
        """Run `auditlock query --config ... --cache-dir CACHE ARGS`; returns (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["query", "--config", str(self.archive.config_path), "--cache-dir", str(cache), *args])
        return status, out.getvalue(), err.getvalue()

    def query_events(self, *args: str, cache: Path) -> list[dict[str, Any]]:
        """The events `auditlock query --format jsonl ARGS` prints, in its order."""
        status, out, err = self.query("--format", "jsonl", *args, cache=cache)
        assert status == 0, err
        return [orjson.loads(line) for line in out.splitlines()]


@contextlib.contextmanager
def story_archive(root: Path, endpoint: S3Endpoint) -> Iterator[QueryEnv]:
    """A fresh lock bucket holding STORY, with the endpoint's credentials in the environment meanwhile."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", endpoint.access_key)
        patch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret_key)
        patch.setenv("AUDITLOCK_TEST_HMAC", HMAC_KEY)
        bucket = make_lock_bucket(endpoint.client(), f"auditlock-query-{uuid.uuid4().hex[:12]}")
        yield QueryEnv.create(root, endpoint, bucket)


class _StoryClock:
    """Gives each event its story time; `None` means the real time. Times must not go backwards per writer
    within a month (the writer seals at a month change), which STORY respects."""

    def __init__(self, times: Iterator[int | None]) -> None:
        self.times = times

    def __call__(self) -> int:
        import time

        value = next(self.times, None)
        return time.time_ns() if value is None else value


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, moto_s3: S3Endpoint) -> Iterator[QueryEnv]:
    """STORY shipped by the real agent to a fresh lock bucket, once per test module (its tests only read it)."""
    with story_archive(tmp_path_factory.mktemp("story"), moto_s3) as env:
        yield env


@pytest.fixture
def creds(story: QueryEnv, monkeypatch: pytest.MonkeyPatch) -> QueryEnv:
    """The story archive with its credentials in the environment for this test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", story.archive.endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", story.archive.endpoint.secret_key)
    return story
