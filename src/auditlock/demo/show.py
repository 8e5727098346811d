"""What the demo shows after shipping: the S3 layout, a query, the verify report, a refused delete."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from auditlock.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from auditlock.verify.findings import Report

Say = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """What the bucket holds under the prefix."""

    events: list[str]
    digests: list[str]

    def locked_example(self, config: Config) -> str:
        """An events object of a COMPLIANCE class (the one whose lock the demo shows and tries to delete)."""
        compliance = [name for name, c in config.retention.classes.items() if c.mode == "COMPLIANCE"]
        return next((k for k in self.events if any(f"-{name}-" in k for name in compliance)), self.events[0])


def list_layout(client: S3Client, bucket: str, prefix: str) -> Layout:
    """Every key under `<prefix>/events/` and `<prefix>/digests/`."""
    keys: dict[str, list[str]] = {"events": [], "digests": []}
    for kind, found in keys.items():
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{kind}/"):
            found += [item["Key"] for item in page.get("Contents", [])]
    return Layout(sorted(keys["events"]), sorted(keys["digests"]))


def show_layout(client: S3Client, bucket: str, layout: Layout, say: Say) -> None:
    """Keys grouped by month partition, with each object's event count and class."""
    for kind, keys in (("events", layout.events), ("digests", layout.digests)):
        partitions: dict[str, list[str]] = {}
        for key in keys:
            folder, _, name = key.rpartition("/")
            partitions.setdefault(folder + "/", []).append(name)
        for folder, names in partitions.items():
            noun = {"events": "object", "digests": "digest"}[kind]
            say(f"s3://{bucket}/{folder}   ({len(names)} {noun}{'s' if len(names) != 1 else ''})")
            for name in names:
                say(f"    {name}{_object_note(client, bucket, folder + name, kind)}")


def _object_note(client: S3Client, bucket: str, key: str, kind: str) -> str:
    if kind != "events":
        return ""
    meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
    return f"   {meta.get('auditlock-events', '?')} events"


def show_object(client: S3Client, bucket: str, key: str, say: Say) -> None:
    """Lock mode, retain-until, tags and metadata of one events object."""
    head = client.head_object(Bucket=bucket, Key=key)
    tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    say(f"one object: {key.rpartition('/')[2]}")
    say(f"    version     {head.get('VersionId')}")
    say(f"    Object Lock {head.get('ObjectLockMode')} until {_when(head.get('ObjectLockRetainUntilDate'))}")
    say("    tags        " + ", ".join(f"{t['Key']}={t['Value']}" for t in tags))
    meta = head["Metadata"]
    say(f"    metadata    {meta.get('auditlock-events')} events, {meta.get('auditlock-first')} … "
        f"{meta.get('auditlock-last')}, sha256 {meta.get('auditlock-sha256', '')[:16]}…")


def show_digest(client: S3Client, bucket: str, key: str, say: Say) -> None:
    """What the batch's digest records: the objects and their SHA-256, the writers' seq ranges, the signature."""
    body: dict[str, Any] = orjson.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    say(f"the digest: {key.rpartition('/')[2]}")
    say(f"    previous    {body.get('previous') or 'none (the first digest of this agent chain)'}")
    for listed in body.get("objects", []):
        say(f"    lists       {listed['key'].rpartition('/')[2][:40]}…  sha256 {listed['sha256'][:16]}…  "
            f"{listed['events']} events")
    for writer, seqs in body.get("writers", {}).items():
        say(f"    writer      {writer[:12]}…  seq {seqs['first_seq']}–{seqs['last_seq']}  "
            f"clean end: {'yes' if seqs.get('closed') else 'no'}")
    signature = body.get("signature")
    say(f"    signature   {signature['algorithm']} by key {signature['public_key_sha256'][:16]}…" if signature
        else "    signature   none")


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def query_order(config: Config, cache: Path, order_id: str, width: int) -> str:
    """What `auditlock query --target-type Order --target-id <id>` prints (the table format)."""
    from auditlock.query.filters import EventFilter  # noqa: PLC0415
    from auditlock.query.session import QueryRequest, execute  # noqa: PLC0415

    out = io.StringIO()
    with _table_width(width):
        execute(QueryRequest(EventFilter(target_type="Order", target_id=order_id), cache_dir=cache), config, out,
                io.StringIO())
    return out.getvalue()


@contextlib.contextmanager
def _table_width(width: int) -> Iterator[None]:
    """The query table cuts its rows to `$COLUMNS` (else the terminal's width): give it the demo's width."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def verify(config: Config, public_key: Path) -> tuple[Report, str]:
    """`auditlock verify --public-key` over the bucket: the report and its text."""
    from auditlock.archive.digest import load_public_key  # noqa: PLC0415
    from auditlock.verify.archive import ArchiveOptions, verify_archive  # noqa: PLC0415
    from auditlock.verify.findings import write_text  # noqa: PLC0415
    from auditlock.verify.source import s3_source  # noqa: PLC0415

    options = ArchiveOptions(public_key=load_public_key(public_key.read_bytes()),
                             classes=config.retention.classes, now=dt.datetime.now(dt.UTC))
    report = verify_archive(s3_source(config.sink), options)
    text = io.StringIO()
    write_text(report, text)
    return report, text.getvalue()


def try_delete(client: S3Client, bucket: str, key: str) -> tuple[bool, str]:
    """DELETE the object's current version by id (what would really remove it). Returns (refused, what S3 said)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    version = client.head_object(Bucket=bucket, Key=key)["VersionId"]
    try:
        client.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
    except ClientError as exc:
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        return True, f"{error.get('Code')} (HTTP {meta.get('HTTPStatusCode')}): {error.get('Message')}"
    return False, "the version was deleted"
