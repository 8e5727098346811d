"""Django's authentication signals as the standard events, and users' group and permission changes.

- `user_logged_in` → `auth.login_succeeded` (actor and target the user; `method` the authentication backend's
  class name); inside `AuditMiddleware` the request's actor becomes the user for the rest of the request, and
  Django's own `last_login` update runs with the user as its actor (it runs before any other receiver, while
  the request is still anonymous).
- `user_logged_out` → `auth.logout`; `user_login_failed` → `auth.login_failed` (actor "anonymous" unless one is
  bound; `username` written only if `[targets.<User>]` allowlists it — list it under `hmac`). Django has already
  replaced the password in `credentials`; it is never read here.
- A save of the user model that changes the password hash → `auth.password_changed` (`method` "set_password"),
  never the hash itself.
- `user.groups` changes → `access.role_granted` / `access.role_revoked` (`role` the group's name);
  `user.user_permissions` → `access.permission_changed` on the user and `group.permissions` on the group
  (`permission` "app_label.codename", `change` "granted" | "revoked"); from either side of the relation.

Logins, logouts and failed logins are written at once (they are not database changes); password, group and
permission changes when their transaction commits, and not at all if it rolls back.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import models, router
from django.db.models.signals import m2m_changed, post_save, pre_save

from auditlock.handler import event_types
from auditlock.handler.context import actor, current_request
from auditlock.integrations import auth
from auditlock.integrations.django import m2m, transactions
from auditlock.integrations.django.runtime import PERMISSION_CHANGE_FIELD, runtime
from auditlock.integrations.request import set_request_actor

_UID = "auditlock.integrations.django.auth_events"
_LAST_LOGIN_UID = "update_last_login"  # django.contrib.auth.apps connects update_last_login under this uid
_PASSWORD_STAGED = "_auditlock_password_staged"  # noqa: S105 - an attribute name


def connect() -> None:
    """Connect the receivers (idempotent: fixed dispatch uids)."""
    user_model = get_user_model()
    user_logged_in.connect(_logged_in, dispatch_uid=f"{_UID}.in", weak=False)
    _update_last_login_as_the_user()
    user_logged_out.connect(_logged_out, dispatch_uid=f"{_UID}.out", weak=False)
    user_login_failed.connect(_login_failed, dispatch_uid=f"{_UID}.failed", weak=False)
    pre_save.connect(_password_pre_save, sender=user_model, dispatch_uid=f"{_UID}.pw_pre", weak=False)
    post_save.connect(_password_post_save, sender=user_model, dispatch_uid=f"{_UID}.pw_post", weak=False)
    for field in _access_fields():
        m2m_changed.connect(_access_changed, sender=field.remote_field.through, weak=False,
                            dispatch_uid=f"{_UID}.{field.model._meta.label}.{field.name}")


def actor_id_of(user: Any) -> str | None:
    """The actor id of a Django user (`user:<pk>`), None for an anonymous one."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return f"user:{user.pk}"


def _update_last_login_as_the_user() -> None:
    """Django's own `user_logged_in` receiver saves `last_login` before ours runs, while the request is still
    anonymous: replace it (same dispatch uid) with one that runs it with the logging-in user as the actor."""
    from django.contrib.auth.models import update_last_login  # noqa: PLC0415

    if user_logged_in.disconnect(dispatch_uid=_LAST_LOGIN_UID):
        def update_last_login_as_user(sender: Any, user: Any, **kwargs: Any) -> None:
            with actor(actor_id_of(user), type="user"):
                update_last_login(sender, user, **kwargs)
        user_logged_in.connect(update_last_login_as_user, dispatch_uid=_LAST_LOGIN_UID, weak=False)


def _logged_in(sender: Any, request: Any = None, user: Any = None, **_: Any) -> None:
    actor_id = actor_id_of(user)
    if actor_id is None:
        return
    if current_request() is not None:
        set_request_actor(actor_id, type="user")
    method = getattr(user, "backend", None) or "unknown"
    auth.login_succeeded(runtime().logger, user.pk, method=method.rpartition(".")[2], actor_id=actor_id,
                         target_type=runtime().user_target_type)


