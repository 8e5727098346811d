"""OCSF: an `auditlock/1` event as an Open Cybersecurity Schema Framework record, for a security team's SIEM.

The archive's own format never changes; OCSF is a view of it, produced on the way out (`auditlock query --format
ocsf`, the admin view's OCSF export, and the Athena view from `auditlock athena-ddl --ocsf`, which is generated
from the same tables below, so the three agree). Decisions (docs/querying.md "OCSF" has the table):

- Schema version `OCSF_VERSION` (1.5.0: the first whose Entity Management class carries `actor` and
  `src_endpoint`). Every record validates against the published schema of that version (tests, with the
  `ocsf-json-schema` package).
- Class by event type: record mutations (`<target>.created/updated/deleted`, `bulk_*`, `truncated`, and the
  integrations' `create_attempted`-style forms, which failed) → Entity Management, with `entity` the target and
  its before-values and `entity_result` the target and its after-values (from `payload.changes`);
  authentication → Authentication; password, MFA enrolment, role and permission changes → Account Change;
  sensitive reads and the admin view's own searches/exports → API Activity `Read`; every other type → API
  Activity `Other` with `api.operation` the type.
- `metadata.uid` is the original `event_id`: an OCSF record leads back to the locked original. `unmapped.auditlock`
  keeps what OCSF has no place for (event type, target, payload, writer, seq, retention), so nothing is lost.
- `time` is milliseconds since the epoch (OCSF's timestamp); `metadata.original_time` the archived text.
- The actor is `actor.user` (`uid` the actor id, `type_id` User for `user`, System for `svc`/`job`, Other with
  `type` otherwise) — an event without an actor has the recording application as `actor.app_name` (API Activity
  requires an actor); the client address `src_endpoint.ip`. Authentication names the application logged into
  (`service.name`, the event's service), as the class requires. API Activity requires a source endpoint: without an
  address it is the host that recorded the event (`hostname`), else the service (`name`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OCSF_VERSION = "1.5.0"
PRODUCT = {"name": "auditlock", "vendor_name": "auditlock"}

SUCCESS, FAILURE = 1, 2
INFORMATIONAL = 1
OTHER = 99


@dataclass(frozen=True)
class OcsfClass:
    """One OCSF event class: its uid and name, and its category's."""

    uid: int
    name: str
    category_uid: int
    category_name: str


ENTITY_MANAGEMENT = OcsfClass(3004, "Entity Management", 3, "Identity & Access Management")
AUTHENTICATION = OcsfClass(3002, "Authentication", 3, "Identity & Access Management")
ACCOUNT_CHANGE = OcsfClass(3001, "Account Change", 3, "Identity & Access Management")
API_ACTIVITY = OcsfClass(6003, "API Activity", 6, "Application Activity")


@dataclass(frozen=True)
class ClassActivity:
    """Where a fixed event type goes: class, activity (id and name) and outcome."""

    ocsf_class: OcsfClass
    activity_id: int
    activity_name: str
    status_id: int = SUCCESS


