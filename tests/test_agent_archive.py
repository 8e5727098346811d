"""The agent's archive on real S3 servers (moto and RADOS Gateway): exactly once, partitions, locks, tags."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
from collections.abc import Iterator
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

from auditlock.agent.batch import build_objects, list_sealed
from auditlock.agent.uploader import ALREADY_PRESENT, ObjectConflictError, Uploader
from auditlock.archive import layout
from auditlock.archive.client import make_s3_client
from auditlock.spool.format import SEALED_SUFFIX
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.calendar import NEXT_BOUNDARY, NEXT_MONTH, THIS_MONTH, to_ns
from tests.support.s3servers import S3Endpoint, content_md5, make_lock_bucket
from tests.support.shipping import drain_or_fail


@pytest.fixture
def env(shipping_env: ArchiveEnv) -> ArchiveEnv:
    """A spool and config shipping to a fresh lock bucket; boto3 credentials in the environment."""
    return shipping_env


def drain(env: ArchiveEnv) -> None:
    """Run the agent in-process until the spool is drained; an S3 error fails the test at once."""
    assert drain_or_fail(env.config).segments_left == 0


def sealed(env: ArchiveEnv) -> list[Path]:
    """Sealed segments still in the spool."""
    return sorted(env.spool.glob(f"*{SEALED_SUFFIX}"))


class TestExactlyOnce:
    def test_every_event_arrives_once(self, env: ArchiveEnv) -> None:
        """Events written by the handler appear in S3 exactly once and leave the spool."""
        written = env.write_events(120) + env.write_events(30, event_type="auth.login_failed", reason="bad")
        drain(env)
        archived = env.archive_events()
        assert sorted(e["event_id"] for e in archived) == sorted(r["event_id"] for r in written)
        assert env.archive_versions() == len(env.archive_keys())
        assert sealed(env) == []

    def test_objects_hold_the_exact_spool_lines(self, env: ArchiveEnv) -> None:
        """An object's events are byte-for-byte the spool's lines, so the hash chain survives shipping."""
        env.write_events(10)
        lines = b"".join(p.read_bytes() for p in sealed(env))
        drain(env)
        client = env.endpoint.client()
        [key] = env.archive_keys()
        assert gzip.decompress(client.get_object(Bucket=env.bucket, Key=key)["Body"].read()) == lines

    def test_redelivery_is_recognised(self, env: ArchiveEnv) -> None:
        """Delivering the same batch again finds the object present and writes no second version."""
        env.write_events(20)
        config = env.config
        objects = build_objects(list_sealed(env.spool), config.sink.prefix, config.retention.classes).objects
        uploader = Uploader(config.sink, config.retention.classes, make_s3_client(config.sink))
        assert [uploader.deliver(o) for o in objects] == ["uploaded"]
        assert [uploader.deliver(o) for o in objects] == [ALREADY_PRESENT]
        assert env.archive_versions() == 1

    def test_different_object_at_our_key_is_a_conflict(self, env: ArchiveEnv) -> None:
        """A different object at the content-derived key is an alarm, never overwritten, segments kept."""
        env.write_events(5)
        config = env.config
        [obj] = build_objects(list_sealed(env.spool), config.sink.prefix, config.retention.classes).objects
        client = env.endpoint.client()
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        client.put_object(Bucket=env.bucket, Key=obj.key, Body=b"forged", ContentMD5=content_md5(b"forged"),
                          ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
        uploader = Uploader(config.sink, config.retention.classes, make_s3_client(config.sink))
        with pytest.raises(ObjectConflictError, match="already exists with content sha256"):
            uploader.deliver(obj)
        assert len(sealed(env)) == 1


class TestPartitionsAndLocks:
    def test_month_boundary_splits_partitions(self, env: ArchiveEnv) -> None:
        """Events on both sides of a UTC month boundary land in their own month partitions."""
        # The next boundary, so the one-day class's retain-until is in the future whatever the day.
        before = NEXT_BOUNDARY - dt.timedelta(seconds=1)
        ticks: Iterator[int] = itertools.count(to_ns(before), 200_000_000)  # 0.2 s apart: 5 before, 7 after
        written = env.write_events(12, clock=lambda: next(ticks))
        drain(env)
        keys = env.archive_keys()
        assert {k.split("/")[2:4] == THIS_MONTH.partition.split("/") for k in keys} == {True, False}
        by_month: dict[str, set[str]] = {}
        client = env.endpoint.client()
        for key in keys:
            body = gzip.decompress(client.get_object(Bucket=env.bucket, Key=key)["Body"].read())
            months = {orjson.loads(line)["occurred_at"][:7] for line in body.splitlines()}
            assert len(months) == 1
            month = months.pop()
            assert f"year={month[:4]}/month={month[5:7]}/" in key
            by_month.setdefault(month, set()).update(orjson.loads(line)["event_id"] for line in body.splitlines())
        assert {m: len(ids) for m, ids in by_month.items()} == {THIS_MONTH.iso: 5, NEXT_MONTH.iso: 7 + 1}  # + clean end
        assert sum(len(ids) for ids in by_month.values()) == len(written) + 1

    def test_lock_mode_retain_until_and_tags(self, env: ArchiveEnv) -> None:
        """Each object carries its class's lock mode, retain-until = last event + days, tags and sha256."""
        env.write_events(3)
        env.write_events(2, event_type="auth.login_failed")
        drain(env)
        client = env.endpoint.client()
        seen = {}
        for key in env.archive_keys():
            head = client.head_object(Bucket=env.bucket, Key=key)
            tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=env.bucket, Key=key)["TagSet"]}
            last = layout.parse_occurred_at(head["Metadata"][layout.META_LAST])
            seen[tags["auditlock-retention"]] = head["ObjectLockMode"]
            days = env.config.retention.classes[tags["auditlock-retention"]].days
            expected = last + dt.timedelta(days=days)
            assert abs(head["ObjectLockRetainUntilDate"] - expected) < dt.timedelta(seconds=1)
            assert tags["auditlock-schema"] == "1"
            assert len(head["Metadata"][layout.META_SHA256]) == 64
        assert seen == {"standard": "GOVERNANCE", "security": "COMPLIANCE"}

    def test_deleting_a_locked_version_is_refused(self, env: ArchiveEnv) -> None:
        """The server refuses to delete a locked object version (403)."""
        env.write_events(2, event_type="auth.login_failed")
        drain(env)
        client = env.endpoint.client()
        [key] = [k for k in env.archive_keys() if "-security-" in k]
        version = client.head_object(Bucket=env.bucket, Key=key)["VersionId"]
        with pytest.raises(ClientError) as info:
            client.delete_object(Bucket=env.bucket, Key=key, VersionId=version)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


class TestEncryption:
    def test_sse_kms_when_configured(self, moto_s3: S3Endpoint, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        """With [sink] kms_key_id every object is stored with SSE-KMS under that key (moto; RGW needs a KMS)."""
        use_credentials(monkeypatch, moto_s3)
        kms = boto3.client("kms", endpoint_url=moto_s3.url, region_name=moto_s3.region)
        key_id = kms.create_key(Description="auditlock test")["KeyMetadata"]["KeyId"]
        name = make_lock_bucket(moto_s3.client(), "kms-bucket")
        monkeypatch.setenv("AUDITLOCK_SINK_KMS_KEY_ID", key_id)
        env = ArchiveEnv.create(tmp_path, moto_s3, name)
        env.write_events(3)
        drain(env)
        [key] = env.archive_keys()
        head = moto_s3.client().head_object(Bucket=name, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]
