"""A batch rebuilt after a crash by another compressor version: other gzip bytes, the same content. Exactly-once
rests on the content (the key and the HEAD check), and the digest names the bytes that landed."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib

import pytest

from auditlock.agent.batch import ArchiveObject, build_objects, list_sealed
from auditlock.agent.uploader import ALREADY_PRESENT, DELIVERED, Uploader
from auditlock.archive.client import make_s3_client
from tests.support.archive_env import ArchiveEnv


@pytest.fixture
def env(shipping_env: ArchiveEnv) -> ArchiveEnv:
    """A spool and config shipping to a fresh lock bucket; boto3 credentials in the environment."""
    return shipping_env


def regzipped(obj: ArchiveObject) -> ArchiveObject:
    """`obj` as another compressor builds it: the same lines (key, content hash) in other gzip bytes."""
    body = gzip.compress(gzip.decompress(obj.read_body()), compresslevel=9, mtime=0)
    assert body != obj.read_body()
    return dataclasses.replace(obj, body=body, staged=None, size=len(body), sha256=hashlib.sha256(body).hexdigest(),
                               md5_b64=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode())


class TestRebuiltWithOtherGzipBytes:
    """Invariant (exactly once, a true digest): other gzip bytes for the same lines find the landed object, and the
    object then describes the landed bytes."""

    def test_the_landed_object_is_found_and_described(self, env: ArchiveEnv) -> None:
        """The rebuilt object is already present (no second version) and takes the landed bytes' SHA-256 and size."""
        env.write_events(20)
        config = env.config
        [landed] = build_objects(list_sealed(env.spool), config.sink.prefix, config.retention.classes).objects
        uploader = Uploader(config.sink, config.retention.classes, make_s3_client(config.sink))
        assert uploader.deliver(landed) == DELIVERED
        rebuilt = regzipped(landed)

        assert uploader.deliver(rebuilt) == ALREADY_PRESENT

        stored = env.endpoint.client().get_object(Bucket=env.bucket, Key=landed.key)["Body"].read()
        assert (rebuilt.sha256, rebuilt.size) == (hashlib.sha256(stored).hexdigest(), len(stored))
        assert env.archive_versions() == 1
