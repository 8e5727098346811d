"""One way for integrations to emit an audit event through whichever adapter the application configured.

Integrations are given the application's audit logger — a structlog logger whose chain holds
`auditlock.AuditProcessor`, or a stdlib `logging.Logger` with `auditlock.AuditHandler` — and call `emit_event`.
Failures are not caught here: a `SpoolError` reaches the caller (fail closed), as for any audit logging call.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol


class StructlogLike(Protocol):
    """The part of a structlog bound logger integrations use."""

    def info(self, event: str, **fields: Any) -> Any:
        """Log one event with keyword fields."""


AuditLogger = logging.Logger | logging.LoggerAdapter[Any] | StructlogLike


def emit_event(logger: AuditLogger, event_type: str, **fields: Any) -> None:
    """Emit `event_type` with `fields` (target_type, target_id, before, after, payload fields, …) on `logger`."""
    if isinstance(logger, logging.LoggerAdapter):
        _emit_through_adapter(logger, event_type, fields)
    elif isinstance(logger, logging.Logger):
        logger.info(event_type, extra=fields)
    else:
        logger.info(event_type, **fields)


def _emit_through_adapter(adapter: logging.LoggerAdapter[Any], event_type: str, fields: dict[str, Any]) -> None:
    """Log through the adapter's own `process()`, then put the event's fields back over the adapter's extra.

    Before Python 3.13 `LoggerAdapter.process` replaces `extra` with the adapter's own, which would drop every field
    of the event (target, changes, …); the event's fields win over the adapter's context on a name clash.
    """
    msg, kwargs = adapter.process(event_type, {"extra": dict(fields)})
    kwargs["extra"] = {**(kwargs.get("extra") or {}), **fields}
    adapter.logger.info(msg, **kwargs)
