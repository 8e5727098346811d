"""The view's own audit trail: every search, export, event view and login is an audit event (PCI DSS 10.2.1.3).

Events (target type `AuditLog`): `audit_log.searched` (payload: the filters, the resolved range, the page, the
number of matching events), `audit_log.exported` (also the format), `audit_log.viewed` (target id: the event
id, payload `found`), and `auth.login_succeeded` / `auth.login_failed` / `auth.logout` for form logins (and
`auth.login_failed` for a wrong bearer token), and `auth.login_failed_summary` for refused logins counted rather than
recorded one by one during a flood (`ui.refusals`).

They are written through auditlock's own core (`AuditCore`) into the configured spool, and the agent ships them
with everything else. Their payload fields are allowed with `event_types.register_standard_fields` (the public
way for event types auditlock itself does not define), and the core writes under a config derived from the
user's (`access_config`):

- `[events] include` gains `audit_log.*` — these events are recorded whatever the application's allowlist says;
- the only target is `AuditLog` (a user's own `[targets.AuditLog]` keeps its fields and retention class, without
  hmac fields: the view writes no record values and has no need of the hmac key);
- the spool writes with `durability = "sync"` and `on_error = "raise"`: a recorded access is on disk (fsync'd)
  before the data is shown, and an access that cannot be recorded raises `AccessNotRecorded` — the view then
  refuses the request (HTTP 503). There is no unaudited access.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from auditlock.config.model import Config, HmacConfig, TargetConfig
from auditlock.errors import AuditlockError, ConfigError, EventError, SpoolError
from auditlock.handler import event_types
from auditlock.handler.core import AuditCore
from auditlock.spool.writer import SpoolWriter

if TYPE_CHECKING:  # the Django admin's history page records through this module without the view's web stack
    from auditlock.ui.auth import Viewer

TARGET_TYPE = "AuditLog"
SEARCHED = "audit_log.searched"
EXPORTED = "audit_log.exported"
VIEWED = "audit_log.viewed"
LOGIN_SUCCEEDED = "auth.login_succeeded"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"
LOGIN_FAILED_SUMMARY = "auth.login_failed_summary"  # refused logins past the budget (`ui.refusals`)
PAYLOAD_FIELDS = {
    SEARCHED: frozenset({"filters", "range", "page", "results"}),
    EXPORTED: frozenset({"filters", "range", "results", "format"}),
    VIEWED: frozenset({"found"}),
    LOGIN_FAILED_SUMMARY: frozenset({"count", "first_at", "last_at", "addresses", "addresses_capped", "reasons",
                                     "method", "window_s"}),
}


class AccessNotRecorded(AuditlockError):
    """An access could not be made durable in the audit trail; the view refuses it."""


def access_config(config: Config) -> Config:
    """The config the view's core writes with (see the module docstring)."""
    own = config.targets.get(TARGET_TYPE, TargetConfig())
    target = replace(own, hmac=frozenset(), sensitive_reads=False)
    include = config.events.include if "audit_log.*" in config.events.include else (*config.events.include,
                                                                                       "audit_log.*")
    return replace(config, spool=replace(config.spool, durability="sync", on_error="raise"),
                   events=replace(config.events, include=include),
                   targets=MappingProxyType({TARGET_TYPE: target}), hmac=HmacConfig())


class AccessLog:
    """Records what viewers do, or raises `AccessNotRecorded`."""

    def __init__(self, config: Config, *, writer: SpoolWriter | None = None) -> None:
        """`writer`: one to share (it must write with durability "sync"); by default the core makes its own."""
        if writer is not None and writer.config.durability != "sync":
            raise ConfigError(f'the view\'s access records must be fsync\'d before data is shown, but the writer '
                              f'given writes with durability = "{writer.config.durability}"; give it a writer with '
                              f'durability = "sync", or none (the view then makes its own)')
        for event_type, fields in PAYLOAD_FIELDS.items():
            event_types.register_standard_fields(event_type, fields)
        self.core = AuditCore(access_config(config), writer=writer)

    def record(self, event_type: str, actor_id: str, ip: str | None, *, target_id: str | None = None,
               **payload: Any) -> dict[str, Any]:
        """Write one event durably; returns the record."""
        fields = {"actor_id": actor_id, "actor_ip": ip, "target_type": TARGET_TYPE, "target_id": target_id,
                  **payload}
        try:
            record = self.core.emit(event_type, fields)
        except (SpoolError, EventError) as exc:
            raise AccessNotRecorded(f"the access could not be recorded in the audit trail, so it was refused: "
                                    f"{exc}") from exc
        if record is None:  # only with on_error = "drop", which access_config rules out
            raise AccessNotRecorded("the access could not be recorded in the audit trail, so it was refused")
        return record

    def viewer(self, event_type: str, viewer: Viewer, ip: str | None, **payload: Any) -> dict[str, Any]:
        """Record an access by an authenticated viewer."""
        return self.record(event_type, viewer.actor_id, ip, **payload)

    def close(self) -> None:
        """Seal the view's segment (recording the writer's clean end)."""
        self.core.writer.close()
