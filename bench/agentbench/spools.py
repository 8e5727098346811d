"""The spools the agent drains: their config (a fresh Object Lock bucket each), filled through AuditCore or fast."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentbench.floor import MIB

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint

SEGMENT_MAX_BYTES = 16 * MIB
BATCH_MAX_BYTES = 64 * MIB
EVENT = "order.updated"
ACTOR = "user:82"
PREFIX = "audit"

CONFIG_TEMPLATE = """
service = "shop"

[spool]
dir = "{spool}"
durability = "{durability}"
segment_max_bytes = {segment_max_bytes}
segment_max_age_s = {segment_max_age_s}
max_bytes = {spool_max_bytes}

[events]
include = ["order.*"]

[targets.Order]
fields = ["status", "total"]

[retention]
default = "standard"

[retention.classes.standard]
days = 1
mode = "GOVERNANCE"

[sink]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint_url = "{endpoint}"
region = "{region}"
batch_max_bytes = {batch_max_bytes}
batch_max_age_s = {batch_max_age_s}

[agent]
http_port = 0
rescan_interval_s = 30
grace_period_s = 60
"""


@dataclass
class Part:
    """One spool + config + bucket that an agent ships between."""

    root: Path
    endpoint: S3Endpoint
    bucket: str
    config_path: Path

    @classmethod
    def create(cls, root: Path, endpoint: S3Endpoint, client: S3Client, name: str, *, durability: str = "process",
               segment_max_age_s: float = 3600, batch_max_age_s: float = 60,
               segment_max_bytes: int = SEGMENT_MAX_BYTES, batch_max_bytes: int = BATCH_MAX_BYTES) -> Part:
        """A fresh directory with `auditlock.toml`, spool under it, and a fresh Object Lock bucket."""
        from tests.support.s3servers import make_lock_bucket

        root = root / name
        root.mkdir()
        bucket = make_lock_bucket(client, f"bench-{name}-{uuid.uuid4().hex[:8]}")
        path = root / "auditlock.toml"
        path.write_text(CONFIG_TEMPLATE.format(
            spool=root / "spool", durability=durability, segment_max_bytes=segment_max_bytes,
            segment_max_age_s=segment_max_age_s, spool_max_bytes=64 * 1024 * MIB, bucket=bucket, prefix=PREFIX,
            endpoint=endpoint.url, region=endpoint.region, batch_max_bytes=batch_max_bytes,
            batch_max_age_s=batch_max_age_s))
        return cls(root, endpoint, bucket, path)

    @property
    def spool(self) -> Path:
        """The spool directory."""
        return self.root / "spool"

    def agent_argv(self, *args: str) -> list[str]:
        """argv of `python -m auditlock agent`."""
        return [sys.executable, "-m", "auditlock", "agent", "--config", str(self.config_path), *args]


def fill_with_core(config_path: Path, n: int) -> tuple[float, int]:
    """Emit `n` events through AuditCore + SpoolWriter (then closed, so every segment is sealed).

    Returns (seconds, bytes written).
    """
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore
    from auditlock.spool.writer import SpoolWriter

    config = load_config(config_path)
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    core = AuditCore(config, writer=writer)
    emit = core.emit
    start = time.perf_counter()
    with auditlock.actor(ACTOR):
        for i in range(n):
            emit(EVENT, {"target_type": "Order", "target_id": 4_100_000 + i, "status": "shipped"})
    writer.close()
    return time.perf_counter() - start, writer.stats["bytes"]


def fill_fast(config_path: Path, target_bytes: int) -> tuple[float, int, int]:
    """Write ~`target_bytes` of valid sealed segments straight in the spool format (one writer's chain).

    Each line is stamped by auditlock's own EventChain (event_id, occurred_at, writer, seq, prev), so the agent
    sees exactly what a SpoolWriter would have left: `<writer>.<first_seq:016x>.jsonl`, seq without gaps, prev =
    sha256 of the previous line, one UTC month per segment, at most segment_max_bytes per segment.
    Returns (seconds, events, bytes).
    """
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore
    from auditlock.spool.chain import EventChain, uuid7_hex
    from auditlock.spool.format import SegmentName

    config = load_config(config_path)
    spool = Path(config.spool.dir)
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    with auditlock.actor(ACTOR):
        template = AuditCore(config).build(EVENT, {"target_type": "Order", "target_id": "0", "status": "shipped"})
    chain = EventChain(uuid7_hex(time.time_ns()), max_event_bytes=config.events.max_event_bytes)
    stamp, advance = chain.stamp, chain.advance
    limit = config.spool.segment_max_bytes
    start = time.perf_counter()
    events = written = 0
    parts: list[bytes] = []
    size, month, first_seq = 0, -1, 0

    def seal() -> None:
        path = spool / SegmentName(chain.writer_id, first_seq).filename
        with path.open("wb") as f:
            f.write(b"".join(parts))
        parts.clear()

    while written < target_bytes:
        record = template.copy()
        record["target_id"] = str(4_100_000 + events)
        line, line_month = stamp(record)
        if parts and (line_month != month or size + len(line) > limit):
            seal()
            size, first_seq = 0, chain.seq
        month = line_month
        parts.append(line)
        advance(line)
        size += len(line)
        written += len(line)
        events += 1
    seal()
    return time.perf_counter() - start, events, written
