"""Whose is each lifecycle rule and policy statement in a bucket several prefixes (services) share, and how
one prefix's rules and statements are merged in without touching the others'. Pure.

Ownership
- A rule is this prefix's when its ID is one `lifecycle` renders for the prefix (`auditlock-<prefix id>-…`).
- A *legacy* rule — `auditlock-retention-<class>` filtering on that class's tag, or `auditlock-housekeeping`,
  the IDs an older auditlock wrote for every prefix alike — belongs to the prefix its filter names.
- The deny-delete statement `AuditlockDenyObjectDeletion<prefix id>` is the prefix's; a legacy
  `AuditlockDenyObjectDeletion` belongs to the objects its Resource names. `AuditlockDenyInsecureTransport` is
  bucket-wide and the same for every prefix.

Merging (what `auditlock provision` puts)
- Our rules and statements are put as rendered. A legacy rule of ours is replaced by its per-prefix successor
  (the same class; `checks.check_lifecycle` has refused a successor that would expire sooner); one without a
  successor (a class removed from the config) is kept. A legacy deny-delete statement over exactly our objects
  is replaced by ours when ours is at least as strong: a Deny of the same or fewer actions (ours has no
  Condition, so it denies at least as much). Everything else — other prefixes' rules and statements, legacy or
  not, and foreign ones — is kept as it is.

Refusals (`ProvisionError`, before anything is written)
- A rule in the bucket with an ID we would write but a filter on another prefix, or a statement with our Sid
  over other objects: putting ours would replace another prefix's protection.
- A class rule of ours that would expire another prefix's objects of that class before that prefix's own
  rule does (our prefix empty or enclosing theirs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditlock.archive.layout import TAG_RETENTION
from auditlock.bucket import protection
from auditlock.bucket.lifecycle import (
    LEGACY_HOUSEKEEPING_RULE_ID,
    RULE_PREFIX,
    class_rule_id,
    housekeeping_rule_id,
    key_prefix,
    legacy_class_rule_id,
    normal_rule,
    rule_filter,
)
from auditlock.errors import ProvisionError

Rule = dict[str, Any]


@dataclass(frozen=True)
class MergedRules:
    """The lifecycle rules to put, and the IDs of the rules in the bucket they replace or keep."""

    rules: list[Rule]
    replaced: list[str]
    kept: list[str]


def rule_class(rule: Mapping[str, Any]) -> str | None:
    """The retention class a rule's tag filter selects, None when it selects none (or several)."""
    classes = [t["Value"] for t in rule_filter(rule)[1] if t["Key"] == TAG_RETENTION]
    return classes[0] if len(classes) == 1 else None


def legacy_successor(rule: Mapping[str, Any], prefix: str) -> str | None:
    """The per-prefix ID that takes over `rule` when it is a legacy rule of this prefix, else None."""
    rule_prefix, tags = rule_filter(rule)
    if rule_prefix != key_prefix(prefix):
        return None
    name = rule_class(rule)
    if rule.get("ID") == LEGACY_HOUSEKEEPING_RULE_ID and not tags:
        return housekeeping_rule_id(prefix)
    if name is not None and rule.get("ID") == legacy_class_rule_id(name):
        return class_rule_id(name, prefix)
    return None


def is_class_rule_of(rule: Mapping[str, Any], name: str, prefix: str) -> bool:
    """Whether `rule` is this prefix's rule for class `name` (per-prefix or legacy)."""
    return rule.get("ID") == class_rule_id(name, prefix) or legacy_successor(rule, prefix) == class_rule_id(
        name, prefix)


def merged_rules(current: list[Rule], wanted: list[Rule], prefix: str) -> MergedRules:
    """Ours as wanted; legacy rules of ours that have a successor replaced; every other rule kept, including a
    class rule for a class no longer in the config (objects tagged with it may still exist and should expire)."""
    ids = {r["ID"] for r in wanted}
    replaced = sorted(r["ID"] for r in current if r.get("ID") not in ids and legacy_successor(r, prefix) in ids)
    kept = [normal_rule(r) for r in current if r.get("ID") not in ids and r.get("ID") not in replaced]
    return MergedRules([*wanted, *kept], replaced, [r.get("ID", "<no ID>") for r in kept])


