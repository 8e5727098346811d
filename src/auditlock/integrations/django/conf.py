"""The `AUDITLOCK` Django setting: read once, validated, with every problem named.

    AUDITLOCK = {
        "CONFIG": "auditlock.toml",                     # else $AUDITLOCK_CONFIG, else ./auditlock.toml
        "MODELS": {"shop.Order": "Order"},              # app_label.ModelName -> [targets.<Type>]
        "EVENT_PREFIXES": {"shop.Order": "order"},      # optional; default: the target type in snake case
        "LOGGER": "audit",                              # optional: a stdlib logger with an AuditHandler
        "TRUSTED_PROXIES": ["10.0.0.0/8"],              # middleware: who may set X-Forwarded-For / X-Request-ID
        "REQUEST_ID_HEADER": "X-Request-ID",
        "ANONYMOUS_ACTOR": None,                        # e.g. "anonymous": file anonymous requests' events
        "AUTH_EVENTS": True,                            # logins, logouts, password/group/permission changes
        "COMMANDS": True,                               # management commands as job:<command>
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from auditlock.errors import ConfigError
from auditlock.integrations.request import DEFAULT_TRUSTED_PROXIES

SETTING = "AUDITLOCK"
_KNOWN = {"CONFIG", "MODELS", "EVENT_PREFIXES", "LOGGER", "TRUSTED_PROXIES", "REQUEST_ID_HEADER", "ANONYMOUS_ACTOR",
          "AUTH_EVENTS", "COMMANDS"}


@dataclass(frozen=True)
class DjangoSettings:
    """The `AUDITLOCK` setting, validated."""

    config: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    event_prefixes: Mapping[str, str] = field(default_factory=dict)
    logger: str | None = None
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    request_id_header: str | None = "X-Request-ID"
    anonymous_actor: str | None = None
    auth_events: bool = True
    commands: bool = True


def read_settings() -> DjangoSettings:
    """The `AUDITLOCK` setting; `ConfigError` naming every problem."""
    raw: Any = getattr(settings, SETTING, None)
    if raw is None:
        raise ConfigError(f"settings.{SETTING} is missing: add {SETTING} = {{\"CONFIG\": \"auditlock.toml\", "
                          "\"MODELS\": {\"shop.Order\": \"Order\"}} (docs/integrations-django.md)")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"settings.{SETTING} must be a dict, not {type(raw).__name__}")
    problems = [f"settings.{SETTING}: unknown key {key!r} (known: {', '.join(sorted(_KNOWN))})"
                for key in raw if key not in _KNOWN]
    models = _string_map(raw.get("MODELS", {}), "MODELS", problems)
    prefixes = _string_map(raw.get("EVENT_PREFIXES", {}), "EVENT_PREFIXES", problems)
    for label in [*models, *prefixes]:
        if label.count(".") != 1:
            problems.append(f"settings.{SETTING}: {label!r} is not 'app_label.ModelName' (e.g. 'shop.Order')")
    proxies = raw.get("TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES)
    if isinstance(proxies, str) or not all(isinstance(p, str) for p in proxies):
        problems.append(f"settings.{SETTING}['TRUSTED_PROXIES'] must be a list of networks, e.g. ['10.0.0.0/8']")
    if problems:
        raise ConfigError("; ".join(problems))
    return DjangoSettings(
        config=raw.get("CONFIG"), models=models, event_prefixes=prefixes, logger=raw.get("LOGGER"),
        trusted_proxies=tuple(proxies), request_id_header=raw.get("REQUEST_ID_HEADER", "X-Request-ID"),
        anonymous_actor=raw.get("ANONYMOUS_ACTOR"), auth_events=bool(raw.get("AUTH_EVENTS", True)),
        commands=bool(raw.get("COMMANDS", True)),
    )


def _string_map(value: Any, key: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                 for k, v in value.items()):
        problems.append(f"settings.{SETTING}['{key}'] must map 'app_label.ModelName' to a name, "
                        "e.g. {'shop.Order': 'Order'}")
        return {}
    return dict(value)
