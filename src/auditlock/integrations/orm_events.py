"""The record-change events every ORM integration writes — one set of names for SQLAlchemy, Django and capture.

Per object: `<prefix>.created` / `.updated` / `.deleted`; per bulk statement: `<prefix>.bulk_created` /
`.bulk_updated` / `.bulk_deleted`; each in an attempt form (`create_attempted`, …) when its transaction rolled
back or its statement failed, with `payload.outcome` ("rolled_back" or "failed") and `payload.error` (the
exception's class name). The prefix is the target type in snake case. Framework-free: no ORM is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auditlock.handler import event_types
from auditlock.handler.event_types import record_event_type

SUCCESS_ACTIONS = ("created", "updated", "deleted", "bulk_created", "bulk_updated", "bulk_deleted")
ATTEMPT_OF = {
    "created": "create_attempted", "updated": "update_attempted", "deleted": "delete_attempted",
    "bulk_created": "bulk_create_attempted", "bulk_updated": "bulk_update_attempted",
    "bulk_deleted": "bulk_delete_attempted",
}
# Payload fields the integrations write themselves (no record values): registered as standard fields.
ATTEMPT_FIELDS = frozenset({"outcome", "error"})
BULK_FIELDS = frozenset({"criteria", "columns", "rowcount", "ids", "ids_truncated", "ids_unknown"})
BULK_IDS_MAX = 1000  # ids kept per event (fewer if the event would exceed [events] max_event_bytes)


def default_event_prefix(target_type: str) -> str:
    """The event type prefix of a target type: its name in snake case (`OrderLine` -> `order_line`)."""
    return record_event_type(target_type, "created").rpartition(".")[0]


def emitted_event_types(prefix: str) -> list[str]:
    """Every event type an ORM integration can write for `prefix`."""
    return [t for action in SUCCESS_ACTIONS for t in (f"{prefix}.{action}", f"{prefix}.{ATTEMPT_OF[action]}")]


def allow_integration_fields(prefix: str) -> None:
    """Register the integrations' own payload fields (outcome, error, criteria, columns, rowcount, ids) as standard
    fields of `prefix`'s event types, so the core's allowlist lets them through."""
    for action in SUCCESS_ACTIONS:
        bulk = BULK_FIELDS if action.startswith("bulk_") else frozenset()
        for event_type, names in ((f"{prefix}.{action}", bulk), (f"{prefix}.{ATTEMPT_OF[action]}",
                                                                 bulk | ATTEMPT_FIELDS)):
            if names:
                event_types.register_standard_fields(event_type, names)


def fit_ids(payload: dict[str, Any], ids: list[str], accepted: Callable[[], bool]) -> None:
    """Put at most `BULK_IDS_MAX` ids into `payload`, fewer while `accepted()` says the event is too large;
    `ids_truncated` says whether any were left out."""
    kept = ids[:BULK_IDS_MAX]
    while True:
        payload["ids"], payload["ids_truncated"] = kept, len(kept) < len(ids)
        if not kept or accepted():
            return
        kept = kept[: len(kept) // 2]