def check_rules(bucket: str, prefix: str, current: list[Rule], wanted: list[Rule]) -> None:
    """Refuse to replace another prefix's rule, or to expire its objects earlier than its own rule does."""
    problems = [*_taken_ids(prefix, current, wanted), *_earlier_than_others(prefix, current, wanted)]
    if problems:
        raise ProvisionError(f"bucket {bucket!r}, prefix {key_prefix(prefix)!r}: refusing lifecycle changes that "
                             "would remove or weaken another prefix's rules: " + "; ".join(problems))


def _taken_ids(prefix: str, current: list[Rule], wanted: list[Rule]) -> list[str]:
    ids = {r["ID"] for r in wanted}
    ours = key_prefix(prefix)
    return [f"rule {r['ID']!r} filters on prefix {rule_filter(r)[0]!r}, not {ours!r}: it is another prefix's "
            "(or was written by hand); rename or remove it yourself if it is not needed"
            for r in current if r.get("ID") in ids and rule_filter(r)[0] != ours]


def _earlier_than_others(prefix: str, current: list[Rule], wanted: list[Rule]) -> list[str]:
    problems = []
    ours = key_prefix(prefix)
    for theirs in current:
        their_prefix = rule_filter(theirs)[0]
        name = rule_class(theirs)
        if (theirs.get("Status") != "Enabled" or not str(theirs.get("ID", "")).startswith(RULE_PREFIX)
                or their_prefix == ours or not their_prefix.startswith(ours) or name is None):
            continue
        days = (theirs.get("Expiration") or {}).get("Days")
        for rule in wanted:
            expiry = (rule.get("Expiration") or {}).get("Days")
            if rule_class(rule) == name and days is not None and expiry is not None and expiry < days:
                problems.append(f"our rule {rule['ID']!r} would expire objects of class {name!r} under "
                                f"{their_prefix!r} after {expiry} days, before the {days} days of their rule "
                                f"{theirs['ID']!r}; use a prefix that does not enclose another service's")
    return problems


def merged_policy(bucket: str, prefix: str, current: dict[str, Any] | None,
                  ours: list[dict[str, Any]]) -> dict[str, Any]:
    """`current` with our statements put in: ours replaced by Sid, a legacy deny-delete statement over exactly
    our objects replaced by ours when ours is as strong, every other statement kept in place."""
    statements = policy_statements(current)
    wanted = {s["Sid"]: s for s in ours}
    merged = []
    for statement in statements:
        if statement.get("Sid") in wanted:
            merged.append(wanted.pop(statement["Sid"]))
        elif not _replaceable_legacy_delete(statement, bucket, prefix):
            merged.append(statement)
    return {"Version": (current or {}).get("Version", protection.POLICY_VERSION),
            "Statement": [*merged, *wanted.values()]}


def check_policy(bucket: str, prefix: str, current: dict[str, Any] | None) -> None:
    """Refuse to replace a statement with our deny-delete Sid that covers another prefix's objects."""
    sid, resource = protection.delete_sid(prefix), protection.delete_resource(bucket, prefix)
    for statement in policy_statements(current):
        if statement.get("Sid") == sid and _resources(statement) != [resource]:
            raise ProvisionError(
                f"bucket {bucket!r}: the policy statement {sid} covers {_resources(statement)}, not {resource}: "
                "putting ours would remove another prefix's deletion protection; rename that statement's Sid "
                "first")


def policy_statements(policy: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A policy's statements as a list (a policy may hold a single statement as an object)."""
    statements = (policy or {}).get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _replaceable_legacy_delete(statement: Mapping[str, Any], bucket: str, prefix: str) -> bool:
    actions = statement.get("Action", [])
    actions = [actions] if isinstance(actions, str) else list(actions)
    negated = {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
    return (statement.get("Sid") == protection.SID_DELETE and statement.get("Effect") == "Deny" and not negated
            and bool(actions)
            and _resources(statement) == [protection.delete_resource(bucket, prefix)]
            and set(actions) <= set(protection.DELETE_ACTIONS))


def _resources(statement: Mapping[str, Any]) -> list[str]:
    resource = statement.get("Resource", [])
    return [resource] if isinstance(resource, str) else list(resource)
