"""Django: model changes, auth and permission events, request actors and management commands (`auditlock[django]`).

    INSTALLED_APPS += ["auditlock.integrations.django"]
    MIDDLEWARE += ["auditlock.integrations.django.AuditMiddleware"]   # after AuthenticationMiddleware
    AUDITLOCK = {"CONFIG": "auditlock.toml", "MODELS": {"shop.Order": "Order", "auth.User": "User"}}

The app connects Django's own signals when it is ready (`apps.AuditlockConfig.ready`): model saves and deletes
(`capture`), many-to-many changes, logins, logouts, failed logins, password changes and group/permission changes
(`auth_events`); it wraps `QuerySet.update` / `bulk_create` / `bulk_update` (`bulk`, Django sends no signal for
them), the connections' rollbacks (`transactions`: events of a rolled-back transaction become `*_attempted`) and
`BaseCommand.execute` (`commands`: a management command runs as `job:<command>`). Events are written when the
transaction commits (`transaction.on_commit`). `manage.py check` fails on a tracked model without a
`[targets.<Type>]` section or an event type `[events] include` does not match (`checks`). The contract — what is
and is not captured — is docs/integrations-django.md. Django is imported only by this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditlock.integrations.django.middleware import AuditMiddleware

__all__ = ["AuditMiddleware"]


def __getattr__(name: str) -> Any:
    # Django imports this package (an INSTALLED_APPS entry) before its settings and apps are ready: the middleware
    # module is imported only when `MIDDLEWARE` names it.
    if name == "AuditMiddleware":
        from auditlock.integrations.django.middleware import AuditMiddleware  # noqa: PLC0415

        return AuditMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
