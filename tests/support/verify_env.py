"""Helpers for `auditlock verify` tests: signed archives written by the real agent, tampering, running verify."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

import auditlock
from auditlock.agent.service import Agent
from auditlock.archive import digest as digest_format
from auditlock.cli import main
from auditlock.handler.core import AuditCore
from auditlock.spool.writer import SpoolWriter
from tests.support.archive_env import ArchiveEnv
from tests.support.calendar import NEXT_BOUNDARY, to_ns, utc_now
from tests.support.s3servers import content_md5
from tests.support.shipping import drain_or_fail

PREFIX = "audit/"


def make_keypair(directory: Path, name: str = "digest-key") -> tuple[Path, Path]:
    """An Ed25519 private key and its public key as PEM files (what `openssl genpkey`/`pkey -pubout` make)."""
    key = Ed25519PrivateKey.generate()
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


def enable_signing(env: ArchiveEnv, private_key: Path) -> None:
    """Add `signing_key_file` to the config's `[agent]` section (the template's last section)."""
    text = env.config_path.read_text()
    assert text.rstrip().splitlines()[-1].startswith("rescan_interval_s")
    env.config_path.write_text(text + f'signing_key_file = "{private_key}"\n')


def drain(env: ArchiveEnv, *, digest_clock: Callable[[], dt.datetime] | None = None) -> None:
    """Run the agent in-process until the spool is drained (one digest per batch); an S3 error fails at once.
    `digest_clock` dates its digests instead of the live clock."""
    agent = Agent(env.config, serve_http=False)
    if digest_clock is not None:
        agent.shipper.digests.clock = digest_clock
    drain_or_fail(env.config, agent=agent)


def write_mixed(env: ArchiveEnv, count: int, *, clock: Callable[[], int] | None = None) -> None:
    """One writer whose events alternate between two retention classes (standard and security); `clock` as the
    writer's (nanoseconds)."""
    config = env.config
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes,
                         **({"clock": clock} if clock else {}))
    core = AuditCore(config, writer=writer)
    with auditlock.actor("user#2"):
        for n in range(count):
            event_type = "auth.login_failed" if n % 3 == 0 else "order.updated"
            core.emit(event_type, {"target_type": "Order", "target_id": n, "status": "paid"})
    writer.close()


def month_boundary_clock() -> Iterator[int]:
    """Ticks 0.2 s apart from one second before the next UTC month boundary: five in this month, the rest in the
    next. The boundary ahead of now, so events of a one-day class still have a retain-until in the future."""
    return itertools.count(to_ns(NEXT_BOUNDARY - dt.timedelta(seconds=1)), 200_000_000)


def build_archive(env: ArchiveEnv) -> None:
    """Three batches by the real agent: two classes, a month boundary, a writer interleaving classes.

    Every time in it comes from the story's clock, not the live one: batches one and three and all three digests
    lie in one month (`story_start`), batch two crosses the next month boundary — on any day, even if the build runs
    across a real month's end."""
    start = story_start()
    events = itertools.count(to_ns(start), 1_000_000)
    env.write_events(40, clock=lambda: next(events))
    env.write_events(10, event_type="auth.login_failed", reason="bad", clock=lambda: next(events))
    digests = (start + dt.timedelta(seconds=10 * n) for n in itertools.count(1))
    drain(env, digest_clock=lambda: next(digests))
    ticks = month_boundary_clock()
    env.write_events(12, clock=lambda: next(ticks))
    drain(env, digest_clock=lambda: next(digests))
    write_mixed(env, 30, clock=lambda: next(events))
    drain(env, digest_clock=lambda: next(digests))


def story_start() -> dt.datetime:
    """When the archive's story starts: now, or ten minutes before the next month boundary if that is sooner, so
    the story's seconds end in the month they began, its writers' last events stay within verify's default
    `--open-grace` of one hour (a session that crossed the boundary lags it by less), and a one-day class's
    retain-until stays ahead of the live clock."""
    return min(utc_now(), NEXT_BOUNDARY - dt.timedelta(minutes=10))


