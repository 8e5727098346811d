"""What the app holds once Django is ready: the auditlock config, the audit logger, the tracked models.

Built once in `AuditlockConfig.ready()` from the `AUDITLOCK` setting. Problems that `manage.py check` reports
(a model that is not installed, a target without a `[targets.<Type>]` section, event types `[events] include`
does not match) are collected in `problems`; a model that has one is still fenced: saving it raises `EventError`
naming the problem, so a misconfigured deployment that skipped the checks records nothing silently wrong — it
refuses the change (fail closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models

from auditlock.config.load import load_config
from auditlock.config.model import Config
from auditlock.errors import ConfigError
from auditlock.handler import event_types
from auditlock.handler.logging_handler import AuditHandler
from auditlock.integrations.django.conf import DjangoSettings
from auditlock.integrations.emit import AuditLogger
from auditlock.integrations.orm_events import allow_integration_fields, default_event_prefix, emitted_event_types
from auditlock.integrations.sqlalchemy_check import EventCheck

DEFAULT_LOGGER = "auditlock.django"
AUTH_EVENT_TYPES = (event_types.LOGIN_SUCCEEDED, event_types.LOGIN_FAILED, event_types.LOGOUT,
                    event_types.PASSWORD_CHANGED, event_types.ROLE_GRANTED, event_types.ROLE_REVOKED,
                    event_types.PERMISSION_CHANGED)
BULK_CONFLICT_FIELD = "on_conflict"  # bulk_created: "ignore" | "update" (bulk)
PERMISSION_CHANGE_FIELD = "change"  # access.permission_changed: "granted" | "revoked"


@dataclass(frozen=True)
class TrackedModel:
    """How one Django model is audited: its target type, event prefix, allowlisted fields and m2m fields."""

    model: type[models.Model]
    target_type: str
    prefix: str
    fields: dict[str, models.Field[Any, Any]]  # allowlisted concrete fields, by name
    m2m: dict[str, models.ManyToManyField[Any, Any]]  # allowlisted many-to-many fields, by name


class Runtime:
    """The config, the audit logger, the check of events before the database is written, the tracked models."""

    def __init__(self, settings: DjangoSettings) -> None:
        self.settings = settings
        self.config: Config = load_config(settings.config)
        self.logger: AuditLogger = _audit_logger(settings, self.config)
        self.check = EventCheck(self.logger, self.config)
        self.problems: list[str] = []
        self.models: dict[type[models.Model], TrackedModel] = {}
        self.fenced: dict[type[models.Model], str] = {}  # listed models that cannot be recorded, and why
        for label, target_type in settings.models.items():
            self._track(label, target_type)
        self.user_target_type = self._user_target_type()
        if settings.auth_events:
            self._check_auth_events()

    def tracked(self, model: type[Any]) -> TrackedModel | None:
        """The tracking of `model` (or of its concrete parent, for a proxy), else None."""
        found = self.models.get(model)
        if found is None and getattr(model, "_meta", None) is not None and model._meta.proxy:
            found = self.models.get(model._meta.concrete_model)
        return found

    def tracked_write(self, model: type[Any]) -> TrackedModel | None:
        """The tracking that records a save or bulk write of `model`: its own, else that of its nearest tracked
        multi-table parent — Django sends `pre_save`/`post_save` for the saved class only and writes the parents'
        rows inside that save."""
        for candidate in (model, *_parents(model)):
            found = self.tracked(candidate)
            if found is not None:
                return found
        return None

    def fenced_problem(self, model: type[Any], *, parents: bool) -> str | None:
        """Why changes of `model` cannot be recorded: its own config problem, its concrete model's (a proxy), or
        with `parents` a multi-table parent's; None if there is none."""
        meta = getattr(model, "_meta", None)
        candidates = [model, *([meta.concrete_model] if meta is not None and meta.proxy else [])]
        if parents:
            candidates += _parents(model)
        return next((self.fenced[c] for c in candidates if c in self.fenced), None)

    def _track(self, label: str, target_type: str) -> None:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            self.problems.append(f"AUDITLOCK['MODELS']: {label!r} is not an installed model")
            return
        prefix = self.settings.event_prefixes.get(label) or default_event_prefix(target_type)
        problem = self._model_problem(model, target_type, prefix)
        if problem is not None:
            self.problems.append(problem)
            self.fenced[model] = problem
            return
        target = self.config.targets[target_type]
        concrete = {f.name: f for f in model._meta.concrete_fields}
        many = {f.name: f for f in model._meta.many_to_many if isinstance(f, models.ManyToManyField)}
        self.models[model] = TrackedModel(
            model, target_type, prefix, {n: f for n, f in concrete.items() if n in target.allowed},
            {n: f for n, f in many.items() if n in target.allowed})
        allow_integration_fields(prefix)
        for action in ("bulk_created", "bulk_create_attempted"):
            event_types.register_standard_fields(f"{prefix}.{action}", {BULK_CONFLICT_FIELD})

    def _model_problem(self, model: type[models.Model], target_type: str, prefix: str) -> str | None:
        label = model._meta.label
        if target_type not in self.config.targets:
            return (f"{label} is tracked as {target_type!r} but the auditlock config has no [targets.{target_type}] "
                    f"section: add it with the `fields` allowlist of {label} (an empty list records ids only)")
        emitted = emitted_event_types(prefix)
        if not all(event_types.EVENT_TYPE_PATTERN.match(t) for t in emitted):
            return f"the event prefix {prefix!r} of {label} must be lowercase like 'order'"
        unmatched = [t for t in emitted if not self.config.events.matches(t)]
        if unmatched:
            return (f"[events] include does not match the event types of {label} ({', '.join(unmatched[:3])}"
                    f"{', …' if len(unmatched) > 3 else ''}): add '{prefix}.*'")
        return None

    def _user_target_type(self) -> str:
        user_model = get_user_model()
        tracked = self.models.get(user_model)
        return tracked.target_type if tracked is not None else user_model.__name__

    def _check_auth_events(self) -> None:
        unmatched = [t for t in AUTH_EVENT_TYPES if not self.config.events.matches(t)]
        if unmatched:
            self.problems.append(f"AUDITLOCK['AUTH_EVENTS'] is on but [events] include does not match "
                                 f"{', '.join(unmatched)}: add \"auth.*\" and \"access.*\" (or set AUTH_EVENTS: False)")
        for target_type in (self.user_target_type, "Group"):
            if target_type not in self.config.targets:
                self.problems.append(f"AUDITLOCK['AUTH_EVENTS'] is on but the auditlock config has no "
                                     f"[targets.{target_type}] section (the account and group events' target): "
                                     f"add it (fields = [] records ids only)")
        event_types.register_standard_fields(event_types.PERMISSION_CHANGED, {PERMISSION_CHANGE_FIELD})


def _parents(model: type[Any]) -> list[type[models.Model]]:
    meta = getattr(model, "_meta", None)
    return [] if meta is None else list(meta.get_parent_list())


def _audit_logger(settings: DjangoSettings, config: Config) -> AuditLogger:
    if settings.logger is not None:
        return logging.getLogger(settings.logger)
    logger = logging.getLogger(DEFAULT_LOGGER)
    if not any(isinstance(h, AuditHandler) for h in logger.handlers):
        logger.addHandler(AuditHandler(config))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


_runtime: Runtime | None = None


def install_runtime(runtime: Runtime) -> None:
    """Make `runtime` the one the signal handlers use."""
    global _runtime  # noqa: PLW0603 - one per process, set when Django's app registry is ready
    _runtime = runtime


def runtime() -> Runtime:
    """The runtime built at `ready()`; `ConfigError` before that."""
    if _runtime is None:
        raise ConfigError("auditlock.integrations.django is not ready: add it to INSTALLED_APPS")
    return _runtime
