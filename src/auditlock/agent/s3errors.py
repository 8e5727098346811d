"""Which S3 failures clear by retrying, and which cannot clear without an operator — the one definition.

Three answers (`classify`):
- `TRANSIENT`: throttling, 5xx, resets, timeouts, anything unknown. Retried forever with backoff.
- `SINK`: the sink as configured cannot take anything — no bucket, no Object Lock, credentials rejected, access
  denied, wrong region, an endpoint that refuses connections or does not resolve, a clock far off. Every request
  would fail the same way. `auditlock agent --once` exits 1 naming the fix; the long-running agent reports not
  ready (`/readyz` 503 with the reason) and keeps retrying at the capped backoff, so it resumes by itself once
  an operator fixed the cause.
- `REJECTED`: S3 refused this one request for what it is (an invalid argument such as a retain-until in the past,
  a key or metadata too long). Sending it again can only fail again: the batch is set aside (see the shipper),
  the rest keeps flowing.

Unknown error codes are TRANSIENT on purpose: retrying something that cannot clear costs requests, while
setting aside something that would have cleared costs an operator's time — and refusing to retry would risk
nothing being shipped at all.
"""

from __future__ import annotations

from enum import Enum

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

from auditlock.errors import UploadError


class Permanence(Enum):
    """How a failure may end."""

    TRANSIENT = "transient"
    SINK = "sink"
    REJECTED = "rejected"


# S3 error codes that mean the bucket, the credentials or the endpoint are wrong, with the fix each needs.
SINK_CODES: dict[str, str] = {
    "NoSuchBucket": "create the bucket with `auditlock provision --config …` (it enables Object Lock) or fix "
                    "[sink] bucket",
    "ObjectLockConfigurationNotFoundError": "the bucket has no Object Lock; see the 'no Object Lock' fix below",
    "InvalidAccessKeyId": "give the agent valid credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile "
                          "or a role)",
    "SignatureDoesNotMatch": "the secret key does not match the access key id; fix AWS_SECRET_ACCESS_KEY",
    "AccessDenied": "allow the agent s3:GetBucketObjectLockConfiguration, s3:GetObject, s3:PutObject, "
                    "s3:PutObjectRetention and s3:PutObjectTagging on the bucket (see deploy/cloudformation)",
    "AllAccessDisabled": "access to the bucket is disabled; re-enable it or use another [sink] bucket",
    "AccountProblem": "the account cannot use S3; resolve it with the provider",
    "InvalidBucketName": "fix [sink] bucket",
    "PermanentRedirect": "set [sink] region to the bucket's region",
    "AuthorizationHeaderMalformed": "set [sink] region to the bucket's region",
    "IllegalLocationConstraintException": "set [sink] region to the bucket's region",
    "RequestTimeTooSkewed": "the host's clock is more than 15 minutes off S3's; fix time synchronisation (NTP)",
    "KMS.NotFoundException": "[sink] kms_key_id names no usable KMS key; fix it or unset it",
    "KMS.DisabledException": "the KMS key of [sink] kms_key_id is disabled; enable it or use another",
}

# S3 error codes that reject the request itself: the same request can only fail again.
REJECTED_CODES = frozenset({
    "InvalidArgument", "InvalidRequest", "EntityTooLarge", "KeyTooLongError", "MetadataTooLarge", "InvalidTag",
})

NO_OBJECT_LOCK_FIX = (
    "Object Lock must be enabled when a bucket is created: create the bucket with `auditlock provision --config "
    "…` (or the CloudFormation template in deploy/cloudformation), or `aws s3api create-bucket "
    "--object-lock-enabled-for-bucket`, then point [sink] bucket at it"
)


class SinkUnusableError(UploadError):
    """The sink cannot take anything as configured (no bucket, no Object Lock, credentials, endpoint)."""


class ObjectRejectedError(UploadError):
    """S3 permanently rejected one object of a batch: retrying the same request can only fail again."""

    def __init__(self, key: str, cause: BaseException) -> None:
        self.key = key
        self.code = error_code(cause) or type(cause).__name__
        super().__init__(f"S3 rejected {key} permanently ({self.code}: {_message(cause)})")


def classify(exc: BaseException) -> Permanence:
    """Whether `exc` can clear by retrying (see the module docstring)."""
    if isinstance(exc, (EndpointConnectionError, NoCredentialsError, PartialCredentialsError)):
        return Permanence.SINK
    code = error_code(exc)
    if code in SINK_CODES:
        return Permanence.SINK
    if code in REJECTED_CODES:
        return Permanence.REJECTED
    return Permanence.TRANSIENT


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore `ClientError`, or ""."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


def sink_problem(exc: BaseException, bucket: str, endpoint_url: str | None) -> str:
    """The operator's message for a SINK failure: what failed, against what, and the fix."""
    where = f"bucket {bucket!r} at {endpoint_url or 'AWS S3'}"
    if isinstance(exc, EndpointConnectionError):
        return (f"cannot connect to {endpoint_url or 'AWS S3'} ({exc}); check [sink] endpoint_url and region, "
                "and that the S3 server is running and reachable from here")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return (f"no usable AWS credentials for {where} ({exc}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or give the agent a role")
    code = error_code(exc)
    fix = NO_OBJECT_LOCK_FIX if code == "ObjectLockConfigurationNotFoundError" else SINK_CODES.get(code, "")
    return f"{where}: {code}: {_message(exc)}; {fix}"


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)