def verify(*args: str) -> tuple[int, dict[str, Any]]:
    """Run `auditlock verify --format json ARGS` in-process; (exit status, the JSON report or {})."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["verify", "--format", "json", *args])
    text = out.getvalue().strip()
    return status, orjson.loads(text) if text else {}


def kinds(report: dict[str, Any]) -> set[str]:
    """The finding kinds of a JSON report."""
    return set(report["by_kind"])


def subjects(report: dict[str, Any], kind: str) -> set[str]:
    """The subjects of one kind's findings."""
    return {f["subject"] for f in report["findings"] if f["kind"] == kind}


def keys(env: ArchiveEnv, kind: str = "events") -> list[str]:
    """Every key under `audit/<kind>/`, sorted."""
    client = env.endpoint.client()
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=env.bucket, Prefix=f"{PREFIX}{kind}/"):
        found += [item["Key"] for item in page.get("Contents", [])]
    return sorted(found)


def read(env: ArchiveEnv, key: str) -> bytes:
    """The current version's bytes."""
    body: bytes = env.endpoint.client().get_object(Bucket=env.bucket, Key=key)["Body"].read()
    return body


def put_new_version(env: ArchiveEnv, key: str, body: bytes) -> None:
    """PUT a new current version at `key`, locked and tagged like the old one (a versioned Object Lock bucket
    allows this: the lock protects the old *version*, readers now get the new one)."""
    client = env.endpoint.client()
    head = client.head_object(Bucket=env.bucket, Key=key)
    tags = client.get_object_tagging(Bucket=env.bucket, Key=key)["TagSet"]
    client.put_object(Bucket=env.bucket, Key=key, Body=body, ContentMD5=content_md5(body),
                      ObjectLockMode=head["ObjectLockMode"],
                      ObjectLockRetainUntilDate=head["ObjectLockRetainUntilDate"],
                      Tagging="&".join(f"{t['Key']}={t['Value']}" for t in tags))


def version_ids(env: ArchiveEnv, key: str) -> tuple[list[str], list[str]]:
    """(data version ids, delete marker ids) of `key`, newest first, as ListObjectVersions gives them."""
    client = env.endpoint.client()
    data: list[str] = []
    markers: list[str] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=env.bucket, Prefix=key):
        data += [v["VersionId"] for v in page.get("Versions", []) if v["Key"] == key]
        markers += [m["VersionId"] for m in page.get("DeleteMarkers", []) if m["Key"] == key]
    return data, markers


def forged_digest(env: ArchiveEnv, key: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The digest at `key` changed by `change` and re-signed with the agent's key, encoded as the agent does."""
    body = orjson.loads(read(env, key))
    change(body)
    return digest_format.encode(digest_format.sign(body, (env.root / "digest-key.pem").read_bytes()))


def copy_locked(env: ArchiveEnv, bucket: str, replace: dict[str, bytes]) -> None:
    """Copy every events object and digest into another lock bucket with its lock and tags, each once — the
    bytes of `replace[key]` instead of the original where given (a forgery that was never overwritten)."""
    client = env.endpoint.client()
    for key in keys(env, "events") + keys(env, "digests"):
        body = replace.get(key) or read(env, key)
        head = client.head_object(Bucket=env.bucket, Key=key)
        tags = client.get_object_tagging(Bucket=env.bucket, Key=key)["TagSet"]
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=content_md5(body),
                          ObjectLockMode=head["ObjectLockMode"],
                          ObjectLockRetainUntilDate=head["ObjectLockRetainUntilDate"],
                          Tagging="&".join(f"{t['Key']}={t['Value']}" for t in tags))


def copy_to(env: ArchiveEnv, bucket: str) -> None:
    """Copy every events object and digest, with its tags but without any lock, into another bucket."""
    client = env.endpoint.client()
    for key in keys(env, "events") + keys(env, "digests"):
        body = read(env, key)
        tags = client.get_object_tagging(Bucket=env.bucket, Key=key)["TagSet"]
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=content_md5(body),
                          Tagging="&".join(f"{t['Key']}={t['Value']}" for t in tags))


def download(env: ArchiveEnv, target: Path) -> Path:
    """The archive prefix as a directory tree (DIR/events/…, DIR/digests/…), as `aws s3 sync` would make it."""
    for key in keys(env, "events") + keys(env, "digests"):
        path = target / key.removeprefix(PREFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(read(env, key))
    return target
