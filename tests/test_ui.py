"""`auditlock ui` with Starlette's test client over an archive the real agent shipped to a moto S3 server:
authentication, search, paging, the event page, export, and the view's own audit trail (fail closed)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from limits import parse
from starlette.testclient import TestClient

from auditlock.config import UiConfig, build_config
from auditlock.errors import ConfigError
from auditlock.handler.encode import hmac_value
from auditlock.query.columns import EVENT_NAMES
from auditlock.spool.format import WRITER_CLOSED
from auditlock.ui.app import SESSION_COOKIE, build_app
from auditlock.ui.server import check_bind
from auditlock.ui.throttle import LoginThrottle
from tests.conftest import HMAC_KEY, config_dict
from tests.support.calendar import occurred_at
from tests.support.query_env import ALICE, MIDDLE, OLDEST, QueryEnv
from tests.support.ui_env import CLIENT, PASSWORD, TOKEN, UiEnv, event_ids, link, newest_first, password_hash

SEARCHED, EXPORTED, VIEWED = "audit_log.searched", "audit_log.exported", "audit_log.viewed"
ALL_TIME = {"since": "2020-01"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One download cache for the module (archive objects never change)."""
    return tmp_path_factory.mktemp("ui-cache")


@pytest.fixture
def ui(story: QueryEnv, cache: Path, tmp_path: Path) -> UiEnv:
    """The view's environment, with a spool of its own for this test."""
    return UiEnv(story, cache, tmp_path / "ui-spool")


# Every type STORY holds: the agent's own records about shipping it late (`auditlock.*`) stay out.
STORY_ONLY = {**ALL_TIME, "type": "order.*, customer.*, auth.*, access.*, data.*"}


def written(story: QueryEnv, **match: Any) -> list[dict[str, Any]]:
    """STORY's records whose fields equal `match`."""
    return [e for e in story.written if all(e.get(k) == v for k, v in match.items())]


