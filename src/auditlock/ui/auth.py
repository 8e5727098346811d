"""Who is looking: the viewer of a request, by one of three methods (`[ui] auth`), and the client's address.

- `password`: named users with argon2 hashes (`[ui.users]`); the login form starts a signed session cookie.
  The viewer is `user:<name>`. An unknown name is checked against a dummy hash, so both failures take as long.
- `token`: one bearer token (`token_env` / `token_file`), sent as `Authorization: Bearer <token>` by scripts or
  typed into the login form by a person; compared with `hmac.compare_digest`. The viewer is `[ui] token_actor`.
  A request that presents a bearer token is judged by it alone (no session fallback): a wrong one is a failed
  login, recorded and throttled like the form's (see `views.Views.unauthorized`).
- `header`: an authenticating reverse proxy names the user in `trusted_header`; believed only when the request
  comes from one of `trusted_proxies`. The viewer is `user:<value>`. No login form, no session.

The client address follows the request middleware's rules (`integrations.request.ProxyTrust`): the peer's, or —
when the peer is a trusted proxy — the right-most address in `X-Forwarded-For` that is not itself a trusted proxy
(the left part of that header is whatever the client sent); unknown (null) rather than guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import HTTPConnection

from auditlock.config.model import UiConfig
from auditlock.errors import ConfigError
from auditlock.integrations.request import ProxyTrust

MAX_USER_NAME = 200
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9_.@+\-#:]{1,200}\Z")


@dataclass(frozen=True)
class Viewer:
    """An authenticated viewer: the actor id written into the audit events of what they do."""

    actor_id: str
    method: str  # "password" | "token" | "header"


@dataclass(frozen=True)
class LoginAttempt:
    """The outcome of a login form: the viewer, or the actor to blame and why it failed."""

    viewer: Viewer | None
    actor_id: str
    reason: str | None = None


class TrustedProxies:
    """The `[ui] trusted_proxies` networks, with the request middleware's rules (`integrations.request`)."""

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._trust = ProxyTrust(networks)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and bool(address) and self._trust.peer_is_trusted(address)

    def client_ip(self, connection: HTTPConnection) -> str | None:
        """The client's address: the peer, or from `X-Forwarded-For` when the peer is a trusted proxy."""
        peer = connection.client.host if connection.client else None
        forwarded_for = ",".join(connection.headers.getlist("x-forwarded-for")) or None
        return self._trust.client_ip(peer, forwarded_for)


class Authenticator:
    """One `[ui] auth` method. `form_fields` are the login form's inputs (none: no login form)."""

    method = ""
    form_fields: tuple[str, ...] = ()

    def from_request(self, connection: HTTPConnection) -> Viewer | None:
        """The viewer the request itself proves (bearer token, proxy header), if any."""
        return None

    def presents_credential(self, connection: HTTPConnection) -> bool:
        """Whether the request itself carries a credential of this method (right or wrong): then a refusal is a
        failed login attempt."""
        return False

    def account(self, form: Mapping[str, str]) -> str:
        """The account a login form tries, as the check reads it: the one key the login throttle counts under."""
        return self.method

    def login(self, form: Mapping[str, str]) -> LoginAttempt:
        """Check a submitted login form."""
        return LoginAttempt(None, "anonymous", "no_login_form")

    def credential_stamp(self, actor_id: str) -> str | None:
        """A short digest of the credential `actor_id` signs in with now (None: the actor cannot sign in). A
        session carries the stamp of its login and ends when the stamp changes (user removed, password changed)."""
        return None


