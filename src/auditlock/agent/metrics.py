"""The agent's metrics (Prometheus text format) and its small HTTP endpoint: /metrics, /healthz, /readyz."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from auditlock.spool.drops import REASONS, read_drop_totals

WITNESS_LAG_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class AgentMetrics:
    """Every metric the agent exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_shipped = Counter("auditlock_events_shipped", "Events delivered to S3", registry=r)
        self.bytes_shipped = Counter("auditlock_bytes_shipped", "Compressed bytes delivered to S3", registry=r)
        self.objects_shipped = Counter("auditlock_objects_shipped", "Objects delivered to S3", registry=r)
        self.objects_already_present = Counter(
            "auditlock_objects_already_present", "Objects found already delivered (retry after a crash)", registry=r)
        self.digests_shipped = Counter("auditlock_digests_shipped", "Digest objects delivered to S3", registry=r)
        self.errors = Counter("auditlock_errors", "Failed operations by kind", ["kind"], registry=r)
        self.conflicts = Counter("auditlock_object_conflicts", "Keys found holding different content", registry=r)
        self.quarantined = Counter("auditlock_segments_quarantined", "Damaged segments moved aside", registry=r)
        self.ledger_damaged = Counter("auditlock_ledger_damaged", "Damaged agent ledgers set aside and recovered "
                                      "from the spool and the archive", registry=r)
        self.recovered = Counter("auditlock_segments_recovered", "Dead writers' segments sealed", registry=r)
        self.segments_set_aside = Counter(
            "auditlock_segments_set_aside", "Segments moved to quarantine/ because S3 permanently rejected their "
            "batch", registry=r)
        self.objects_retention_floored = Counter(
            "auditlock_objects_retention_floored", "Events objects shipped so late that their retain-until was "
            "raised to the floor (one day from the PUT)", registry=r)
        self.segments_rewritten = Counter(
            "auditlock_segments_rewritten", "Segments set aside because they disagreed with what the agent's witness "
            "saw, by finding (rewritten before shipping, witnessed segment missing)", ["finding"], registry=r)
        self.witness_lag = Histogram(
            "auditlock_witness_lag_seconds", "From an event's occurred_at to the witness's durable copy of its line "
            "(the first line of each read)", buckets=WITNESS_LAG_BUCKETS, registry=r)
        self.backlog_bytes = Gauge("auditlock_spool_backlog_bytes", "Bytes of segments not yet shipped", registry=r)
        self.backlog_segments = Gauge("auditlock_spool_backlog_segments", "Segments not yet shipped", registry=r)
        self.oldest_event_age = Gauge(
            "auditlock_oldest_unshipped_event_age_seconds", "Age of the oldest event still in the spool", registry=r)
        self.spool_usage = Gauge("auditlock_spool_usage_ratio", "Spool bytes / [spool] max_bytes", registry=r)
        self.last_success = Gauge("auditlock_last_upload_success_timestamp_seconds", "Unix time of the last "
                                  "successful upload", registry=r)

    def watch_app_drops(self, spool: Path) -> None:
        """Export the applications' drop counts of `spool` (read from its drop files at every scrape)."""
        self.registry.register(AppDropsCollector(spool))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class AppDropsCollector(Collector):
    """`auditlock_app_events_dropped_total{reason}`: events applications dropped (`on_error = "drop"`), summed over
    the spool's drop files (see `spool.drops`); every reason is exported, 0 included, so alerts need no absent()."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool

    def collect(self) -> Iterable[CounterMetricFamily]:
        """One sample per reason."""
        totals = read_drop_totals(self.spool)
        family = CounterMetricFamily("auditlock_app_events_dropped", "Audit events applications dropped because "
                                     "the spool could not take them ([spool] on_error = drop)", labels=["reason"])
        for reason in REASONS:
            family.add_metric([reason], totals.get(reason, 0))
        yield family
