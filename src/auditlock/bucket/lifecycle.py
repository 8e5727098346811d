"""Lifecycle and Object Lock configuration of the archive bucket, in the shapes boto3 takes them.

`lifecycle_configuration(config)` is the `LifecycleConfiguration` argument of
`put_bucket_lifecycle_configuration`, `object_lock_configuration(config)` the `ObjectLockConfiguration`
argument of `put_object_lock_configuration` (see the package docstring for what each rule means).
`cloudformation_rules` renders the same rules as `AWS::S3::Bucket` `LifecycleConfiguration.Rules`.
Pure: no boto3.

Choices
- Cold storage class: GLACIER_IR (Glacier Instant Retrieval) — millisecond reads, so Athena, `auditlock query`
  and `verify` keep working on cold months without a restore; about a third of STANDARD_IA's storage price, at a
  higher per-GB read price, which suits an archive that is written once and rarely read. (GLACIER and
  DEEP_ARCHIVE need a restore before every read; STANDARD_IA costs more and needs 30 days in STANDARD first.)
  S3 does not transition objects under 128 KiB by default, so small digests simply stay in STANDARD.
- No transition when `hot_days` is unset, 0, or not below `days` (the object would expire first).
- Expiration after exactly `days`, no margin: S3 counts from the object's creation, which is after its last
  event, and the lock runs from the last event — the lock has always ended when the delete marker comes (and
  a delete marker never removes a locked version anyway).
- Noncurrent versions go `NONCURRENT_DAYS` after they became noncurrent — S3 removes a version only once
  its lock has ended, so this cannot cut a retention short; it only ends "expired" data promptly.
"""

from __future__ import annotations

from typing import Any

from auditlock.archive.layout import TAG_RETENTION
from auditlock.config.model import Config, RetentionClass

COLD_STORAGE_CLASS = "GLACIER_IR"
NONCURRENT_DAYS = 1
ABORT_MULTIPART_DAYS = 7
RULE_PREFIX = "auditlock-"
CLASS_RULE_PREFIX = "auditlock-retention-"
HOUSEKEEPING_RULE_ID = "auditlock-housekeeping"


def key_prefix(prefix: str) -> str:
    """`<prefix>/` as lifecycle filters and policies spell it ("" for an empty prefix: the whole bucket)."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def class_rule_id(name: str) -> str:
    """The lifecycle rule ID of a retention class."""
    return f"{CLASS_RULE_PREFIX}{name}"


def transition_days(retention: RetentionClass) -> int | None:
    """Days before the move to cold storage, or None when there is none (see the module docstring)."""
    hot = retention.hot_days
    if hot is None or hot <= 0 or hot >= retention.days:
        return None
    return hot


def class_rule(name: str, retention: RetentionClass, prefix: str) -> dict[str, Any]:
    """The rule for one retention class: tag (and prefix) filter, transition, expiry."""
    tag = {"Key": TAG_RETENTION, "Value": name}
    where = key_prefix(prefix)
    rule: dict[str, Any] = {
        "ID": class_rule_id(name),
        "Status": "Enabled",
        "Filter": {"And": {"Prefix": where, "Tags": [tag]}} if where else {"Tag": tag},
    }
    days = transition_days(retention)
    if days is not None:
        rule["Transitions"] = [{"Days": days, "StorageClass": COLD_STORAGE_CLASS}]
    rule["Expiration"] = {"Days": retention.days}
    return rule


def housekeeping_rule(prefix: str) -> dict[str, Any]:
    """Noncurrent versions, expired delete markers, incomplete multipart uploads (none of which take tag filters)."""
    return {
        "ID": HOUSEKEEPING_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": key_prefix(prefix)},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


def lifecycle_configuration(config: Config) -> dict[str, Any]:
    """`put_bucket_lifecycle_configuration(LifecycleConfiguration=...)` for this config (classes by name)."""
    prefix = config.sink.prefix
    classes = config.retention.classes
    rules = [class_rule(name, classes[name], prefix) for name in sorted(classes)]
    return {"Rules": [*rules, housekeeping_rule(prefix)]}


def object_lock_configuration(config: Config) -> dict[str, Any]:
    """`put_object_lock_configuration(ObjectLockConfiguration=...)`: enabled, the default class as default."""
    default = config.retention.classes[config.retention.default]
    return {"ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": default.mode, "Days": default.days}}}


def bucket_configuration(config: Config) -> dict[str, Any]:
    """What `auditlock lifecycle` prints: {"lifecycle": ..., "object_lock": ...}."""
    return {"lifecycle": lifecycle_configuration(config), "object_lock": object_lock_configuration(config)}


def cloudformation_rules(lifecycle: dict[str, Any]) -> list[dict[str, Any]]:
    """The same rules as CloudFormation's `AWS::S3::Bucket` `LifecycleConfiguration.Rules` spell them."""
    return [_cloudformation_rule(rule) for rule in lifecycle["Rules"]]


def _cloudformation_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Id": rule["ID"], "Status": rule["Status"]}
    where = rule["Filter"].get("And", rule["Filter"])
    if where.get("Prefix"):
        out["Prefix"] = where["Prefix"]
    tags = where.get("Tags") or ([where["Tag"]] if "Tag" in where else [])
    if tags:
        out["TagFilters"] = tags
    for transition in rule.get("Transitions", []):
        out.setdefault("Transitions", []).append(
            {"StorageClass": transition["StorageClass"], "TransitionInDays": transition["Days"]})
    expiration = rule.get("Expiration", {})
    if "Days" in expiration:
        out["ExpirationInDays"] = expiration["Days"]
    if expiration.get("ExpiredObjectDeleteMarker"):
        out["ExpiredObjectDeleteMarker"] = True
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = dict(rule["NoncurrentVersionExpiration"])
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = dict(rule["AbortIncompleteMultipartUpload"])
    return out
