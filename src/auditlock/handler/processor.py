"""The structlog adapter: `structlog.configure(processors=[..., auditlock.AuditProcessor(config), ...])`."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from structlog import DropEvent

from auditlock.config.load import load_config
from auditlock.config.model import Config
from auditlock.handler.core import AuditCore

# structlog metadata an app log keeps when `keep_in_app_log = true`; all other call values are replaced.
_LOG_METADATA = ("level", "timestamp", "logger", "logger_name")
_APP_VIEW_FIELDS = ("event_id", "actor_id", "actor_type", "actor_ip", "target_type", "target_id", "payload")


class AuditProcessor:
    """Writes audit events (names matching `[events] include`) to the spool; other events pass untouched, except
    one carrying audit arguments (`target_type=`, `before=`, … — a misspelt audit event), which raises `EventError`.

    With `keep_in_app_log = false` (the default) an audit event then leaves the log stream (`DropEvent`);
    otherwise it continues as the audit record's view: allowlisted, hmac'd values only.
    """

    def __init__(self, config: Config | str | None = None, *, core: AuditCore | None = None) -> None:
        self.core = core or AuditCore(_as_config(config))
        self._keep = self.core.config.events.keep_in_app_log
        self._known_name = self.core.known_audit_name  # the cache of `is_audit_event`, read without its call

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        """Process one structlog event dict."""
        name = event_dict.get("event")
        # A str name seen before is looked up in the core's cache without a call; any other asks the core.
        if (type(name) is not str or self._known_name(name) is not True) and not self.core.is_audit_event(name):
            self.core.refuse_unmatched(name, event_dict)
            return event_dict
        record = self.core.emit(name, event_dict)
        if not self._keep:
            raise DropEvent
        return _app_view(event_dict, record)

    def flush(self, timeout: float | None = None) -> bool:
        """Make every written event durable now."""
        return self.core.writer.flush(timeout)

    def close(self) -> None:
        """Seal the open segment (also done at interpreter exit)."""
        self.core.writer.close()


def _app_view(event_dict: MutableMapping[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    view = {"event": event_dict["event"]}
    view.update((key, event_dict[key]) for key in _LOG_METADATA if key in event_dict)
    if record is not None:
        view.update((key, record[key]) for key in _APP_VIEW_FIELDS)
    return view


def _as_config(config: Config | str | None) -> Config:
    return config if isinstance(config, Config) else load_config(config)
