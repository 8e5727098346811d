"""Protection of the archive bucket besides Object Lock: bucket policy, public access block, default encryption.

Pure: the shapes `put_bucket_policy` (as parsed JSON), `put_public_access_block` and `put_bucket_encryption`
take. The CloudFormation template spells the same statements with an admin exception (see docs/bucket.md).

- `AuditlockDenyInsecureTransport`: every request over plain HTTP is denied (`aws:SecureTransport` false).
  Left out for a plain-HTTP `endpoint_url` (a local S3-compatible server), where it would deny everything.
- `AuditlockDenyObjectDeletion<prefix id>` (one per prefix, `lifecycle.prefix_id`): nobody deletes an object
  or version under `<prefix>/`, nor bypasses GOVERNANCE retention there — not even the bucket owner. Expiry
  is the lifecycle's job, which bucket policies do not restrict. Deleting early (GOVERNANCE) takes two
  deliberate, logged steps: remove this statement, then delete.
- Public access block: all four flags; only `BlockPublicAcls` is left to the operator on S3-compatible
  endpoints, because RADOS Gateway (15, 16) then refuses every PutObject, even the owner's. auditlock sends no
  ACLs, so the flag guards against other writers only.
"""

from __future__ import annotations

from typing import Any

from auditlock.bucket.lifecycle import key_prefix, prefix_id

SID_PREFIX = "Auditlock"
SID_TLS = "AuditlockDenyInsecureTransport"  # bucket-wide, the same statement for every prefix
SID_DELETE = "AuditlockDenyObjectDeletion"  # + the prefix id; alone, the Sid an older auditlock wrote
DELETE_ACTIONS = ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention")
PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
POLICY_VERSION = "2012-10-17"


def tls_statement(bucket: str) -> dict[str, Any]:
    """Deny any request to the bucket or its objects that does not use TLS."""
    return {"Sid": SID_TLS, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def delete_sid(prefix: str) -> str:
    """The Sid of the prefix's deny-delete statement (alphanumeric, as S3 requires)."""
    return f"{SID_DELETE}{prefix_id(prefix)}"


def delete_resource(bucket: str, prefix: str) -> str:
    """The objects the prefix's deny-delete statement covers."""
    return f"arn:aws:s3:::{bucket}/{key_prefix(prefix)}*"


def delete_statement(bucket: str, prefix: str) -> dict[str, Any]:
    """Deny deleting (and bypassing GOVERNANCE retention on) anything under the prefix, to everyone."""
    return {"Sid": delete_sid(prefix), "Effect": "Deny", "Principal": "*", "Action": list(DELETE_ACTIONS),
            "Resource": delete_resource(bucket, prefix)}


def policy_statements(bucket: str, prefix: str, *, tls_only: bool) -> list[dict[str, Any]]:
    """auditlock's statements, TLS-only first when wanted."""
    return [*([tls_statement(bucket)] if tls_only else []), delete_statement(bucket, prefix)]


def public_access_block(current: dict[str, bool] | None, *, block_public_acls: bool) -> dict[str, bool]:
    """All flags on (BlockPublicAcls as asked); a flag that is already on stays on."""
    wanted = dict.fromkeys(PUBLIC_ACCESS_FLAGS, True)
    wanted["BlockPublicAcls"] = block_public_acls or bool((current or {}).get("BlockPublicAcls"))
    return wanted


def encryption_configuration(kms_key_id: str | None) -> dict[str, Any]:
    """Default encryption: SSE-KMS with the key (and an S3 Bucket Key, fewer KMS calls), else SSE-S3."""
    if kms_key_id:
        default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id}
        return {"Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}]}
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
