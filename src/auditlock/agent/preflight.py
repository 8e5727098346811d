"""The check before the first PUT: the sink bucket exists, the credentials work, and Object Lock is enabled.

`GetObjectLockConfiguration` answers all three in one request. A bucket without Object Lock is refused before
anything is shipped: objects put there could be deleted, which is what the archive exists to prevent (and the
agent's lock headers would be rejected anyway). A failure that can clear by retrying is raised as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditlock.agent.s3errors import NO_OBJECT_LOCK_FIX, Permanence, SinkUnusableError, classify, sink_problem

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def check_sink(client: S3Client, bucket: str, endpoint_url: str | None) -> None:
    """Raise `SinkUnusableError` naming the fix if the sink cannot take objects; other errors pass through."""
    try:
        response = client.get_object_lock_configuration(Bucket=bucket)
    except Exception as exc:
        if classify(exc) is Permanence.SINK:
            raise SinkUnusableError(sink_problem(exc, bucket, endpoint_url)) from exc
        raise
    enabled = response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
    if enabled != "Enabled":
        raise SinkUnusableError(f"bucket {bucket!r} at {endpoint_url or 'AWS S3'}: Object Lock is not enabled "
                                f"(ObjectLockEnabled = {enabled!r}); {NO_OBJECT_LOCK_FIX}")
