"""Benchmark of `auditlock verify`: events verified per second over a ≥ 1M-event archive in moto (never asserts).

    uv run python bench/verify.py                   # 1M events
    uv run python bench/verify.py --events 100000   # quicker

Setup: `--writers` writers stamp `--events` auditlock/1 events with auditlock's own `EventChain` (real event_id,
occurred_at, seq, prev), interleaved, spread over 12 months from next month on, every fifth event in a second
retention class; each writer ends with its clean-end record. Batches of `--batch-events` events become gzip
JSONL objects per (month, class), named as the agent names them (`layout.object_key`), and one Ed25519-signed
digest per batch chained to the previous one (`archive.digest`). Everything is PUT into an Object Lock bucket
of a moto server in this process with Content-MD5, lock mode, retain-until and tags — what the agent does.

Measured: `verify_archive` over the bucket (digests, signatures, every object's bytes, HEAD + tags, every
event's seq/prev/id) with the public key, best of `--repeat`; and once over a local copy (`--source DIR`,
no network, no lock checks) as the parsing floor. The run must come out clean (else the figure is void).

A readable table goes to stdout; the LAST line is one JSON object with `verify_events_per_s` and extras.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditlock.archive import digest as digest_format
from auditlock.archive import layout
from auditlock.config.model import RetentionClass
from auditlock.spool.chain import EventChain
from auditlock.spool.format import WRITER_CLOSED, line_hash

PREFIX = "audit"
AGENT_ID = "0" * 20 + "benchagent00"
CLASSES = {"standard": RetentionClass(days=1, mode="GOVERNANCE"), "security": RetentionClass(days=2)}
TYPES = ("order.updated", "order.created", "data.accessed", "access.role_granted", "auth.login_failed")


@dataclass
class Stored:
    """One object ready to PUT: its relative key, bytes, class and latest event."""

    key: str
    body: bytes
    retention: str
    last: str
    meta: dict[str, Any] = field(default_factory=dict)


def event_times(events: int, writers: int) -> Iterator[int]:
    """Nanosecond clocks for `events + writers` stamps, evenly over 12 months from next month on."""
    now = dt.datetime.now(dt.UTC)
    start = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    step = 365 * 86400 * 1e9 / (events + writers)
    base = int(start.timestamp() * 1e9)
    return (int(base + i * step) for i in range(events + writers))


def record(n: int, closing: bool = False) -> dict[str, Any]:
    """An event record in schema order (the chain fills event_id, occurred_at, writer, seq, prev)."""
    event_type = WRITER_CLOSED if closing else TYPES[n % len(TYPES)]
    retention = "security" if event_type.startswith("auth.") else "standard"
    return {"schema": "auditlock/1", "event_id": None, "event_type": event_type, "occurred_at": None,
            "actor_id": f"user:{n * 7919 % 1000}", "actor_type": "user", "actor_ip": f"203.0.113.{n % 250}",
            "target_type": "Order", "target_id": str(n % 50_000),
            "payload": {"changes": {"status": ["new", "paid"]}, "total": n % 1000},
            "service": "shop", "host": "shop-7d9f", "retention": retention, "trace_id": None, "span_id": None}


def build_archive(events: int, writers: int, batch_events: int, private_pem: bytes) -> Iterator[Stored]:
    """Every events object and digest of the archive, batch by batch (memory: one batch)."""
    times = event_times(events, writers)
    chains = [EventChain(f"{w:016x}" + "0" * 8 + "bench000", max_event_bytes=65536, clock=lambda: next(times))
              for w in range(writers)]
    previous: tuple[str, str] | None = None
    n = 0
    while n < events:
        count = min(batch_events, events - n)
        lines = [_stamp(chains[(n + i) % writers], record(n + i)) for i in range(count)]
        n += count
        if n >= events:
            lines += [_stamp(chain, record(n, closing=True)) for chain in chains]
        objects = _objects(lines)
        yield from objects
        digest = _digest(objects, lines, previous, private_pem)
        previous = (PREFIX + "/" + digest.key, hashlib.sha256(digest.body).hexdigest())
        yield digest


def _stamp(chain: EventChain, rec: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    line, _month = chain.stamp(rec)
    chain.advance(line)
    return line, {"writer": rec["writer"], "seq": rec["seq"], "occurred_at": rec["occurred_at"],
                  "retention": rec["retention"], "closed": rec["event_type"] == WRITER_CLOSED}


def _objects(lines: list[tuple[bytes, dict[str, Any]]]) -> list[Stored]:
    groups: dict[tuple[str, str], list[tuple[bytes, dict[str, Any]]]] = {}
    for line, info in lines:
        groups.setdefault((info["occurred_at"][:7], info["retention"]), []).append((line, info))
    stored = []
    for (_month, retention), group in sorted(groups.items()):
        content = b"".join(line for line, _ in group)
        body = gzip.compress(content, compresslevel=6, mtime=0)
        first, last = group[0][1]["occurred_at"], group[-1][1]["occurred_at"]
        key = layout.object_key("", first, retention, hashlib.sha256(content).hexdigest())
        stored.append(Stored(key, body, retention, last, {
            "key": f"{PREFIX}/{key}", "sha256": hashlib.sha256(body).hexdigest(),
            "content_sha256": hashlib.sha256(content).hexdigest(), "bytes": len(body), "events": len(group),
            "first_occurred_at": first, "last_occurred_at": last, "retention": retention}))
    return stored


def _digest(objects: list[Stored], lines: list[tuple[bytes, dict[str, Any]]], previous: tuple[str, str] | None,
            private_pem: bytes) -> Stored:
    writers: dict[str, dict[str, Any]] = {}
    for line, info in lines:
        known = writers.setdefault(info["writer"], {"first_seq": info["seq"]})
        known.update(last_seq=info["seq"], last_hash=line_hash(line[:-1]), closed=info["closed"])
    created_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {"schema": digest_format.DIGEST_SCHEMA, "agent": {"id": AGENT_ID, "host": "bench"},
            "created_at": created_at,
            "previous": {"key": previous[0], "sha256": previous[1]} if previous else None,
            "objects": [o.meta for o in objects], "writers": dict(sorted(writers.items()))}
    encoded = digest_format.encode(digest_format.sign(body, private_pem))
    longest = max(objects, key=lambda o: layout.retain_until(o.last, CLASSES[o.retention].days))
    time.sleep(0.000_002)  # distinct created_at stamps, hence distinct digest keys
    key = digest_format.digest_key("", created_at, AGENT_ID)
    return Stored(key, encoded, longest.retention, longest.last)


def put(client: Any, bucket: str, obj: Stored) -> None:
    """PUT one object as the agent does: Content-MD5, lock, retain-until, tags."""
    md5 = base64.b64encode(hashlib.md5(obj.body, usedforsecurity=False).digest()).decode("ascii")
    wanted = CLASSES[obj.retention]
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/{obj.key}", Body=obj.body, ContentMD5=md5,
                      ObjectLockMode=wanted.mode,
                      ObjectLockRetainUntilDate=layout.retain_until(obj.last, wanted.days),
                      Tagging=layout.object_tags(obj.retention))


def keypair() -> tuple[bytes, Any]:
    """A fresh Ed25519 private key (PEM) and its public key object."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), key.public_key()


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    """The fastest of `repeat` runs (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    """Build and upload the archive, verify it, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batch-events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        result = run(args, f"http://{host}:{port}")
    finally:
        server.stop()
    result |= {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


def run(args: argparse.Namespace, endpoint_url: str) -> dict[str, Any]:
    """Upload (and copy to a directory), then time verify over S3 and over the directory."""
    import boto3

    from auditlock.config.model import SinkConfig
    from auditlock.verify import ArchiveOptions, DirectorySource, s3_source, verify_archive

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket="bench", ObjectLockEnabledForBucket=True)
    private_pem, public_key = keypair()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="auditlock-bench-verify-") as tmp:
        stored = archive_bytes = 0
        for obj in build_archive(args.events, args.writers, args.batch_events, private_pem):
            put(client, "bench", obj)
            (Path(tmp) / obj.key).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / obj.key).write_bytes(obj.body)
            stored, archive_bytes = stored + 1, archive_bytes + len(obj.body)
        setup_s = time.perf_counter() - started
        options = ArchiveOptions(public_key=public_key, classes=CLASSES)
        source = s3_source(SinkConfig(bucket="bench", prefix=PREFIX, region="us-east-1", endpoint_url=endpoint_url))
        s3_s, report = best(lambda: verify_archive(source, options), args.repeat)
        dir_s, dir_report = best(lambda: verify_archive(DirectorySource(Path(tmp)), options), 1)
    events = report.counts.get("events", 0)
    return {
        "events": events, "objects_and_digests": stored, "archive_mib": round(archive_bytes / 2**20, 1),
        "setup_s": round(setup_s, 1), "clean": report.clean and dir_report.clean,
        "findings": len(report.findings) + len(dir_report.findings),
        "verify_s": round(s3_s, 2), "verify_events_per_s": round(events / s3_s),
        "verify_dir_s": round(dir_s, 2), "verify_dir_events_per_s": round(events / dir_s),
    }


if __name__ == "__main__":
    main()
