"""The authentication and permission helpers: event types, targets, fields, and what they refuse to take."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import structlog

import auditlock
from auditlock import EventError, event_types
from auditlock.config import Config, build_config
from auditlock.integrations import auth
from tests.conftest import HMAC_KEY, config_dict
from tests.support.spool_files import spool_events, spool_lines


@pytest.fixture(params=["logging", "structlog"])
def app_log(request: pytest.FixtureRequest, config: Config, closing: Callable[[Any], Any]) -> Iterator[Any]:
    """The application's audit logger, once as a stdlib logger with AuditHandler, once as structlog."""
    if request.param == "structlog":
        processor = closing(auditlock.AuditProcessor(config))
        yield structlog.wrap_logger(structlog.PrintLogger(), processors=[processor])
        return
    yield request.getfixturevalue("audit_log")


def only_event(config: Config) -> dict[str, Any]:
    """The one event in the spool."""
    [event] = spool_events(config.spool.dir)
    return event


class Case(NamedTuple):
    """One helper call (by the bound actor "user#1") and the event it must write."""

    helper: Callable[..., None]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    event_type: str
    target: tuple[str, str | None]
    payload: dict[str, Any]


CASES = [Case(*case) for case in [
    (auth.logout, (82,), {"reason": "idle_timeout"}, event_types.LOGOUT, ("User", "82"), {"reason": "idle_timeout"}),
    (auth.password_changed, (82,), {"method": "reset_link"}, event_types.PASSWORD_CHANGED, ("User", "82"),
     {"method": "reset_link"}),
    (auth.mfa_enrolled, (82,), {"mfa_method": "totp"}, event_types.MFA_ENROLLED, ("User", "82"),
     {"mfa_method": "totp"}),
    (auth.mfa_challenge_succeeded, (82,), {"mfa_method": "webauthn"}, event_types.MFA_CHALLENGE_SUCCEEDED,
     ("User", "82"), {"mfa_method": "webauthn"}),
    (auth.mfa_challenge_failed, (82,), {"mfa_method": "totp", "reason": "wrong_code"},
     event_types.MFA_CHALLENGE_FAILED, ("User", "82"), {"mfa_method": "totp", "reason": "wrong_code"}),
    (auth.session_revoked, ("u-9",), {"session_id": "sess_01HX", "reason": "admin"}, event_types.SESSION_REVOKED,
     ("User", "u-9"), {"session_id": "sess_01HX", "reason": "admin"}),
    (auth.api_key_used, ("key_7f3a",), {"scope": "orders:read"}, event_types.API_KEY_USED, ("ApiKey", "key_7f3a"),
     {"key_id": "key_7f3a", "scope": "orders:read"}),
    (auth.role_granted, (82,), {"role": "admin", "scope": "tenant-4"}, event_types.ROLE_GRANTED, ("User", "82"),
     {"role": "admin", "scope": "tenant-4"}),
    (auth.role_revoked, (uuid.UUID(int=5),), {"role": "admin"}, event_types.ROLE_REVOKED,
     ("User", str(uuid.UUID(int=5))), {"role": "admin"}),
    (auth.login_succeeded, (82,), {"method": "sso", "mfa": True}, event_types.LOGIN_SUCCEEDED, ("User", "82"),
     {"method": "sso", "mfa": True}),
    (auth.login_failed, (82,), {"reason": "bad_password", "method": "password"}, event_types.LOGIN_FAILED,
     ("User", "82"), {"reason": "bad_password", "method": "password"}),
]]


