"""Capture's metrics (Prometheus text format) and its HTTP endpoint: /metrics, /healthz, /readyz.

The same shape as the agent's endpoint (`agent.metrics`), kept apart so that capture never imports the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class CaptureMetrics:
    """Every metric capture exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("auditlock_capture_events", "Row-change events made durable in the spool", registry=r)
        self.transactions = Counter("auditlock_capture_transactions", "Transactions captured", registry=r)
        self.errors = Counter("auditlock_capture_errors", "Failed capture passes by kind", ["kind"], registry=r)
        self.lag_bytes = Gauge("auditlock_capture_lag_bytes", "WAL bytes the slot holds that capture has not "
                               "confirmed (pg_current_wal_lsn - confirmed_flush_lsn)", registry=r)
        self.lag_seconds = Gauge("auditlock_capture_lag_seconds", "Seconds since capture last found the slot "
                                 "caught up (0 while it is)", registry=r)
        self.last_commit = Gauge("auditlock_capture_last_commit_timestamp_seconds", "Commit time of the last "
                                 "captured transaction", registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
