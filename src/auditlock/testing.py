"""Helpers for your own test suite: capture audit events in memory instead of writing the spool.

    from auditlock.testing import capture_audit_events

    def test_order_update_is_audited():
        with capture_audit_events() as events:
            update_order(...)
        assert events[0]["event_type"] == "order.updated"
        assert events[0]["payload"]["changes"] == {"status": ["new", "paid"]}

Captured events are exactly what the spool would hold (JSON round-tripped, allowlisted, hmac'd), stamped by
an in-memory chain with writer id "0" * 32. Captures are process-wide (events from every thread are seen).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from auditlock.handler import core
from auditlock.spool.chain import EventChain

_CAPTURE_WRITER = "0" * 32


@contextmanager
def capture_audit_events(*, max_event_bytes: int = 65536) -> Iterator[list[dict[str, Any]]]:
    """Collect every audit event emitted inside the block, in order, instead of writing it to a spool."""
    events: list[dict[str, Any]] = []
    chain = EventChain(_CAPTURE_WRITER, max_event_bytes=max_event_bytes)
    lock = threading.Lock()

    def hook(record: dict[str, Any]) -> None:
        with lock:
            line, _month = chain.stamp(record)
            chain.advance(line)
            events.append(orjson.loads(line))

    core.capture_hooks.append(hook)
    try:
        yield events
    finally:
        core.capture_hooks.remove(hook)