class TestHelpers:
    @pytest.mark.parametrize("case", CASES, ids=[case.helper.__name__ for case in CASES])
    def test_event(self, app_log: Any, config: Config, case: Case) -> None:
        """Each helper writes its standard event type, the target and its standard fields, by the bound actor."""
        with auditlock.actor("user#1", ip="198.51.100.7"):
            case.helper(app_log, *case.args, **case.kwargs)
        event = only_event(config)
        assert event["event_type"] == case.event_type
        assert (event["target_type"], event["target_id"]) == case.target
        assert event["payload"] == case.payload
        assert (event["actor_id"], event["actor_ip"]) == ("user#1", "198.51.100.7")
        assert event["retention"] == ("security" if case.event_type.startswith("auth.") else "standard")

    def test_unset_fields_are_not_written(self, app_log: Any, config: Config) -> None:
        """Optional fields left out are absent from the payload, not null."""
        with auditlock.actor("user#1"):
            auth.logout(app_log, 82)
        assert only_event(config)["payload"] == {}

    def test_login_succeeded_names_its_actor(self, app_log: Any, config: Config) -> None:
        """In an anonymous request, login_succeeded(actor_id=) is the user's, with the request's ip and id."""
        with auditlock.actor(None, ip="198.51.100.7", request_id="req-1"):
            auth.login_succeeded(app_log, 82, method="password", actor_id="user#82")
        event = only_event(config)
        assert (event["actor_id"], event["actor_type"], event["actor_ip"]) == ("user#82", "user", "198.51.100.7")
        assert event["payload"] == {"method": "password", "request_id": "req-1"}

    def test_login_succeeded_without_any_actor_is_refused(self, app_log: Any) -> None:
        """login_succeeded with no actor_id and nothing bound is refused, like any unattributed event."""
        with pytest.raises(EventError, match="has no actor"):
            auth.login_succeeded(app_log, 82, method="password")

    def test_failed_login_of_an_anonymous_requester(self, app_log: Any, config: Config) -> None:
        """A failed login where nobody is authenticated is by the actor 'anonymous', from the request's ip."""
        with auditlock.actor(None, ip="198.51.100.7"):
            auth.login_failed(app_log, reason="unknown_user", method="password")
        event = only_event(config)
        assert (event["actor_id"], event["actor_ip"], event["target_type"], event["target_id"]) == (
            "anonymous", "198.51.100.7", "User", None)

    def test_username_only_when_allowlisted_and_hashed(self, make_config: Callable[..., Config],
                                                       closing: Callable[[Any], Any]) -> None:
        """The typed username is dropped unless [targets.User] lists it; under hmac it is stored hashed."""
        for targets, expected in [({}, None),
                                  ({"User": {"fields": [], "hmac": ["username"]}},
                                   "hmac-sha256:" + hmac.new(HMAC_KEY.encode(), b"alice", hashlib.sha256).hexdigest())]:
            config = make_config(targets=targets)
            logger = logging.getLogger(f"audit.auth.{uuid.uuid4().hex}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            logger.addHandler(closing(auditlock.AuditHandler(config)))
            auth.login_failed(logger, reason="bad_password", username="alice")
            assert spool_events(config.spool.dir)[-1]["payload"].get("username") == expected

    def test_helpers_need_their_target_declared(self, spool_dir: Path, closing: Callable[[Any], Any]) -> None:
        """Without [targets.User] in the config a helper's event is refused, naming the section to add."""
        doc = config_dict(spool_dir)
        del doc["targets"]["User"]
        processor = closing(auditlock.AuditProcessor(build_config(doc)))
        logger = structlog.wrap_logger(structlog.PrintLogger(), processors=[processor])
        with pytest.raises(EventError, match=r"add \[targets\.User\]"), auditlock.actor("user:1"):
            auth.logout(logger, 82)
        assert not spool_dir.exists() or spool_lines(spool_dir) == []

    def test_role_change_needs_a_bound_actor(self, app_log: Any) -> None:
        """A role grant with nobody bound is refused: granted_by is the bound actor."""
        with pytest.raises(EventError, match="has no actor"):
            auth.role_granted(app_log, 82, role="admin")


HELPERS = [case.helper for case in CASES]


class TestNoSecrets:
    @pytest.mark.parametrize("helper", HELPERS, ids=[h.__name__ for h in HELPERS])
    def test_password_is_not_a_parameter(self, helper: Callable[..., None]) -> None:
        """No helper takes a password, token or key: passing one raises TypeError."""
        assert not {"password", "token", "api_key", "secret"} & set(inspect.signature(helper).parameters)
        args = (None, "x") if helper is not auth.api_key_used else (None, "key_1")
        with pytest.raises(TypeError, match="password"):
            helper(*args, password="hunter2")  # type: ignore[call-arg]

    @pytest.mark.parametrize("value", [
        "Bearer abc", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "sk_live_51HxYz", "ghp_abcdef0123456789",
        "glpat-xxxxxxxxxxxx", "xoxb-1234-5678", "a" * 65, "-----BEGIN PRIVATE KEY-----", "key with spaces", "",
    ])
    def test_secret_lookalikes_are_refused(self, app_log: Any, config: Config, value: str) -> None:
        """A key_id or session_id that looks like a credential is refused, without echoing it, and not written."""
        with auditlock.actor("user#1"):
            with pytest.raises(ValueError, match="key_id") as refused:
                auth.api_key_used(app_log, value)
            with pytest.raises(ValueError, match="session_id"):
                auth.session_revoked(app_log, 82, session_id=value)
        assert not value or value not in str(refused.value)
        assert not config.spool.dir.exists() or spool_lines(config.spool.dir) == []

    def test_no_password_field_in_the_spool(self, app_log: Any, config: Config) -> None:
        """After every helper ran, no field named password, token or secret is anywhere in the spool's bytes."""
        with auditlock.actor("user#1"):
            for case in CASES:
                case.helper(app_log, *case.args, **case.kwargs)
        raw = b"\n".join(spool_lines(config.spool.dir))
        assert len(spool_lines(config.spool.dir)) == len(CASES)
        for key in (b'"password":', b'"token":', b'"secret":', b'"api_key":'):
            assert key not in raw
