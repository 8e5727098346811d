"""The stdlib adapter: a `logging.Handler` for `dictConfig` (`"()": "auditlock.AuditHandler"`).

The record's message is the event type; fields come from `extra=` (actor_id, target_type, target_id, before,
after, payload, and allowlisted payload fields). Unlike other handlers it does not swallow failures: a
`SpoolError` or `EventError` propagates to the logging call (fail-closed), unless `on_error = "drop"`.
"""

from __future__ import annotations

import logging
from typing import Any

from auditlock.config.load import load_config
from auditlock.config.model import Config
from auditlock.handler.core import AuditCore

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class AuditHandler(logging.Handler):
    """Writes log records whose message matches `[events] include` to the audit spool."""

    def __init__(self, config: Config | str | None = None, level: int | str = logging.NOTSET) -> None:
        # The core first: `logging.Handler.__init__` registers the handler for `logging.shutdown`, which would
        # flush a handler left without a core by a bad config at exit.
        self.core = AuditCore(config if isinstance(config, Config) else load_config(config))
        super().__init__(level)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record if it is an audit event; raise when it cannot be made durable."""
        name = record.getMessage() if record.args else record.msg
        if not self.core.is_audit_event(name):
            return
        self.core.emit(name, _fields_of(record))

    def flush(self) -> None:
        """Make every written event durable now."""
        self.core.writer.flush()

    def close(self) -> None:
        """Seal the open segment; called by `logging.shutdown`."""
        self.core.writer.close()
        super().close()


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS}
