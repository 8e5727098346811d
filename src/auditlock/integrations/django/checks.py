"""System checks: `manage.py check` fails on what would make the trail incomplete.

`auditlock.E001` for each problem the runtime found at `ready()`: a listed model that is not installed, a
tracked model without a `[targets.<Type>]` section, event types that `[events] include` does not match, auth
events on without their targets or patterns (see `runtime`). Saving a fenced model also raises `EventError`.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, register

from auditlock.integrations.django.runtime import runtime


@register(Tags.models)
def auditlock_check(app_configs: Any = None, **_: Any) -> list[Error]:
    """Every problem of the auditlock setup, as an error naming the fix."""
    return [Error(problem, hint="see docs/integrations-django.md", id="auditlock.E001")
            for problem in runtime().problems]
