"""OpenTelemetry correlation, only when `opentelemetry-api` is installed (an optional import)."""

from __future__ import annotations

from collections.abc import Callable

TraceIds = tuple[str | None, str | None]


def _no_trace() -> TraceIds:
    return None, None


def _load() -> Callable[[], TraceIds]:
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional dependency
    except ImportError:
        return _no_trace

    def otel_trace_ids() -> TraceIds:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None, None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    return otel_trace_ids


current_trace_ids: Callable[[], TraceIds] = _load()
