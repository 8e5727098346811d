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

import hashlib
from collections.abc import Mapping
from typing import Any

from auditlock.archive.layout import TAG_RETENTION
from auditlock.config.model import Config, RetentionClass

COLD_STORAGE_CLASS = "GLACIER_IR"
NONCURRENT_DAYS = 1
ABORT_MULTIPART_DAYS = 7
RULE_PREFIX = "auditlock-"
LEGACY_CLASS_RULE_PREFIX = "auditlock-retention-"  # IDs an older auditlock wrote, not per prefix
LEGACY_HOUSEKEEPING_RULE_ID = "auditlock-housekeeping"
MAX_RULE_ID = 255  # S3's limit on a lifecycle rule ID
PREFIX_ID_READABLE = 24  # characters of the prefix kept in its id, before the hash
PREFIX_ID_HASH = 8  # hex characters of SHA-256(`<prefix>/`): what makes the id unique


def key_prefix(prefix: str) -> str:
    """`<prefix>/` as lifecycle filters and policies spell it ("" for an empty prefix: the whole bucket)."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def prefix_id(prefix: str) -> str:
    """The prefix's short, stable, alphanumeric id in rule IDs and policy Sids: its letters and digits (at most
    24, `bucket` for the whole bucket) and 8 hex digits of SHA-256 of `<prefix>/` — so `a/b` and `ab` differ."""
    where = key_prefix(prefix)
    readable = "".join(c for c in where if c.isascii() and c.isalnum())[:PREFIX_ID_READABLE] or "bucket"
    return readable + hashlib.sha256(where.encode()).hexdigest()[:PREFIX_ID_HASH]


def class_rule_id(name: str, prefix: str) -> str:
    """The lifecycle rule ID of a retention class under a prefix: `auditlock-<prefix id>-retention-<class>`."""
    return _bounded(f"{RULE_PREFIX}{prefix_id(prefix)}-retention-{name}")


def housekeeping_rule_id(prefix: str) -> str:
    """The lifecycle rule ID of a prefix's housekeeping rule: `auditlock-<prefix id>-housekeeping`."""
    return f"{RULE_PREFIX}{prefix_id(prefix)}-housekeeping"


def legacy_class_rule_id(name: str) -> str:
    """The rule ID a class had before IDs were per prefix (what an older `auditlock provision` wrote)."""
    return f"{LEGACY_CLASS_RULE_PREFIX}{name}"


def _bounded(rule_id: str) -> str:
    """`rule_id` itself when S3 takes it, else cut with a hash of the whole (a very long class name)."""
    if len(rule_id) <= MAX_RULE_ID:
        return rule_id
    return f"{rule_id[:MAX_RULE_ID - 9]}~{hashlib.sha256(rule_id.encode()).hexdigest()[:8]}"


def normal_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as read back from any server, in the shape we write: RADOS Gateway answers an `And` filter as
    {"Prefix", "Tag"}, moto adds zero Years and some servers keep a legacy top-level Prefix."""
    out = {k: v for k, v in rule.items() if k not in ("Prefix", "Filter")}
    prefix, tags = rule_filter(rule)
    if tags and prefix:
        out["Filter"] = {"And": {"Prefix": prefix, "Tags": tags}}
    elif len(tags) > 1:
        out["Filter"] = {"And": {"Tags": tags}}
    elif tags:
        out["Filter"] = {"Tag": tags[0]}
    else:
        out["Filter"] = {"Prefix": prefix}
    return out


def rule_filter(rule: Mapping[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(prefix, tags) a rule applies to, whichever shape its filter has."""
    where = rule.get("Filter") or {}
    inner = where.get("And", where)
    tags = list(inner.get("Tags") or []) + ([inner["Tag"]] if "Tag" in inner else [])
    prefix = inner.get("Prefix", rule.get("Prefix", "")) or ""
    return prefix, sorted(tags, key=lambda t: (t["Key"], t["Value"]))


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
        "ID": class_rule_id(name, prefix),
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
        "ID": housekeeping_rule_id(prefix),
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
    """What `auditlock lifecycle` prints: {"prefix_id": ..., "lifecycle": ..., "object_lock": ...}."""
    return {"prefix_id": prefix_id(config.sink.prefix), "lifecycle": lifecycle_configuration(config),
            "object_lock": object_lock_configuration(config)}


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
