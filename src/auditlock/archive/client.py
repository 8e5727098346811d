"""The one way auditlock makes an S3 client for `[sink]` (agent, query and verify all use it).

Credentials and region the boto3 way (environment, profile, web identity/IRSA, instance role); path-style
addressing for S3-compatible endpoints; checksums only where S3 requires them (older S3-compatible servers
reject boto3's default CRC32 headers); botocore's `standard` retry mode. boto3 is imported when called, so
importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditlock.config.model import SinkConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def make_s3_client(sink: SinkConfig, *, read_timeout: float | None = None, attempts: int = 3,
                   max_pool_connections: int = 10) -> S3Client:
    """An S3 client for the sink bucket; `read_timeout` can only shorten `[sink] read_timeout_s`."""
    import boto3  # noqa: PLC0415 - the app side never imports boto3
    from botocore.config import Config as BotoConfig  # noqa: PLC0415

    timeout = sink.read_timeout_s if read_timeout is None else min(read_timeout, sink.read_timeout_s)
    config = BotoConfig(
        retries={"mode": "standard", "total_max_attempts": attempts},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=min(5, timeout),
        read_timeout=timeout,
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if sink.endpoint_url else {},
    )
    client: S3Client = boto3.session.Session(region_name=sink.region).client(
        "s3", endpoint_url=sink.endpoint_url, config=config)
    return client


NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")


def is_not_found(exc: BaseException) -> bool:
    """Whether a botocore error says the key does not exist (HEAD answers a bare "404", GET "NoSuchKey")."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return str(response.get("Error", {}).get("Code", "")) in NOT_FOUND_CODES