# Fixed event types (the standard ones, the view's and auditlock's own). Record mutations are matched by suffix.
FIXED: dict[str, ClassActivity] = {
    "auth.login_succeeded": ClassActivity(AUTHENTICATION, 1, "Logon"),
    "auth.login_failed": ClassActivity(AUTHENTICATION, 1, "Logon", FAILURE),
    "auth.login_failed_summary": ClassActivity(AUTHENTICATION, 1, "Logon", FAILURE),
    "auth.logout": ClassActivity(AUTHENTICATION, 2, "Logoff"),
    "auth.session_revoked": ClassActivity(AUTHENTICATION, 2, "Logoff"),
    "auth.mfa_challenge_succeeded": ClassActivity(AUTHENTICATION, 1, "Logon"),
    "auth.mfa_challenge_failed": ClassActivity(AUTHENTICATION, 1, "Logon", FAILURE),
    "auth.api_key_used": ClassActivity(AUTHENTICATION, 1, "Logon"),
    "auth.password_changed": ClassActivity(ACCOUNT_CHANGE, 3, "Password Change"),
    "auth.mfa_enrolled": ClassActivity(ACCOUNT_CHANGE, 10, "MFA Factor Enable"),
    "access.role_granted": ClassActivity(ACCOUNT_CHANGE, 7, "Attach Policy"),
    "access.role_revoked": ClassActivity(ACCOUNT_CHANGE, 8, "Detach Policy"),
    "access.permission_changed": ClassActivity(ACCOUNT_CHANGE, OTHER, "Other"),
    "data.accessed": ClassActivity(API_ACTIVITY, 2, "Read"),
    "audit_log.searched": ClassActivity(API_ACTIVITY, 2, "Read"),
    "audit_log.viewed": ClassActivity(API_ACTIVITY, 2, "Read"),
    "audit_log.exported": ClassActivity(API_ACTIVITY, 2, "Read"),
}
# Record-mutation actions (the event type's last part) → Entity Management (activity id, name, status): the
# SQLAlchemy/Django integrations' forms, their `*_attempted` forms (rolled back or failed) and capture's truncate.
RECORD_ACTIVITIES: dict[str, tuple[int, str, int]] = {
    **{action: (1, "Create", status) for action, status in (("created", SUCCESS), ("bulk_created", SUCCESS),
                                                             ("create_attempted", FAILURE),
                                                             ("bulk_create_attempted", FAILURE))},
    **{action: (3, "Update", status) for action, status in (("updated", SUCCESS), ("bulk_updated", SUCCESS),
                                                             ("update_attempted", FAILURE),
                                                             ("bulk_update_attempted", FAILURE))},
    **{action: (4, "Delete", status) for action, status in (("deleted", SUCCESS), ("bulk_deleted", SUCCESS),
                                                             ("truncated", SUCCESS), ("delete_attempted", FAILURE),
                                                             ("bulk_delete_attempted", FAILURE))},
}
OTHER_API = ClassActivity(API_ACTIVITY, OTHER, "Other")
ACTOR_TYPE_IDS = {"user": 1, "svc": 3, "job": 3}
POLICY_FIELDS = {"access.role_granted": "role", "access.role_revoked": "role",
                  "access.permission_changed": "permission"}


def product_version() -> str:
    """auditlock's installed version, as OCSF's `metadata.product.version`."""
    try:
        return importlib.metadata.version("auditlock")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def mapping_of(event_type: str) -> ClassActivity:
    """The class, activity and outcome an event type maps to (every type maps to one)."""
    fixed = FIXED.get(event_type)
    if fixed is not None:
        return fixed
    record = RECORD_ACTIVITIES.get(event_type.rpartition(".")[2])
    if record is not None:
        return ClassActivity(ENTITY_MANAGEMENT, *record)
    return OTHER_API


def to_ocsf(event: Mapping[str, Any], *, product_version: str) -> dict[str, Any]:
    """The OCSF record of one archived event (`payload` an object or None)."""
    mapping = mapping_of(event["event_type"])
    payload = event.get("payload") or {}
    record: dict[str, Any] = {
        **_classification(mapping),
        "severity_id": INFORMATIONAL, "severity": "Informational",
        "status_id": mapping.status_id, "status": "Success" if mapping.status_id == SUCCESS else "Failure",
        "time": epoch_ms(event["occurred_at"]),
        "metadata": _metadata(event, product_version),
        "unmapped": {"auditlock": _unmapped(event, payload)},
    }
    record["actor"] = actor(event)
    endpoint = source_endpoint(event, required=mapping.ocsf_class is API_ACTIVITY)
    if endpoint:
        record["src_endpoint"] = endpoint
    record.update(_class_attributes(mapping, event, payload))
    return record


def _classification(mapping: ClassActivity) -> dict[str, Any]:
    cls = mapping.ocsf_class
    return {"class_uid": cls.uid, "class_name": cls.name, "category_uid": cls.category_uid,
            "category_name": cls.category_name, "activity_id": mapping.activity_id,
            "activity_name": mapping.activity_name, "type_uid": cls.uid * 100 + mapping.activity_id,
            "type_name": f"{cls.name}: {mapping.activity_name}"}


def epoch_ms(occurred_at: str) -> int:
    """`2026-11-26T20:14:50.123456Z` → milliseconds since the epoch (OCSF's timestamp_t)."""
    stamp = dt.datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
    return int(stamp.timestamp() * 1000) if stamp.tzinfo else int(stamp.replace(tzinfo=dt.UTC).timestamp() * 1000)


