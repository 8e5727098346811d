"""The standard audit event types of the four categories, and the payload fields each always allows.

Record mutations are `<target>.created` / `.updated` / `.deleted` (see `record_event_type`); the rest are
fixed names. A standard type's fields are allowed in the payload in addition to the target's allowlist.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Protocol

from auditlock.spool import format as spool_format

# Authentication
LOGIN_SUCCEEDED = "auth.login_succeeded"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"
PASSWORD_CHANGED = "auth.password_changed"  # noqa: S105 - an event name, not a secret
MFA_ENROLLED = "auth.mfa_enrolled"
MFA_CHALLENGE_SUCCEEDED = "auth.mfa_challenge_succeeded"
MFA_CHALLENGE_FAILED = "auth.mfa_challenge_failed"
SESSION_REVOKED = "auth.session_revoked"
API_KEY_USED = "auth.api_key_used"
# Permission changes
ROLE_GRANTED = "access.role_granted"
ROLE_REVOKED = "access.role_revoked"
PERMISSION_CHANGED = "access.permission_changed"
# Sensitive reads
DATA_ACCESSED = "data.accessed"
# Data-subject requests (docs/privacy.md): the request's lifecycle, recorded by the application or an operator,
# and what `auditlock erase` / `auditlock subject export` did.
PRIVACY_REQUEST_RECEIVED = "privacy.request_received"
PRIVACY_REQUEST_FULFILLED = "privacy.request_fulfilled"
PRIVACY_REQUEST_REFUSED = "privacy.request_refused"
SUBJECT_ERASED = "privacy.subject_erased"
SUBJECT_EXPORTED = "privacy.subject_exported"
PRIVACY_REQUEST_TYPES = ("access", "erasure", "rectification")
# Emitted by auditlock itself: when `on_error = "drop"` dropped events, and as a writer's last event on close.
EVENTS_DROPPED = "auditlock.events_dropped"
WRITER_CLOSED = spool_format.WRITER_CLOSED
# Emitted by `auditlock capture`: database row changes its replication slot no longer holds (`auditlock verify`
# reports every one as a "capture gap").
CAPTURE_GAP = "auditlock.capture_gap"

RECORD_ACTIONS = ("created", "updated", "deleted")

STANDARD_FIELDS: dict[str, frozenset[str]] = {
    LOGIN_SUCCEEDED: frozenset({"method", "mfa"}),
    LOGIN_FAILED: frozenset({"method", "reason"}),
    LOGOUT: frozenset({"reason"}),
    PASSWORD_CHANGED: frozenset({"method"}),
    MFA_ENROLLED: frozenset({"mfa_method"}),
    MFA_CHALLENGE_SUCCEEDED: frozenset({"mfa_method"}),
    MFA_CHALLENGE_FAILED: frozenset({"mfa_method", "reason"}),
    SESSION_REVOKED: frozenset({"session_id", "reason"}),
    API_KEY_USED: frozenset({"key_id", "scope"}),
    ROLE_GRANTED: frozenset({"role", "scope"}),
    ROLE_REVOKED: frozenset({"role", "scope"}),
    PERMISSION_CHANGED: frozenset({"permission", "scope"}),
    DATA_ACCESSED: frozenset({"justification", "fields", "purpose"}),
    PRIVACY_REQUEST_RECEIVED: frozenset({"request_type", "request_id", "subject", "channel"}),
    PRIVACY_REQUEST_FULFILLED: frozenset({"request_type", "request_id", "subject"}),
    PRIVACY_REQUEST_REFUSED: frozenset({"request_type", "request_id", "subject", "reason"}),
    SUBJECT_ERASED: frozenset({"subject", "reason", "request_id", "keys"}),
    SUBJECT_EXPORTED: frozenset({"subject", "reason", "request_id"}),
    EVENTS_DROPPED: frozenset({"count", "first_dropped_at", "last_dropped_at", "reason"}),
    WRITER_CLOSED: frozenset({"events"}),
    CAPTURE_GAP: frozenset({"slot", "from_lsn", "to_lsn", "reason"}),
}

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")


class PlanCache(Protocol):
    """Anything that caches per-event-type decisions derived from STANDARD_FIELDS (the record builder)."""

    def forget_plans(self) -> None:
        """Drop every cached decision; the next event recomputes it."""


_plan_caches: weakref.WeakSet[PlanCache] = weakref.WeakSet()


def watch_standard_fields(cache: PlanCache) -> None:
    """Have `cache.forget_plans()` called whenever `register_standard_fields` changes the table."""
    _plan_caches.add(cache)


def register_standard_fields(event_type: str, fields: Iterable[str]) -> None:
    """Allow `fields` in the payload of `event_type` in addition to the target's allowlist.

    For integrations whose events carry fields of their own that hold no record values (an outcome, a row count,
    a search's filters). Adds to what is allowed; never removes.
    """
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise ValueError(f"event type {event_type!r}: use lowercase dotted names like 'order.bulk_updated'")
    STANDARD_FIELDS[event_type] = STANDARD_FIELDS.get(event_type, frozenset()) | frozenset(fields)
    for cache in list(_plan_caches):
        cache.forget_plans()
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def record_event_type(target_type: str, action: str) -> str:
    """The mutation event type of a record type: `("OrderLine", "updated")` -> `"order_line.updated"`."""
    if action not in RECORD_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(RECORD_ACTIONS)}, not {action!r}")
    return f"{_CAMEL_BOUNDARY.sub('_', target_type).lower()}.{action}"
