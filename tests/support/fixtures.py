"""Pytest fixtures for S3 tests: ``moto_s3``, ``rgw_s3``, the parametrised ``s3`` and a fresh ``bucket``.

Load with ``pytest_plugins = ["tests.support.fixtures"]`` in the root conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.faultproxy import FaultProxy
from tests.support.s3servers import RadosGateway, S3Endpoint, make_lock_bucket, rgw_available, start_moto

REQUIRE_RGW_ENV = "AUDITLOCK_REQUIRE_RGW"


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Endpoint]:
    """A moto S3 server in a thread, shared by the whole session."""
    endpoint, stop = start_moto()
    try:
        yield endpoint
    finally:
        stop()


@pytest.fixture(scope="session")
def rgw_s3() -> Iterator[S3Endpoint]:
    """A throwaway Ceph RADOS Gateway for the session; skips when Ceph is missing (fails if required)."""
    reason = rgw_available()
    if reason is not None:
        # CI sets AUDITLOCK_REQUIRE_RGW=1 so a broken install cannot silently skip the real-server tier.
        if os.environ.get(REQUIRE_RGW_ENV) == "1":
            pytest.fail(f"{reason} [{REQUIRE_RGW_ENV}=1]", pytrace=False)
        pytest.skip(reason)
    # A short /tmp path rather than tmp_path_factory: admin sockets must fit in 107 bytes (sun_path),
    # and RadosGateway.stop() removes the directory anyway.
    state_dir = tempfile.mkdtemp(prefix="auditlock-rgw-")
    gateway = RadosGateway(state_dir).start()  # on failure start() stops the daemons and removes the dir
    try:
        yield gateway.endpoint
    finally:
        gateway.stop()


@pytest.fixture(params=["moto", pytest.param("rgw", marks=pytest.mark.rgw)], ids=["moto", "rgw"])
def s3(request: pytest.FixtureRequest) -> S3Endpoint:
    """Each S3 server in turn; the rgw case carries the ``rgw`` marker so ``-m "not rgw"`` drops it."""
    # getfixturevalue keeps RADOS Gateway from starting in a session that only runs moto cases.
    endpoint: S3Endpoint = request.getfixturevalue(f"{request.param}_s3")
    return endpoint


@pytest.fixture
def bucket(s3: S3Endpoint) -> Iterator[tuple[S3Endpoint, str]]:
    """A fresh Object Lock bucket (no default retention) on ``s3``; yields (endpoint, bucket name)."""
    client = s3.client()
    name = make_lock_bucket(client, f"auditlock-test-{uuid.uuid4().hex[:16]}")
    yield s3, name
    _empty_and_delete(s3, name)


@pytest.fixture
def bucket_in_env(bucket: tuple[S3Endpoint, str], monkeypatch: pytest.MonkeyPatch) -> tuple[S3Endpoint, str]:
    """A fresh lock bucket (``bucket``) with its server's credentials in the environment, where boto3 and every
    agent or CLI child the test starts read them."""
    use_credentials(monkeypatch, bucket[0])
    return bucket


@pytest.fixture
def shipping_env(bucket_in_env: tuple[S3Endpoint, str], tmp_path: Path) -> ArchiveEnv:
    """A spool and config shipping to a fresh lock bucket; boto3 credentials in the environment."""
    endpoint, name = bucket_in_env
    return ArchiveEnv.create(tmp_path, endpoint, name)


def _empty_and_delete(endpoint: S3Endpoint, name: str) -> None:
    """Best-effort cleanup: COMPLIANCE-locked versions cannot be removed, and the servers are throwaway."""
    client = endpoint.client()
    with contextlib.suppress(ClientError):
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            versions = [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
            versions += [(m["Key"], m["VersionId"]) for m in page.get("DeleteMarkers", [])]
            for key, version_id in versions:
                with contextlib.suppress(ClientError):
                    client.delete_object(Bucket=name, Key=key, VersionId=version_id, BypassGovernanceRetention=True)
        client.delete_bucket(Bucket=name)


@pytest.fixture
def proxy(moto_s3: S3Endpoint) -> Iterator[FaultProxy]:
    """A fresh FaultProxy in front of the session's moto server (a planned stall is held at most 15 s); it must
    not have hit an internal error."""
    with FaultProxy(moto_s3.url, max_stall=15) as fp:
        yield fp
    assert fp.errors == []


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses a test started (writers, servers); any still running at teardown is SIGKILLed, all reaped."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