class PasswordAuth(Authenticator):
    """Named users with argon2 hashes; login form → session."""

    method = "password"
    form_fields = ("user", "password")

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_hex(16))

    def account(self, form: Mapping[str, str]) -> str:
        """The user name without surrounding white space (and at most `MAX_USER_NAME` characters): the name that
        is looked up, so `" alice"` and `"alice "` are alice's attempts, counted as hers."""
        return form.get("user", "").strip()[:MAX_USER_NAME]

    def login(self, form: Mapping[str, str]) -> LoginAttempt:
        """Verify user and password (an unknown user costs the same time as a wrong password)."""
        name, password = self.account(form), form.get("password", "")
        hashed = self.users.get(name)
        try:
            self.hasher.verify(hashed or self._dummy, password)
        except (VerificationError, InvalidHashError):
            if hashed is None:
                return LoginAttempt(None, "anonymous", "unknown_user")
            return LoginAttempt(None, f"user:{name}", "bad_password")
        if hashed is None:  # a password that matches the random dummy hash: impossible in practice
            return LoginAttempt(None, "anonymous", "unknown_user")
        return LoginAttempt(Viewer(f"user:{name}", self.method), f"user:{name}")

    def credential_stamp(self, actor_id: str) -> str | None:
        """The stamp of the user's current hash in `[ui.users]`, None when the user is not (or no longer) there."""
        name = actor_id.removeprefix("user:")
        hashed = self.users.get(name) if actor_id.startswith("user:") else None
        return None if hashed is None else _stamp(hashed)


class TokenAuth(Authenticator):
    """One bearer token: `Authorization: Bearer …` on each request, or typed into the login form."""

    method = "token"
    form_fields = ("token",)

    def __init__(self, token: str, actor_id: str) -> None:
        self._token = token.encode()
        self.actor_id = actor_id

    def from_request(self, connection: HTTPConnection) -> Viewer | None:
        """The viewer when the request carries the right bearer token."""
        presented = _bearer(connection)
        if presented is not None and self._matches(presented):
            return Viewer(self.actor_id, self.method)
        return None

    def presents_credential(self, connection: HTTPConnection) -> bool:
        """An `Authorization: Bearer …` header, whatever its value."""
        return _bearer(connection) is not None

    def login(self, form: Mapping[str, str]) -> LoginAttempt:
        """Compare the typed token."""
        if self._matches(form.get("token", "").strip()):
            return LoginAttempt(Viewer(self.actor_id, self.method), self.actor_id)
        return LoginAttempt(None, "anonymous", "bad_token")

    def credential_stamp(self, actor_id: str) -> str | None:
        """The stamp of the current token (a new token ends the sessions started with the old one)."""
        return _stamp(self._token.decode()) if actor_id == self.actor_id else None

    def _matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)


class HeaderAuth(Authenticator):
    """An authenticating reverse proxy names the user in a header; believed from trusted proxies only."""

    method = "header"

    def __init__(self, header: str, proxies: TrustedProxies) -> None:
        self.header = header
        self.proxies = proxies

    def from_request(self, connection: HTTPConnection) -> Viewer | None:
        """The viewer the proxy names, if the peer is a trusted proxy and the value is a plausible name."""
        peer = connection.client.host if connection.client else None
        value = connection.headers.get(self.header, "").strip()
        if peer not in self.proxies or not _HEADER_VALUE.match(value):
            return None
        return Viewer(f"user:{value}", self.method)


def _stamp(secret: str) -> str:
    """A digest of a credential that says when it changed and nothing else (the cookie is signed, not hidden)."""
    return hashlib.sha256(b"auditlock-ui-session\0" + secret.encode()).hexdigest()[:16]


def _bearer(connection: HTTPConnection) -> str | None:
    """The value of an `Authorization: Bearer <value>` header ("" when empty), None without one."""
    scheme, _, value = connection.headers.get("authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authenticator(ui: UiConfig) -> Authenticator:
    """The configured method; a `ConfigError` names the key when none is configured or its secret is missing."""
    if ui.auth == "password":
        return PasswordAuth(ui.users)
    if ui.auth == "token":
        return TokenAuth(ui.load_token(), ui.token_actor)
    if ui.auth == "header" and ui.trusted_header is not None:
        return HeaderAuth(ui.trusted_header, TrustedProxies(ui.trusted_proxies))
    raise ConfigError('[ui] auth is not set: the view never runs without authentication; set auth = "password" '
                      '(with [ui.users]), "token" (with token_env or token_file) or "header" (with trusted_header '
                      "and trusted_proxies) — see docs/ui.md")


def hash_password(password: str) -> str:
    """The argon2id hash of a password, for `[ui.users]`."""
    return PasswordHasher().hash(password)

