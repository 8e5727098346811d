"""OpenTelemetry correlation: an audit event logged inside a span carries that span's trace and span ids."""

from __future__ import annotations

import contextvars
import logging
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from auditlock.config import Config
from tests.support.spool_files import spool_events


@pytest.fixture(scope="module")
def tracer() -> trace.Tracer:
    """A tracer of the OpenTelemetry SDK (its own provider: the global one is left alone)."""
    return TracerProvider().get_tracer("auditlock-tests")


def log_order(audit_log: logging.Logger, order_id: str) -> None:
    """Log one audit event."""
    audit_log.info("order.updated", extra={"actor_id": "user#1", "target_type": "Order", "target_id": order_id})


def ids_of(span: trace.Span) -> tuple[str, str]:
    """A span's trace and span ids, as the trail writes them (lower-case hex, 32 and 16 digits)."""
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class TestTraceCorrelation:
    def test_event_in_a_span_carries_its_ids(self, audit_log: logging.Logger, config: Config,
                                             tracer: trace.Tracer) -> None:
        """An event logged inside a span has that span's trace_id and span_id."""
        with tracer.start_as_current_span("update-order") as span:
            log_order(audit_log, "1")
        [event] = spool_events(config.spool.dir)
        assert (event["trace_id"], event["span_id"]) == ids_of(span)

    def test_nested_span_is_the_current_one(self, audit_log: logging.Logger, config: Config,
                                            tracer: trace.Tracer) -> None:
        """Inside a child span the event has the child's span id and the shared trace id."""
        with tracer.start_as_current_span("request") as parent, tracer.start_as_current_span("db") as child:
            log_order(audit_log, "2")
        [event] = spool_events(config.spool.dir)
        assert (event["trace_id"], event["span_id"]) == ids_of(child)
        assert event["trace_id"] == ids_of(parent)[0]

    def test_outside_a_span_the_ids_are_null(self, audit_log: logging.Logger, config: Config,
                                             tracer: trace.Tracer) -> None:
        """An event logged outside any span has null trace and span ids."""
        with tracer.start_as_current_span("earlier"):
            pass
        log_order(audit_log, "3")
        [event] = spool_events(config.spool.dir)
        assert (event["trace_id"], event["span_id"]) == (None, None)

    def test_invalid_span_context_is_ignored(self, audit_log: logging.Logger, config: Config) -> None:
        """A current span with an invalid context (all-zero ids) gives null ids, not zeros."""
        with trace.use_span(NonRecordingSpan(SpanContext(0, 0, is_remote=False))):
            log_order(audit_log, "4")
        [event] = spool_events(config.spool.dir)
        assert (event["trace_id"], event["span_id"]) == (None, None)

    def test_remote_parent_from_propagation(self, audit_log: logging.Logger, config: Config) -> None:
        """A span context received from upstream (a remote, sampled parent) is what the event names."""
        remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
        with trace.use_span(NonRecordingSpan(remote)):
            log_order(audit_log, "5")
        [event] = spool_events(config.spool.dir)
        assert (event["trace_id"], event["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")

    def test_thread_with_the_spans_context(self, audit_log: logging.Logger, config: Config,
                                           tracer: trace.Tracer) -> None:
        """A thread run in a copy of the span's context logs events carrying that span's ids."""
        with tracer.start_as_current_span("fan-out") as span:
            worker = threading.Thread(target=contextvars.copy_context().run, args=(log_order, audit_log, "6"))
            worker.start()
            worker.join(timeout=30)
        [event] = spool_events(config.spool.dir)
        assert (event["trace_id"], event["span_id"]) == ids_of(span)
