"""What provisioning refuses: bad bucket names and every change that would weaken retention. Pure.

"Weaken" means: a shorter default retention, COMPLIANCE → GOVERNANCE, removing the default retention, a class
rule whose expiry would come sooner than it does now (objects already written are locked by the old days, and a
delete marker would hide them while still locked), or any rule — ours or not — that would expire objects of a
class under our prefix before the class's days. Lengthening and hardening are always allowed. Each refusal
names the current and the wanted value and says what to do instead; there is no override.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from auditlock.archive.layout import TAG_RETENTION, TAG_SCHEMA
from auditlock.bucket.lifecycle import key_prefix, rule_filter
from auditlock.bucket.ownership import is_class_rule_of
from auditlock.config.model import RetentionClass
from auditlock.errors import ProvisionError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
MAX_LEAP_DAYS_PER_YEAR = 1  # a retention year may hold a 29 February


def check_bucket_name(name: str) -> None:
    """Raise ProvisionError unless `name` is a valid general-purpose S3 bucket name (AWS's naming rules)."""
    problem = _bucket_name_problem(name)
    if problem:
        raise ProvisionError(f"bucket name {name!r}: {problem} (S3 bucket names: 3-63 characters, lowercase "
                             "letters, digits, '.' and '-', beginning and ending with a letter or digit)")


def _bucket_name_problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return f"{len(name)} characters"
    if not _BUCKET.match(name):
        bad = sorted({c for c in name if not (c.islower() or c.isdigit() or c in ".-")})
        return f"invalid characters {''.join(bad)!r}" if bad else "must begin and end with a letter or digit"
    if ".." in name:
        return "two adjacent periods"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "formatted as an IP address"
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return "uses a prefix or suffix S3 reserves"
    return None


# --------------------------------------------------------------------------------------------- Object Lock


def retention_days(default_retention: Mapping[str, Any]) -> int:
    """A DefaultRetention's length in days; Years count with a possible leap day each, so a switch from Years
    to Days is never taken for a lengthening it is not."""
    years = int(default_retention.get("Years") or 0)
    if years:
        return years * (365 + MAX_LEAP_DAYS_PER_YEAR)
    return int(default_retention.get("Days") or 0)


def check_lock(bucket: str, current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> None:
    """Refuse a bucket without Object Lock, and a default retention that is shorter or softer than now."""
    if not current or current.get("ObjectLockEnabled") != "Enabled":
        raise ProvisionError(
            f"bucket {bucket!r} exists without Object Lock: its objects could be overwritten or deleted. "
            "auditlock does not switch it on after the fact (objects already there would stay unlocked, and "
            "RADOS Gateway cannot do it at all); provision a new bucket name instead")
    now = (current.get("Rule") or {}).get("DefaultRetention")
    new = wanted["Rule"]["DefaultRetention"]
    if not now:
        return
    problems = []
    if now.get("Mode") == "COMPLIANCE" and new["Mode"] != "COMPLIANCE":
        problems.append(f"mode {now['Mode']} -> {new['Mode']}")
    if retention_days(new) < retention_days(now):
        problems.append(f"{_describe(now)} -> {_describe(new)}")
    if problems:
        raise ProvisionError(
            f"bucket {bucket!r}: refusing to weaken the default Object Lock retention ({'; '.join(problems)}); "
            f"current {_describe(now, mode=True)}, wanted {_describe(new, mode=True)} (the [retention] default "
            "class). Retention can only be lengthened or hardened: use a longer class as default, or a new bucket")


def _describe(retention: Mapping[str, Any], *, mode: bool = False) -> str:
    years = retention.get("Years")
    length = f"{years} years" if years else f"{retention.get('Days')} days"
    return f"{retention.get('Mode')} {length}" if mode else length


# ------------------------------------------------------------------------------------------------ lifecycle


def check_lifecycle(bucket: str, prefix: str, classes: Mapping[str, RetentionClass],
                    current: list[dict[str, Any]]) -> None:
    """Refuse when a rule in the bucket would expire objects of a class before the class's days, or when the
    config would make a class's rule expire objects sooner than it does now."""
    problems = []
    for rule in current:
        if rule.get("Status") != "Enabled":
            continue
        for name, retention in sorted(classes.items()):
            problem = _early_expiry(rule, name, retention, prefix)
            if problem:
                problems.append(problem)
    if problems:
        raise ProvisionError(
            f"bucket {bucket!r}: refusing lifecycle changes that would expire audit objects early: "
            + "; ".join(problems))


def _early_expiry(rule: Mapping[str, Any], name: str, retention: RetentionClass, prefix: str) -> str | None:
    if not _applies_to(rule, name, prefix):
        return None
    rule_id = rule.get("ID", "<no ID>")
    expiration = rule.get("Expiration") or {}
    if is_class_rule_of(rule, name, prefix):
        if expiration.get("Days", 0) > retention.days:
            return (f"class {name!r}: expiry after {expiration['Days']} days in the bucket, {retention.days} days "
                    "in the config; objects already written are locked for the longer period and must not expire "
                    "before it — keep the days, or give the shorter retention a new class name")
        return None
    if "Date" in expiration:
        return f"rule {rule_id!r} expires objects of class {name!r} on a fixed date ({expiration['Date']})"
    if "Days" in expiration and expiration["Days"] < retention.days:
        return (f"rule {rule_id!r} expires objects of class {name!r} after {expiration['Days']} days, before its "
                f"{retention.days} days; remove or narrow that rule first")
    return None


def _applies_to(rule: Mapping[str, Any], name: str, prefix: str) -> bool:
    """Whether a rule's filter can match an object of class `name` under our prefix."""
    rule_prefix, tags = rule_filter(rule)
    ours = key_prefix(prefix)
    if not (ours.startswith(rule_prefix) or rule_prefix.startswith(ours)):
        return False
    object_tags = {(TAG_RETENTION, name), (TAG_SCHEMA, "1")}
    return all((t["Key"], t["Value"]) in object_tags for t in tags)
