"""An agent test environment: a config file pointing a spool at an S3 endpoint, events in, archive out."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.config import Config, load_config
from auditlock.handler.core import AuditCore
from auditlock.spool.writer import SpoolWriter
from tests.support.s3servers import S3Endpoint

REPO = Path(__file__).resolve().parents[2]
LONG_CLASSES = (3650, 3651)  # days of `standard` and `security`: fixture dates in the past are not late
SHORT_CLASSES = (1, 2)  # an event a few days old is late

CONFIG_TEMPLATE = """
service = "shop"

[spool]
dir = "{spool}"
durability = "sync"
segment_max_bytes = {segment_max_bytes}

[events]
include = ["order.*", "auth.*", "access.*"]

[targets.Order]
fields = ["status", "total"]

[retention]
default = "standard"

[retention.classes.standard]
days = {standard_days}
mode = "GOVERNANCE"

[retention.classes.security]
days = {security_days}
mode = "COMPLIANCE"

[retention.events]
"auth.*" = "security"

[sink]
bucket = "{bucket}"
prefix = "audit"
endpoint_url = "{endpoint}"
region = "{region}"
batch_max_bytes = {batch_max_bytes}
batch_max_age_s = {batch_max_age_s}

[agent]
http_port = 0
backoff_initial_s = 0.05
backoff_max_s = 0.5
rescan_interval_s = 1
"""


@dataclass
class ArchiveEnv:
    """A spool, a config file and an S3 bucket that an agent ships between."""

    root: Path
    endpoint: S3Endpoint
    bucket: str
    config_path: Path

    @classmethod
    def create(cls, root: Path, endpoint: S3Endpoint, bucket: str, *, endpoint_url: str | None = None,
               segment_max_bytes: int = 4096, batch_max_bytes: int = 65536, batch_max_age_s: float = 0.2,
               class_days: tuple[int, int] = LONG_CLASSES) -> ArchiveEnv:
        """Write `root/auditlock.toml` for a spool under `root` shipping to `bucket` (optionally via a proxy URL).

        `class_days` are the days of the classes `standard` and `security`. The default is long, so events written
        with a clock in the past are not late when shipped (which would add the agent's own records about them,
        see `auditlock.agent.trail`); tests of late events pass `SHORT_CLASSES`.
        """
        path = root / "auditlock.toml"
        path.write_text(CONFIG_TEMPLATE.format(
            spool=root / "spool", bucket=bucket, endpoint=endpoint_url or endpoint.url, region=endpoint.region,
            segment_max_bytes=segment_max_bytes, batch_max_bytes=batch_max_bytes, batch_max_age_s=batch_max_age_s,
            standard_days=class_days[0], security_days=class_days[1]))
        return cls(root, endpoint, bucket, path)

    @property
    def config(self) -> Config:
        """The loaded config."""
        return load_config(self.config_path)

    @property
    def spool(self) -> Path:
        """The spool directory."""
        return self.root / "spool"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for an agent subprocess: the endpoint's credentials."""
        return {**os.environ, **self.endpoint.credentials_env(),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra}

    def agent_command(self, *args: str) -> list[str]:
        """argv of `auditlock agent` for this env."""
        return [sys.executable, "-m", "auditlock", "agent", "--config", str(self.config_path), *args]

    def run_agent_once(self, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `auditlock agent --once` to completion."""
        return subprocess.run(self.agent_command("--once"), env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def write_events(self, count: int, *, event_type: str = "order.updated", actor: str = "user#1",
                     clock: Callable[[], int] | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Emit `count` events through a fresh writer (then closed, so its segments are sealed)."""
        config = self.config
        writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes,
                             **({"clock": clock} if clock else {}))
        core = AuditCore(config, writer=writer)
        records = []
        with auditlock.actor(actor):
            for n in range(count):
                record = core.emit(event_type, {"target_type": "Order", "target_id": n, "status": "paid", **fields})
                assert record is not None
                records.append(dict(record))
        writer.close()
        return records

    def archive_keys(self) -> list[str]:
        """Every events object key in the bucket."""
        client = self.endpoint.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="audit/events/"):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(keys)

    def stored_keys(self) -> list[str]:
        """Every key the agent stored: events objects and digests (each one PUT when nothing fails)."""
        client = self.endpoint.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="audit/"):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(keys)

    def archive_events(self, *, closings: bool = False) -> list[dict[str, Any]]:
        """Every event in every events object, parsed; writers' clean-end records only with `closings=True`."""
        client = self.endpoint.client()
        events = []
        for key in self.archive_keys():
            body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            events += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
        return [e for e in events if closings or e["event_type"] != "auditlock.writer_closed"]

    def archive_versions(self) -> int:
        """How many object versions exist under the events prefix (duplicates show up here)."""
        client = self.endpoint.client()
        response = client.list_object_versions(Bucket=self.bucket, Prefix="audit/events/")
        return len(response.get("Versions", []))


def two_class_archive(root: Path, bucket: tuple[S3Endpoint, str], monkeypatch: pytest.MonkeyPatch, *,
                      events_per_class: int) -> ArchiveEnv:
    """A spool with events of two retention classes (one batch = two objects and a digest), the bucket's
    credentials and region in the environment."""
    endpoint, name = bucket
    use_credentials(monkeypatch, endpoint)
    archive = ArchiveEnv.create(root, endpoint, name, segment_max_bytes=4096, batch_max_bytes=1 << 20)
    archive.write_events(events_per_class)
    archive.write_events(events_per_class, event_type="auth.login_failed", actor="svc:gate")
    return archive


def use_credentials(monkeypatch: pytest.MonkeyPatch, endpoint: S3Endpoint) -> None:
    """Put the endpoint's credentials and region in this test's environment (`S3Endpoint.credentials_env`)."""
    for key, value in endpoint.credentials_env().items():
        monkeypatch.setenv(key, value)