class TestConfig:
    def test_ui_section(self, tmp_path: Path) -> None:
        """[ui] with users, proxies and TLS is read into UiConfig; absent, it has safe defaults and no auth."""
        doc = config_dict(tmp_path, ui={"auth": "header", "trusted_header": "X-Forwarded-User",
                                        "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"], "port": 9000,
                                        "users": {"alice": password_hash()}})
        ui = build_config(doc).ui
        assert (ui.auth, ui.port, ui.trusted_proxies) == ("header", 9000, ("127.0.0.1", "10.0.0.0/8"))
        assert dict(ui.users) == {"alice": password_hash()}
        default = build_config(config_dict(tmp_path)).ui
        assert (default.auth, default.host, default.port) == (None, "127.0.0.1", 8080)

    @pytest.mark.parametrize(("ui", "problem"), [
        ({"auth": "password"}, '[ui] auth = "password" needs [ui.users]'),
        ({"auth": "password", "users": {"alice": "hunter2"}}, "[ui.users] alice must be an argon2 hash"),
        ({"auth": "token"}, '[ui] auth = "token" needs exactly one of token_env or token_file'),
        ({"auth": "token", "token_env": "T", "token_file": "t"}, "exactly one of token_env or token_file"),
        ({"auth": "header", "trusted_header": "X-User"}, '[ui] auth = "header" needs trusted_header'),
        ({"auth": "header", "trusted_header": "X-User", "trusted_proxies": ["proxy"]},
         "[ui] trusted_proxies: 'proxy' is not an IP address"),
        ({"tls_cert_file": "cert.pem"}, "tls_cert_file and tls_key_file go together"),
        ({"auth": "ldap"}, "ui.auth = 'ldap' is invalid"),
        ({"root_path": "audit/"}, "[ui] root_path = 'audit/'"),
    ])
    def test_problems_name_the_key(self, tmp_path: Path, ui: dict[str, Any], problem: str) -> None:
        """Each inconsistent [ui] is a ConfigError naming the key."""
        with pytest.raises(ConfigError) as raised:
            build_config(config_dict(tmp_path, ui=ui))
        assert any(problem in p for p in raised.value.problems), raised.value.problems

    def test_refuses_to_start_without_auth(self, ui: UiEnv) -> None:
        """Without [ui] auth the app cannot even be built; the error names the key."""
        with pytest.raises(ConfigError, match=r"\[ui\] auth is not set"):
            ui.app(ui.config(auth=None))

    def test_short_token_refused(self, ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bearer token under 32 characters is refused at start, naming its source."""
        monkeypatch.setenv("UI_TOKEN", "short")
        with pytest.raises(ConfigError, match=r"\[ui\] token_env: environment variable UI_TOKEN holds 5"):
            ui.app(ui.config(auth="token", token_env="UI_TOKEN"))

    def test_non_loopback_bind_needs_tls_or_explicit_consent(self, tmp_path: Path) -> None:
        """0.0.0.0 without TLS is refused unless allow_insecure_http; loopback and TLS binds are fine."""
        with pytest.raises(ConfigError, match=r"\[ui\] host = '0.0.0.0' is not a loopback address"):
            check_bind(UiConfig(auth="token"), "0.0.0.0")
        check_bind(UiConfig(auth="token", allow_insecure_http=True), "0.0.0.0")
        check_bind(UiConfig(auth="token", tls_cert_file=tmp_path / "c", tls_key_file=tmp_path / "k"), "10.1.2.3")
        for host in ("127.0.0.1", "::1", "localhost"):
            check_bind(UiConfig(auth="token"), host)


class TestAuthentication:
    @pytest.mark.parametrize("path", ["/", "/?actor=user%231", "/events/01890a5d-ac96-774b-bcce-b302099a8057",
                                      "/export.csv", "/export.jsonl?since=2020-01"])
    def test_unauthenticated_is_401(self, ui: UiEnv, path: str) -> None:
        """Every page, exports included, answers 401 with the login form and shows and records nothing."""
        with ui.client(login=False) as client:
            response = client.get(path)
        assert response.status_code == 401
        assert 'action="/login"' in response.text
        assert event_ids(response.text) == []
        assert ui.recorded(SEARCHED, EXPORTED, VIEWED) == []

    def test_wrong_password_is_refused_and_recorded(self, ui: UiEnv) -> None:
        """A wrong password or unknown user gets 401 and an auth.login_failed event; no session follows."""
        with ui.client(login=False) as client:
            bad = client.post("/login", data={"user": "alice", "password": "guess"})
            unknown = client.post("/login", data={"user": "mallory", "password": PASSWORD})
            after = client.get("/?since=7d")
        assert (bad.status_code, unknown.status_code, after.status_code) == (401, 401, 401)
        assert "Wrong credentials" in bad.text
        failed = ui.recorded("auth.login_failed")
        assert [(e["actor_id"], e["payload"]["reason"]) for e in failed] == [("user:alice", "bad_password"),
                                                                             ("anonymous", "unknown_user")]
        assert {e["actor_ip"] for e in failed} == {CLIENT[0]}

    def test_repeated_failures_throttle_the_account(self, ui: UiEnv) -> None:
        """After five failed logins for one account even the right password is refused unchecked (429), and each
        refusal is recorded; another account from the same address may still sign in."""
        with ui.client(login=False) as client:
            failures = [client.post("/login", data={"user": "alice", "password": f"guess-{n}"}) for n in range(5)]
            refused = client.post("/login", data={"user": "alice", "password": PASSWORD})
            other = client.post("/login", data={"user": "bob", "password": "guess"})
        assert [r.status_code for r in failures] == [401] * 5
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "900"
        assert other.status_code == 401, "bob's password was checked: the throttle is per account"
        reasons = [e["payload"]["reason"] for e in ui.recorded("auth.login_failed")]
        assert reasons == ["bad_password"] * 5 + ["throttled", "unknown_user"]
        assert ui.recorded("auth.login_succeeded") == []

    def test_one_address_failing_across_accounts_is_throttled(self) -> None:
        """Failures from one address count across the accounts it tries; other addresses are unaffected."""
        throttle = LoginThrottle(per_account=parse("5/15 minutes"), per_address=parse("3/15 minutes"))
        for account in ("alice", "bob", "carol"):
            assert throttle.allows(account, "198.51.100.9")
            throttle.failed(account, "198.51.100.9")
        assert not throttle.allows("dave", "198.51.100.9")
        assert throttle.allows("dave", "198.51.100.10")

    def test_login_session_and_logout(self, ui: UiEnv) -> None:
        """A login starts a session (recorded), the viewer is named on the page; after logout it is 401 again."""
        with ui.client() as client:
            assert "user:alice" in client.get("/").text
            assert client.post("/logout").status_code == 303
            assert client.get("/").status_code == 401
        assert [e["event_type"] for e in ui.recorded("auth.login_succeeded", "auth.logout")] == [
            "auth.login_succeeded", "auth.logout"]

    @pytest.mark.parametrize("secure", [False, True])
    def test_session_cookie_flags(self, ui: UiEnv, secure: bool) -> None:
        """The session cookie is HttpOnly and SameSite=Lax, and Secure when `secure_cookies` says HTTPS ends at a
        proxy."""
        with ui.client(ui.config(secure_cookies=secure), login=False) as client:
            response = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "/"})
        flags = {part.strip().lower() for part in response.headers["set-cookie"].split(";")}
        assert {"httponly", "samesite=lax"} <= flags
        assert ("secure" in flags) is secure

    def test_session_key_file_shares_sessions_between_replicas(self, ui: UiEnv, tmp_path: Path) -> None:
        """Two views signing with one `session_key_file` accept each other's session; a view with its own key
        does not."""
        key_file = tmp_path / "session.key"
        key_file.write_text("k" * 48 + "\n")
        shared = ui.config(session_key_file=key_file)
        with TestClient(build_app(shared, cache_dir=ui.cache), client=CLIENT, follow_redirects=False) as first:
            assert first.post("/login", data={"user": "alice", "password": PASSWORD}).status_code == 303
            cookie = first.cookies[SESSION_COOKIE]
        for config, status in ((shared, 200), (ui.config(), 401)):
            with TestClient(build_app(config, cache_dir=ui.cache), client=CLIENT) as second:
                second.cookies.set(SESSION_COOKIE, cookie)
                assert second.get("/").status_code == status

    @pytest.mark.parametrize(("content", "problem"), [(None, "cannot read"), ("short", "holds 5 characters")])
    def test_bad_session_key_file(self, ui: UiEnv, tmp_path: Path, content: str | None, problem: str) -> None:
        """A missing or short session key file is refused with the key and the file named."""
        key_file = tmp_path / "session.key"
        if content is not None:
            key_file.write_text(content)
        with pytest.raises(ConfigError, match=rf"\[ui\] session_key_file: .*{problem}"):
            build_app(ui.config(session_key_file=key_file), cache_dir=ui.cache)

    def test_login_redirects_only_to_local_paths(self, ui: UiEnv) -> None:
        """`next` is followed when it is a local path and replaced by / otherwise."""
        with ui.client(login=False) as client:
            local = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "/?actor=x"})
            other = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "//evil.example/"})
        assert local.headers["location"] == "/?actor=x"
        assert other.headers["location"] == "/"

    def test_cross_site_post_refused(self, ui: UiEnv) -> None:
        """A POST whose Origin names another site is refused before the login is checked."""
        with ui.client(login=False) as client:
            response = client.post("/login", data={"user": "alice", "password": PASSWORD},
                                   headers={"Origin": "https://evil.example"})
        assert response.status_code == 403
        assert ui.recorded() == []

    def test_bearer_token(self, ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """The right bearer token is let in as token_actor; a wrong one gets 401 with WWW-Authenticate."""
        monkeypatch.setenv("UI_TOKEN", TOKEN)
        config = ui.config(auth="token", token_env="UI_TOKEN", token_actor="svc:compliance-export")
        with ui.client(config, login=False) as client:
            good = client.get("/?actor=user%231", headers={"Authorization": f"Bearer {TOKEN}"})
            bad = client.get("/?actor=user%231", headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
            form = client.post("/login", data={"token": TOKEN})
        assert good.status_code == 200
        assert len(event_ids(good.text)) == 2
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"].startswith("Bearer")
        assert form.status_code == 303
        assert [e["actor_id"] for e in ui.recorded(SEARCHED)] == ["svc:compliance-export"]

    def test_trusted_header(self, ui: UiEnv) -> None:
        """The proxy's header names the viewer only from a trusted proxy; the client address comes from
        X-Forwarded-For (its right-most untrusted hop)."""
        config = ui.config(auth="header", trusted_header="X-Forwarded-User", trusted_proxies=("127.0.0.0/8",))
        headers = {"X-Forwarded-User": "bob@example.com", "X-Forwarded-For": "198.51.100.7, 203.0.113.5"}
        with ui.client(config, login=False) as client:
            trusted = client.get("/?actor=user%231", headers=headers)
        with ui.client(config, login=False, peer=("192.0.2.1", 4000)) as client:
            untrusted = client.get("/?actor=user%231", headers=headers)
        assert (trusted.status_code, untrusted.status_code) == (200, 401)
        [event] = ui.recorded(SEARCHED)
        assert (event["actor_id"], event["actor_type"], event["actor_ip"]) == ("user:bob@example.com", "user",
                                                                              "203.0.113.5")


class TestBearerFailures:
    @staticmethod
    def config(ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> Any:
        """Token auth behind a trusted proxy (127.0.0.0/8, the test client's address)."""
        monkeypatch.setenv("UI_TOKEN", TOKEN)
        return ui.config(auth="token", token_env="UI_TOKEN", token_actor="svc:compliance-export",
                         trusted_proxies=("127.0.0.0/8",))

    def test_wrong_bearer_token_is_recorded_like_a_failed_login(self, ui: UiEnv,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """A wrong bearer token on any page is 401 and an auth.login_failed event (reason, the client address
        through the trusted proxy), never holding the token itself."""
        wrong = "wrong-token-" + "x" * 40
        headers = {"Authorization": f"Bearer {wrong}", "X-Forwarded-For": "198.51.100.7"}
        with ui.client(self.config(ui, monkeypatch), login=False) as client:
            responses = [client.get(path, headers=headers) for path in ("/?since=7d", "/export.csv", "/login")]
            empty = client.get("/", headers={**headers, "Authorization": "Bearer"})
        assert [r.status_code for r in [*responses, empty]] == [401] * 4
        assert all(r.headers["www-authenticate"].startswith("Bearer") for r in responses)
        failed = ui.recorded("auth.login_failed")
        assert [(e["actor_id"], e["actor_ip"], e["payload"]) for e in failed] == [
            ("anonymous", "198.51.100.7", {"method": "token", "reason": "bad_bearer_token"})] * 4
        assert wrong not in orjson.dumps(ui.recorded()).decode()
        assert ui.recorded(SEARCHED, EXPORTED) == []

    def test_repeated_wrong_bearer_tokens_are_throttled(self, ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """After five wrong bearer tokens even the right one is refused unchecked (429), and recorded."""
        with ui.client(self.config(ui, monkeypatch), login=False) as client:
            failures = [client.get("/", headers={"Authorization": f"Bearer guess-{n}"}) for n in range(5)]
            refused = client.get("/?actor=user%231", headers={"Authorization": f"Bearer {TOKEN}"})
        assert [r.status_code for r in failures] == [401] * 5
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "900"
        reasons = [e["payload"]["reason"] for e in ui.recorded("auth.login_failed")]
        assert reasons == ["bad_bearer_token"] * 5 + ["throttled"]
        assert ui.recorded(SEARCHED) == []

    def test_right_bearer_token_records_no_failure(self, ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """The right token is let in and leaves no auth.login_failed; a request without one is not a failure."""
        with ui.client(self.config(ui, monkeypatch), login=False) as client:
            good = client.get("/?actor=user%231", headers={"Authorization": f"Bearer {TOKEN}"})
            anonymous = client.get("/")
        assert (good.status_code, anonymous.status_code) == (200, 401)
        assert ui.recorded("auth.login_failed") == []


class TestSearch:
    @pytest.mark.parametrize(("query", "match"), [
        ({"actor": "user#1"}, {"actor_id": "user#1"}),
        ({"target_type": "Order", "target_id": "1001"}, {"target_type": "Order", "target_id": "1001"}),
        ({"type": "auth.*"}, None),
        ({"text": "SUPPORT ticket"}, {"event_type": "data.accessed"}),
        ({"since": MIDDLE.day(1).date().isoformat(), "until": (MIDDLE.end - dt.timedelta(days=1)).date().isoformat()},
         None),
    ])
    def test_filters(self, ui: UiEnv, story: QueryEnv, query: dict[str, str], match: dict[str, str] | None) -> None:
        """Each filter shows exactly the matching events, newest first."""
        if query.get("type") == "auth.*":
            expected = [e for e in story.written if e["event_type"].startswith("auth.")]
        elif "since" in query:
            start, end = occurred_at(MIDDLE.start), occurred_at(MIDDLE.end)
            expected = [e for e in story.written if start <= e["occurred_at"] < end]
        else:
            assert match is not None
            expected = written(story, **match)
        with ui.client(ui.config(page_size=50)) as client:
            response = client.get("/", params=query)
        assert response.status_code == 200
        assert event_ids(response.text) == newest_first(expected)
        assert f'<strong id="total">{len(expected)}</strong>' in response.text

    def test_pasted_hashed_forms_match_under_every_key(self, ui: UiEnv, story: QueryEnv) -> None:
        """Text holding several hashed forms (`auditlock hash` output, one per key) finds the value under any of
        them in one search; the search's record holds the forms, never the value."""
        stored = hmac_value(HMAC_KEY.encode(), ALICE)  # the story's key: legacy, no id
        forms = f"{hmac_value(b'a-newer-key-0123456789', ALICE, 'k2')}\n{stored}"
        expected = [e for e in story.written if stored in orjson.dumps(e["payload"]).decode()]
        assert len(expected) == 4
        with ui.client(ui.config(page_size=50)) as client:
            response = client.get("/", params={"text": forms})
        assert event_ids(response.text) == newest_first(expected)
        [record] = ui.recorded(SEARCHED)
        assert ALICE not in orjson.dumps(record).decode()

    def test_each_search_is_recorded(self, ui: UiEnv, story: QueryEnv) -> None:
        """One audit_log.searched per search — by the viewer, from the client, with filters, range and count —
        although [events] include does not list audit_log.*; the empty form records nothing."""
        assert not any(p.startswith("audit_log") for p in story.config.events.include)
        with ui.client() as client:
            client.get("/")
            client.get("/", params={"actor": "user#1", "since": OLDEST.iso, "until": MIDDLE.iso})
            client.get("/", params={"type": "order.*, customer.*", "text": "alice"})
        first, second = ui.recorded(SEARCHED)
        assert (first["actor_id"], first["actor_type"], first["actor_ip"]) == ("user:alice", "user", CLIENT[0])
        assert (first["target_type"], first["service"]) == ("AuditLog", "shop")
        assert first["payload"] == {"filters": {"actor": "user#1", "since": OLDEST.iso, "until": MIDDLE.iso},
                                    "range": {"since": occurred_at(OLDEST.start), "until": occurred_at(MIDDLE.end)},
                                    "results": 2}
        assert second["payload"]["filters"] == {"type": "order.*, customer.*", "text": "alice"}

    def test_paging(self, ui: UiEnv, story: QueryEnv) -> None:
        """Older links walk every event once, newest first, in pages of page_size; Newer goes back a page."""
        expected = newest_first(story.written)
        pages = []
        with ui.client() as client:
            url: str | None = f"/?{urlencode(STORY_ONLY)}"
            while url is not None:
                html = client.get(url).text
                pages.append(event_ids(html))
                url = link(html, "next")
            newer = link(client.get(f"/?{urlencode(STORY_ONLY)}&older={_token(story, expected[4])}").text, "prev")
            assert newer is not None
            back = event_ids(client.get(newer).text)
        assert [len(p) for p in pages] == [5, 5, 5, 1]
        assert [i for p in pages for i in p] == expected
        assert back == pages[0]
        assert len(ui.recorded(SEARCHED)) == len(pages) + 2

    def test_bad_input_is_400_and_not_recorded(self, ui: UiEnv) -> None:
        """A bad time or event type answers 400 naming the field; nothing was searched, nothing recorded."""
        with ui.client() as client:
            time = client.get("/", params={"since": "yesterday"})
            kind = client.get("/", params={"type": "Order Updated"})
        assert (time.status_code, kind.status_code) == (400, 400)
        assert "Since (UTC): &#39;yesterday&#39; is not a time" in time.text
        assert "Event type: &#39;Order&#39; is not an event type" in kind.text
        assert ui.recorded(SEARCHED) == []


class TestEventPage:
    def test_diff_raw_json_and_links(self, ui: UiEnv, story: QueryEnv) -> None:
        """The event page shows before/after per field highlighted, the raw event and links to related
        searches, and records audit_log.viewed with the event id as target."""
        event = next(e for e in story.written if e["event_type"] == "customer.updated")
        with ui.client() as client:
            response = client.get(f"/events/{event['event_id']}")
        assert response.status_code == 200
        html = response.text
        assert '<tr class="changed">' in html
        assert f"<del>{event['payload']['changes']['email'][0]}</del>" in html
        assert f"<ins>{event['payload']['changes']['email'][1]}</ins>" in html
        assert f"&#34;event_id&#34;: &#34;{event['event_id']}&#34;" in html
        assert 'href="/?target_type=Customer&amp;target_id=7"' in html
        assert 'href="/?actor=user%237"' in html
        [viewed] = ui.recorded(VIEWED)
        assert (viewed["target_id"], viewed["payload"], viewed["actor_id"]) == (event["event_id"], {"found": True},
                                                                                "user:alice")

    def test_missing_event(self, ui: UiEnv) -> None:
        """An unknown id is 404 (and the look-up is recorded); a malformed one is 404 without a look-up."""
        with ui.client() as client:
            missing = client.get("/events/01890a5d-ac96-774b-bcce-b302099a8057")
            malformed = client.get("/events/not-an-id")
        assert (missing.status_code, malformed.status_code) == (404, 404)
        assert [e["payload"] for e in ui.recorded(VIEWED)] == [{"found": False}]


class TestExport:
    def test_csv(self, ui: UiEnv, story: QueryEnv) -> None:
        """CSV export holds every matching event (not only the page), every column, newest first."""
        expected = written(story, target_type="Order", target_id="1001")
        with ui.client() as client:
            response = client.get("/export.csv", params={"target_type": "Order", "target_id": "1001"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith('attachment; filename="auditlock-shop-')
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert list(rows[0]) == list(EVENT_NAMES)
        assert [r["event_id"] for r in rows] == newest_first(expected)
        by_id = {e["event_id"]: e for e in expected}
        assert all(orjson.loads(r["payload"]) == by_id[r["event_id"]]["payload"] for r in rows)
        [exported] = ui.recorded(EXPORTED)
        assert exported["payload"]["format"] == "csv"
        assert exported["payload"]["results"] == len(expected) == 5

    def test_jsonl(self, ui: UiEnv, story: QueryEnv) -> None:
        """JSONL export lines are the events exactly as archived."""
        with ui.client() as client:
            response = client.get("/export.jsonl", params=STORY_ONLY)
        lines = [orjson.loads(line) for line in response.text.splitlines()]
        by_id = {e["event_id"]: e for e in story.written}
        assert [e["event_id"] for e in lines] == newest_first(story.written)
        assert all(line == by_id[line["event_id"]] for line in lines)
        assert [e["payload"]["results"] for e in ui.recorded(EXPORTED)] == [len(story.written)]


class TestFailClosed:
    def test_full_spool_refuses_every_access(self, ui: UiEnv) -> None:
        """When the view's audit event cannot be written (spool over max_bytes), search, export and event
        pages answer 503 and show no audit data; so does a login."""
        ui.spool.mkdir(mode=0o700)
        (ui.spool / f"{'0' * 32}.{0:016x}.jsonl").write_bytes(b"x" * 70_000)
        config = ui.config()
        config = replace(config, spool=replace(config.spool, max_bytes=65536))
        event_id = "01890a5d-ac96-774b-bcce-b302099a8057"
        with ui.client(config, login=False) as client:
            login = client.post("/login", data={"user": "alice", "password": PASSWORD})
        assert login.status_code == 503
        with ui.client(ui.config()) as client:  # sign in while the spool has room ...
            cookies = client.cookies
        with ui.client(config, login=False) as client:  # ... then use the session while it is full
            client.cookies = cookies
            responses = [client.get("/", params=ALL_TIME), client.get("/export.csv", params=ALL_TIME),
                         client.get(f"/events/{event_id}")]
        assert [r.status_code for r in responses] == [503, 503, 503]
        assert all("could not be recorded in the audit trail" in r.text for r in responses)
        assert all(event_ids(r.text) == [] and "event_id" not in r.text for r in responses)
        assert ui.recorded(SEARCHED, EXPORTED, VIEWED) == []

    def test_writer_closes_cleanly(self, ui: UiEnv) -> None:
        """Shutting the view down seals its segment with the writer's clean-end record."""
        with ui.client() as client:
            client.get("/", params={"actor": "user#1"})
        assert ui.recorded()[-1]["event_type"] == WRITER_CLOSED
        assert not list(ui.spool.glob("*.open.jsonl"))


def _token(story: QueryEnv, event_id: str) -> str:
    event = next(e for e in story.written if e["event_id"] == event_id)
    return f"{event['occurred_at']}_{event_id}"
