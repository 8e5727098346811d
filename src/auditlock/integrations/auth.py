"""Typed helpers for authentication and permission events: the standard event types with their standard fields.

    from auditlock.integrations import auth
    auth.login_failed(audit_log, user_id=None, username=form.username, reason="bad_password", method="password")
    auth.role_granted(audit_log, user.id, role="admin")          # granted by the bound actor

Every helper takes the application's audit logger first and emits through `integrations.emit.emit_event`.
Parameters are keyword-only and closed (no `**fields`): a password, a token or an API key cannot be passed by
mistake — `password=` raises `TypeError`. The account is the target (`target_type="User"`, `target_id=` its id);
the actor is the bound one (`auditlock.actor`, the middleware), except where noted. `key_id` and `session_id`
values that look like secrets (bearer tokens, JWTs, well-known key prefixes, PEM blocks, over 64 characters) are
refused with `ValueError` — a net for mistakes, not a proof: pass an id that is not itself a credential.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from auditlock.handler import event_types
from auditlock.handler.context import current_actor
from auditlock.integrations.emit import AuditLogger, emit_event

USER = "User"
API_KEY = "ApiKey"
ANONYMOUS = "anonymous"  # the actor of a failed login from a request nobody is authenticated in

UserId = str | int | uuid.UUID

_MAX_ID_CHARS = 64
_SECRET_LOOKALIKE = re.compile(
    r"(?i:bearer\s|basic\s|token\s|-----begin)"
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"  # a JWT
    r"|(?:sk|rk|pk)_(?:live|test)_|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|AIza[0-9A-Za-z_-]{30}"
)


def login_succeeded(logger: AuditLogger, user_id: UserId, *, method: str, mfa: bool | None = None,
                    actor_id: str | None = None, target_type: str = USER) -> None:
    """`auth.login_succeeded`: `user_id` authenticated by `method` (`"password"`, `"sso"`, …).

    The actor is `actor_id` — the id the user acts under from now on, e.g. `"user:82"` — else the bound actor;
    a login request is usually still anonymous, so pass it.
    """
    _emit(logger, event_types.LOGIN_SUCCEEDED, target_type, user_id, actor_id=actor_id, method=method, mfa=mfa)


def login_failed(logger: AuditLogger, user_id: UserId | None = None, *, reason: str, method: str | None = None,
                 username: str | None = None, actor_id: str | None = None, target_type: str = USER) -> None:
    """`auth.login_failed`: an attempt on account `user_id` (None when no account matched) failed for `reason`.

    The actor is `actor_id`, else the bound actor, else `"anonymous"`: whoever failed to log in is by
    definition not authenticated. `username` (what was typed — sometimes a password typed in the wrong box)
    is written only if `[targets.User]` allowlists it; list it under `hmac` there.
    """
    bound = current_actor()
    if actor_id is None and (bound is None or bound.id is None):
        actor_id = ANONYMOUS
    _emit(logger, event_types.LOGIN_FAILED, target_type, user_id, actor_id=actor_id, reason=reason, method=method,
          username=username)


def logout(logger: AuditLogger, user_id: UserId, *, reason: str | None = None, target_type: str = USER) -> None:
    """`auth.logout`: `user_id`'s session ended (`reason`: `"user"`, `"idle_timeout"`, …)."""
    _emit(logger, event_types.LOGOUT, target_type, user_id, reason=reason)


def password_changed(logger: AuditLogger, user_id: UserId, *, method: str, target_type: str = USER) -> None:
    """`auth.password_changed`: `user_id`'s password was changed (`method`: `"self_service"`, `"reset_link"`,
    `"admin"`) by the bound actor. Never the password itself."""
    _emit(logger, event_types.PASSWORD_CHANGED, target_type, user_id, method=method)


def mfa_enrolled(logger: AuditLogger, user_id: UserId, *, mfa_method: str, target_type: str = USER) -> None:
    """`auth.mfa_enrolled`: `user_id` enrolled a second factor (`mfa_method`: `"totp"`, `"webauthn"`, …)."""
    _emit(logger, event_types.MFA_ENROLLED, target_type, user_id, mfa_method=mfa_method)


def mfa_challenge_succeeded(logger: AuditLogger, user_id: UserId, *, mfa_method: str,
                            target_type: str = USER) -> None:
    """`auth.mfa_challenge_succeeded`: `user_id` passed a second-factor challenge."""
    _emit(logger, event_types.MFA_CHALLENGE_SUCCEEDED, target_type, user_id, mfa_method=mfa_method)


def mfa_challenge_failed(logger: AuditLogger, user_id: UserId, *, mfa_method: str, reason: str | None = None,
                         target_type: str = USER) -> None:
    """`auth.mfa_challenge_failed`: `user_id` failed a second-factor challenge (`reason`: `"wrong_code"`, …)."""
    _emit(logger, event_types.MFA_CHALLENGE_FAILED, target_type, user_id, mfa_method=mfa_method, reason=reason)


def session_revoked(logger: AuditLogger, user_id: UserId, *, session_id: str, reason: str | None = None,
                    target_type: str = USER) -> None:
    """`auth.session_revoked`: a session of `user_id` was ended by the bound actor.

    `session_id` must identify the session without being its bearer secret: where the framework's session key
    is the cookie value (Django's `session_key`), pass a hash of it.
    """
    _refuse_secret("session_id", session_id)
    _emit(logger, event_types.SESSION_REVOKED, target_type, user_id, session_id=session_id, reason=reason)


def api_key_used(logger: AuditLogger, key_id: str, *, scope: str | None = None, target_type: str = API_KEY) -> None:
    """`auth.api_key_used`: the API key `key_id` (its id — never the key) authenticated a request.

    The target is the key (`ApiKey`, `key_id`); the actor is the bound one, the key's owner.
    """
    _refuse_secret("key_id", key_id)
    _emit(logger, event_types.API_KEY_USED, target_type, key_id, key_id=key_id, scope=scope)


def role_granted(logger: AuditLogger, user_id: UserId, *, role: str, scope: str | None = None,
                 target_type: str = USER) -> None:
    """`access.role_granted`: `user_id` was given `role` (in `scope`, e.g. a tenant) by the bound actor."""
    _emit(logger, event_types.ROLE_GRANTED, target_type, user_id, role=role, scope=scope)


def role_revoked(logger: AuditLogger, user_id: UserId, *, role: str, scope: str | None = None,
                 target_type: str = USER) -> None:
    """`access.role_revoked`: `user_id` lost `role` (in `scope`), by the bound actor's hand."""
    _emit(logger, event_types.ROLE_REVOKED, target_type, user_id, role=role, scope=scope)


def _emit(logger: AuditLogger, event_type: str, target_type: str, target_id: UserId | None, **fields: Any) -> None:
    # Fields left as None are not written: an absent field and a null one would read differently to an auditor.
    given = {name: value for name, value in fields.items() if value is not None}
    emit_event(logger, event_type, target_type=target_type, target_id=target_id, **given)


def _refuse_secret(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string id, not {value!r}")
    if len(value) > _MAX_ID_CHARS or any(c.isspace() for c in value) or _SECRET_LOOKALIKE.search(value):
        raise ValueError(
            f"{name} looks like a secret, not an id (over {_MAX_ID_CHARS} characters, whitespace, or a token "
            "format): pass the key's or session's id, never the credential itself"
        )