def _metadata(event: Mapping[str, Any], product_version: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"version": OCSF_VERSION, "product": {**PRODUCT, "version": product_version},
                                "uid": event["event_id"], "original_time": event["occurred_at"]}
    if event.get("service"):
        metadata["log_name"] = event["service"]
    if event.get("trace_id"):
        metadata["correlation_uid"] = event["trace_id"]
    return metadata


def actor(event: Mapping[str, Any]) -> dict[str, Any]:
    """The actor: the recorded user/service/job, else (an unattributed event) the application that recorded it."""
    if event.get("actor_id"):
        return {"user": actor_user(event["actor_id"], event.get("actor_type"))}
    return {"app_name": event.get("service") or "auditlock"}


def actor_user(actor_id: str, actor_type: str | None) -> dict[str, Any]:
    """OCSF `user` for an auditlock actor id (`user:7`, `svc:billing`, ...)."""
    type_id = ACTOR_TYPE_IDS.get(actor_type or "", OTHER)
    user: dict[str, Any] = {"uid": actor_id, "type_id": type_id}
    if type_id == OTHER and actor_type:
        user["type"] = actor_type
    return user


def source_endpoint(event: Mapping[str, Any], *, required: bool) -> dict[str, Any] | None:
    """The client address; where a class requires an endpoint and there is none, the recording host/service."""
    if event.get("actor_ip"):
        return {"ip": event["actor_ip"]}
    if not required:
        return None
    return {"hostname": event["host"]} if event.get("host") else {"name": event.get("service") or "auditlock"}


UNMAPPED_FIELDS = ("event_type", "target_type", "target_id", "retention", "writer", "seq")


def _unmapped(event: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: event.get(k) for k in UNMAPPED_FIELDS}
    return {**{k: v for k, v in kept.items() if v is not None}, "payload": dict(payload)}


def _class_attributes(mapping: ClassActivity, event: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    cls = mapping.ocsf_class
    if cls is ENTITY_MANAGEMENT:
        return _entity_attributes(event, payload)
    if cls is API_ACTIVITY:
        return _api_attributes(event)
    attributes: dict[str, Any] = {"user": subject_user(event)}
    policy_field = POLICY_FIELDS.get(event["event_type"])
    if policy_field and isinstance(payload.get(policy_field), str):
        attributes["policy"] = {"name": payload[policy_field]}
    if cls is AUTHENTICATION:
        attributes["service"] = {"name": event.get("service") or "auditlock"}  # the class needs it (or dst_endpoint)
        if event["event_type"].startswith("auth.mfa_"):
            attributes["is_mfa"] = True
    return attributes


def subject_user(event: Mapping[str, Any]) -> dict[str, Any]:
    """The account an authentication or account change is about: the target when there is one, else the actor."""
    if event.get("target_id") is not None:
        return {"uid": f"{event['target_type']}:{event['target_id']}", "type": event["target_type"]}
    if event.get("actor_id"):
        return actor_user(event["actor_id"], event.get("actor_type"))
    return {"name": "unknown"}


def _entity_attributes(event: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    before, after = split_changes(payload.get("changes"))
    entity = _entity(event)
    return {"entity": {**entity, "data": before}, "entity_result": {**entity, "data": after}}


def _entity(event: Mapping[str, Any]) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": event.get("target_type") or "unknown"}
    if event.get("target_id") is not None:
        entity["uid"] = str(event["target_id"])
    else:
        entity["name"] = entity["type"]
    return entity


def split_changes(changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """`{field: [before, after]}` → ({field: before}, {field: after}); a missing side is None, and changes that
    are not all lists give empty sides (the payload itself stays in `unmapped`)."""
    if not isinstance(changes, dict) or not all(isinstance(v, list) for v in changes.values()):
        return {}, {}
    return ({k: v[0] if v else None for k, v in changes.items()},
            {k: v[1] if len(v) > 1 else None for k, v in changes.items()})


def _api_attributes(event: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"api": {"operation": event["event_type"]}}
    if event.get("service"):
        attributes["api"]["service"] = {"name": event["service"]}
    if event.get("target_type"):
        attributes["resources"] = [_entity(event)]
    return attributes
