"""emit_event: the one way integrations emit, through every kind of audit logger an application may hand them."""

from __future__ import annotations

import logging
from pathlib import Path

import auditlock
from auditlock.config import Config
from auditlock.integrations.emit import emit_event
from tests.support.spool_files import spool_events


class TestLoggerAdapter:
    def test_fields_survive_the_adapters_extra(self, audit_log: logging.Logger, config: Config) -> None:
        """Through a LoggerAdapter the event keeps its target and payload (the adapter's extra does not replace it)."""
        adapter = logging.LoggerAdapter(audit_log, {"service_region": "eu-1"})
        with auditlock.actor("user:7"):
            emit_event(adapter, "order.updated", target_type="Order", target_id=9, status="paid")
        [event] = [e for e in spool_events(Path(config.spool.dir)) if e["event_type"] == "order.updated"]
        assert (event["target_type"], event["target_id"], event["payload"]["status"]) == ("Order", "9", "paid")

    def test_event_fields_win_over_the_adapters(self, audit_log: logging.Logger, config: Config) -> None:
        """A field named both by the adapter and by the event is the event's."""
        adapter = logging.LoggerAdapter(audit_log, {"target_id": 1})
        with auditlock.actor("user:7"):
            emit_event(adapter, "order.deleted", target_type="Order", target_id=2)
        [event] = [e for e in spool_events(Path(config.spool.dir)) if e["event_type"] == "order.deleted"]
        assert (event["target_type"], event["target_id"]) == ("Order", "2")
