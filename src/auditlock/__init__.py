"""auditlock: tamper-evident audit trails for Python services.

The application side imports only this package's handler half (structlog + orjson); the agent, query and UI
live in optional extras and are never imported from here.
"""

from auditlock.config import Config, load_config
from auditlock.errors import AuditlockError, ConfigError, EventError, SpoolError, UploadError
from auditlock.handler import event_types
from auditlock.handler.context import Actor, actor, current_actor, job
from auditlock.handler.event_types import record_event_type
from auditlock.handler.logging_handler import AuditHandler

TYPE_CHECKING = False
if TYPE_CHECKING:
    from auditlock.handler.processor import AuditProcessor

__all__ = [
    "Actor",
    "AuditHandler",
    "AuditProcessor",
    "AuditlockError",
    "Config",
    "ConfigError",
    "EventError",
    "SpoolError",
    "UploadError",
    "actor",
    "current_actor",
    "event_types",
    "job",
    "load_config",
    "record_event_type",
]


def __getattr__(name: str) -> object:
    # structlog is imported only by users of the structlog adapter (PEP 562), not by stdlib-logging users.
    if name == "AuditProcessor":
        from auditlock.handler.processor import AuditProcessor  # noqa: PLC0415

        return AuditProcessor
    raise AttributeError(f"module 'auditlock' has no attribute {name!r}")