def _logged_out(sender: Any, request: Any = None, user: Any = None, **_: Any) -> None:
    if actor_id_of(user) is not None:
        auth.logout(runtime().logger, user.pk, reason="user", target_type=runtime().user_target_type)


def _login_failed(sender: Any, credentials: dict[str, Any] | None = None, request: Any = None, **_: Any) -> None:
    username = (credentials or {}).get(get_user_model().USERNAME_FIELD)
    auth.login_failed(runtime().logger, None, reason="invalid_credentials",
                      username=username if isinstance(username, str) else None,
                      target_type=runtime().user_target_type)


# -- password changes -----------------------------------------------------------------------------------------


def _password_pre_save(sender: type[models.Model], instance: Any, using: str | None = None, update_fields: Any = None,
                       **_: Any) -> None:
    if instance._state.adding or instance.pk is None or (update_fields and "password" not in update_fields):
        return
    alias = using or router.db_for_write(sender, instance=instance)
    stored = sender._base_manager.using(alias).filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is None or stored == instance.password:
        return
    fields = {"target_type": runtime().user_target_type, "target_id": str(instance.pk), "method": "set_password"}
    runtime().check.check(event_types.PASSWORD_CHANGED, fields)
    staged = transactions.stage(alias, event_types.PASSWORD_CHANGED, fields, attempt=False)
    setattr(instance, _PASSWORD_STAGED, (alias, staged))


def _password_post_save(sender: type[models.Model], instance: Any, **_: Any) -> None:
    found = instance.__dict__.pop(_PASSWORD_STAGED, None)
    if found is not None:
        transactions.finish(*found)


# -- groups and permissions -----------------------------------------------------------------------------------


def _access_fields() -> list[models.ManyToManyField[Any, Any]]:
    user_model = get_user_model()
    names = [(user_model, "groups"), (user_model, "user_permissions"), (Group, "permissions")]
    found = []
    for model, name in names:
        try:
            field = model._meta.get_field(name)
        except Exception:  # noqa: S112 - a custom user model without PermissionsMixin
            continue
        if isinstance(field, models.ManyToManyField):
            found.append(field)
    return found


def _access_changed(sender: type[models.Model], *, instance: models.Model, action: str, reverse: bool,
                    pk_set: set[Any] | None, using: str | None = None, **_: Any) -> None:
    for field in _access_fields():
        if field.remote_field.through is sender:
            m2m.follow(field, instance=instance, action=action, reverse=reverse, pk_set=pk_set, using=using,
                       write=_access_writer(field))


def _access_writer(field: models.ManyToManyField[Any, Any]) -> m2m.ChangeWriter:
    group_side = field.model is Group
    target_type = "Group" if group_side else runtime().user_target_type

    def write(alias: str, owner_pk: Any, before: list[Any], after: list[Any], *, check: bool = False) -> None:
        added, removed = sorted(set(after) - set(before), key=str), sorted(set(before) - set(after), key=str)
        for event_type, extra in _access_events(field, added, removed, alias):
            fields = {"target_type": target_type, "target_id": str(owner_pk), **extra}
            runtime().check.check(event_type, fields)
            if not check:
                transactions.finish(alias, transactions.stage(alias, event_type, fields, attempt=False))
    return write


def _access_events(field: models.ManyToManyField[Any, Any], added: list[Any], removed: list[Any],
                   alias: str) -> list[tuple[str, dict[str, Any]]]:
    if not added and not removed:
        return []
    if field.related_model is Group:
        names = dict(Group.objects.using(alias).filter(pk__in=[*added, *removed]).values_list("pk", "name"))
        return ([(event_types.ROLE_GRANTED, {"role": names.get(pk, str(pk))}) for pk in added]
                + [(event_types.ROLE_REVOKED, {"role": names.get(pk, str(pk))}) for pk in removed])
    perms = {p.pk: f"{p.content_type.app_label}.{p.codename}"
             for p in Permission.objects.using(alias).filter(pk__in=[*added, *removed]).select_related("content_type")}
    return ([(event_types.PERMISSION_CHANGED, {"permission": perms.get(pk, str(pk)), PERMISSION_CHANGE_FIELD: c})
             for pks, c in ((added, "granted"), (removed, "revoked")) for pk in pks])
