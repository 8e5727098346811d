"""The Django app: `INSTALLED_APPS += ["auditlock.integrations.django"]`; everything starts in `ready()`."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import request_finished


class AuditlockConfig(AppConfig):
    """auditlock's Django app (label `auditlock`; it has no models and no migrations)."""

    name = "auditlock.integrations.django"
    label = "auditlock"
    verbose_name = "auditlock"
    default = True

    def ready(self) -> None:
        """Read the setting, build the runtime, connect the signals, wrap bulk calls, rollbacks and commands."""
        from auditlock.integrations.django import (  # noqa: PLC0415 - only once the app registry is ready
            auth_events,
            bulk,
            capture,
            checks,  # noqa: F401 - registers the system check
            commands,
            transactions,
        )
        from auditlock.integrations.django.conf import read_settings  # noqa: PLC0415
        from auditlock.integrations.django.runtime import Runtime, install_runtime  # noqa: PLC0415

        runtime = Runtime(read_settings())
        install_runtime(runtime)
        transactions.install(transactions.write_through(runtime.logger))
        request_finished.connect(transactions.flush_all_stale, dispatch_uid="auditlock.stale", weak=False)
        capture.connect()
        bulk.install()
        if runtime.settings.auth_events:
            auth_events.connect()
        if runtime.settings.commands:
            commands.install()
