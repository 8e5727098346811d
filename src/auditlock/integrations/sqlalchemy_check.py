"""Would this audit event be accepted? — asked before the database is written, answered by the code that decides.

The SQLAlchemy integration writes a transaction's events after the database COMMIT (writing earlier would record
changes whose commit can still fail). Everything that refuses an event *by design* is therefore asked first, at
the flush and before a bulk statement runs, so that a change that commits always has its event:

- the record the writing core would build (`AuditCore.build`, the same call the write makes): an attributable
  actor (an anonymous request's binding has none), an actor type and address the builder accepts, the target
  and payload rules;
- the size rule of the spool's chain (`check_stampable`: `[events] max_event_bytes`, chain fields at their widest);
- the route: the event type matches `[events] include` of the core that writes it, and the stdlib audit logger
  and its `AuditHandler` pass INFO records (a level above INFO would drop the event without an error).

What remains possible after COMMIT is the write failing for reasons no check can foresee — spool I/O errors, a
full spool, a process killed between COMMIT and the write, logging filters or structlog processors before
auditlock's that drop the event: see docs/integrations-sqlalchemy.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from auditlock.config.model import Config
from auditlock.errors import EventError
from auditlock.handler.core import AuditCore
from auditlock.handler.logging_handler import AuditHandler
from auditlock.integrations.emit import AuditLogger
from auditlock.spool.chain import check_stampable


def audit_core_of(logger: AuditLogger) -> tuple[AuditCore, AuditHandler | None] | None:
    """The core that writes what `logger` logs, and its `AuditHandler` for a stdlib logger; None if none is found.

    A stdlib logger (or adapter): the first `AuditHandler` on it or its propagating ancestors. A structlog logger:
    the `AuditProcessor` in its chain (or in structlog's configured chain for a lazy proxy).
    """
    target: Any = logger.logger if isinstance(logger, logging.LoggerAdapter) else logger
    if isinstance(target, logging.Logger):
        current: logging.Logger | None = target
        while current is not None:
            for handler in current.handlers:
                if isinstance(handler, AuditHandler):
                    return handler.core, handler
            current = current.parent if current.propagate else None
        return None
    from auditlock.handler.processor import AuditProcessor  # noqa: PLC0415 - structlog users only

    processors = getattr(target, "_processors", None)  # a bound logger's chain; a lazy proxy's is None
    if processors is None:
        import structlog  # noqa: PLC0415

        processors = structlog.get_config()["processors"]
    for processor in processors:
        if isinstance(processor, AuditProcessor):
            return processor.core, None
    return None


class EventCheck:
    """Raises, without writing anything, the `EventError` the write of an event would raise later."""

    def __init__(self, logger: AuditLogger, config: Config | None = None) -> None:
        found = audit_core_of(logger)
        if found is None and config is None:
            raise TypeError(f"found no AuditHandler or AuditProcessor behind logger {logger!r}; pass config=")
        # Without a core behind the logger (a custom adapter), a core of `config` answers; it is never written to.
        self._core, self._handler = found if found is not None else (AuditCore(config), None)  # type: ignore[arg-type]
        self._logger = logger

    @property
    def config(self) -> Config:
        """The config of the core that writes the events."""
        return self._core.config

    def check(self, event_type: str, fields: Mapping[str, Any]) -> None:
        """Raise `EventError` if `event_type` with `fields`, emitted now in this context, would be refused."""
        self._check_route(event_type)
        record = self._core.build(event_type, fields)
        check_stampable(record, self._core.config.events.max_event_bytes)

    def _check_route(self, event_type: str) -> None:
        if not self._core.is_audit_event(event_type):
            raise EventError(
                f"event type {event_type!r} does not match [events] include of the config the audit logger writes "
                f"with, so it would not be written: add '{event_type.rpartition('.')[0]}.*' to that config"
            )
        logger = self._logger
        if isinstance(logger, logging.Logger | logging.LoggerAdapter) and not logger.isEnabledFor(logging.INFO):
            level = logging.getLevelName(logger.getEffectiveLevel())
            raise EventError(
                f"audit logger {logger.name!r} does not pass INFO records (level {level}, or disabled), so the "
                "event would be dropped: set its level to INFO or lower"
            )
        if self._handler is not None and self._handler.level > logging.INFO:
            raise EventError(
                f"the AuditHandler of the audit logger has level {logging.getLevelName(self._handler.level)}, above "
                "INFO, so the event would be dropped: give it level INFO or NOTSET"
            )

