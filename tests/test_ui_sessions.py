"""`auditlock ui` hardening, with Starlette's test client over the archive the real agent shipped to a moto S3
server: sessions follow `[ui.users]` and end at logout (across replicas), access records are fsync'd before the
response, the login throttle counts the account the check reads, only the viewer's own navigations are recorded
in their name, and a login flood is summarized rather than filling the spool."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from starlette.testclient import TestClient

from auditlock.errors import ConfigError
from auditlock.handler.core import AuditCore
from auditlock.spool.writer import SpoolWriter
from auditlock.ui.access_log import LOGIN_FAILED_SUMMARY, AccessLog, AccessNotRecorded
from auditlock.ui.app import SESSION_COOKIE, build_app
from auditlock.ui.auth import hash_password
from auditlock.ui.refusals import BUDGET, MAX_ADDRESSES, WINDOW_S, RefusedLogins
from auditlock.ui.revocations import RevokedSessions
from tests.support.query_env import QueryEnv
from tests.support.syscalls import Syscall, traced
from tests.support.ui_env import CLIENT, PASSWORD, TOKEN, UiEnv, password_hash
from tests.support.waiting import wait_for

OTHER_PASSWORD = "another horse, another staple"
ACCESS_EVENTS = ("audit_log.searched", "audit_log.exported", "audit_log.viewed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One download cache for the module (archive objects never change)."""
    return tmp_path_factory.mktemp("ui-cache")


@pytest.fixture
def ui(story: QueryEnv, cache: Path, tmp_path: Path) -> UiEnv:
    """The view's environment, with a spool of its own for this test."""
    return UiEnv(story, cache, tmp_path / "ui-spool")


def session_of(ui: UiEnv, users: dict[str, str], user: str, password: str = PASSWORD) -> str:
    """The session cookie a view with `users` gives `user` at login."""
    with ui.client(ui.config(users=MappingProxyType(users)), login=False) as client:
        response = client.post("/login", data={"user": user, "password": password})
        assert response.status_code == 303, response.text
        return client.cookies[SESSION_COOKIE]


def status_with(ui: UiEnv, users: dict[str, str], cookie: str, path: str = "/") -> int:
    """The status a view with `users` (same session key) answers a request carrying `cookie`."""
    with TestClient(ui.app(ui.config(users=MappingProxyType(users))), client=CLIENT,
                    follow_redirects=False) as client:
        client.cookies.set(SESSION_COOKIE, cookie)
        return client.get(path).status_code


class TestSessionsFollowTheUsers:
    @pytest.mark.parametrize("path", ["/", "/export.csv?since=2020-01"])
    def test_removed_user_loses_the_session(self, ui: UiEnv, path: str) -> None:
        """A session of a user since removed from [ui.users] is refused (401) by the view with the new config."""
        cookie = session_of(ui, {"alice": password_hash(), "bob": password_hash()}, "bob")
        assert status_with(ui, {"alice": password_hash(), "bob": password_hash()}, cookie, path) == 200
        assert status_with(ui, {"alice": password_hash()}, cookie, path) == 401

    def test_password_change_ends_earlier_sessions(self, ui: UiEnv) -> None:
        """A session issued before the user's password hash changed is refused; a login with the new one works."""
        cookie = session_of(ui, {"alice": password_hash()}, "alice")
        changed = {"alice": hash_password(OTHER_PASSWORD)}
        assert status_with(ui, changed, cookie) == 401
        assert status_with(ui, changed, session_of(ui, changed, "alice", OTHER_PASSWORD)) == 200

    def test_new_token_ends_token_sessions(self, ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """With auth = "token", a session started with the form's token ends when the view runs with a new token."""
        monkeypatch.setenv("UI_TOKEN", TOKEN)
        config = ui.config(auth="token", token_env="UI_TOKEN")
        with ui.client(config, login=False) as client:
            assert client.post("/login", data={"token": TOKEN}).status_code == 303
            cookie = client.cookies[SESSION_COOKIE]
        for token, status in ((TOKEN, 200), ("a-new-token-" + "9" * 32, 401)):
            monkeypatch.setenv("UI_TOKEN", token)
            with TestClient(ui.app(config), client=CLIENT, follow_redirects=False) as client:
                client.cookies.set(SESSION_COOKIE, cookie)
                assert client.get("/").status_code == status


class TestAccessRecordsAreDurable:
    def test_a_shared_writer_must_write_sync(self, ui: UiEnv) -> None:
        """A spool writer handed to the view that does not fsync each event is refused (ConfigError)."""
        config = ui.config()
        writer = SpoolWriter(replace(config.spool, durability="group"))
        with pytest.raises(ConfigError, match='writes with durability = "group"; give it a writer with'):
            build_app(config, cache_dir=ui.cache, writer=writer)

    @pytest.mark.parametrize("durability", ["group", "process"])
    def test_record_is_fsynced_by_its_writer_before_the_response(self, ui: UiEnv, tmp_path: Path,
                                                                   durability: str) -> None:
        """Whatever `[spool] durability` the application uses, the thread that writes a search's access record
        fdatasyncs that segment before the page is returned (under "group" only the background flusher would,
        whenever its interval ends; under "process" nobody would)."""
        config = ui.config()
        config = replace(config, spool=replace(config.spool, durability=durability))
        marker = tmp_path / "response-arrived"
        with ui.client(config) as client, traced(tmp_path / "strace.log", SYSCALLS) as calls:
            response = client.get("/", params={"actor": "user#1"})
            marker.exists()  # a stat strace logs after the response arrived
        assert response.status_code == 200
        spool_calls = [c for c in calls if c.name != "write" or ".open.jsonl>" in c.rest]
        assert durable_before(calls, "audit_log.searched", str(marker)), "\n".join(
            f"{c.tid} {c.name}{c.rest[:120]}" for c in spool_calls if c.name in ("write", "fdatasync", "fsync"))


SYSCALLS = ("write", "fdatasync", "fsync", "newfstatat", "statx", "stat")


def durable_before(calls: list[Syscall], event_type: str, marker: str) -> bool:
    """Whether the thread that wrote the line holding `event_type` to a spool segment then fsync'd (or
    fdatasync'd) that segment, before `marker` was stat'ed."""
    end = next(n for n, call in enumerate(calls) if call.name in ("newfstatat", "statx", "stat")
               and marker in call.rest)
    writes = [(n, call) for n, call in enumerate(calls[:end]) if call.name == "write"
              and event_type in call.rest and ".open.jsonl>" in call.rest]
    assert writes, f"no write of {event_type} to a spool segment was traced"
    n, write = writes[0]
    segment = write.rest.split(">", 1)[0]
    return any(call.tid == write.tid and call.name in ("fdatasync", "fsync") and call.rest.startswith(segment)
               for call in calls[n + 1:end])


class TestLoginThrottleAccounts:
    def test_white_space_around_the_name_counts_as_the_same_account(self, ui: UiEnv) -> None:
        """Failures for " alice", "alice " and "\\talice" count as alice's (the login reads them as alice), so the
        sixth attempt is refused unchecked even with the right password."""
        with ui.client(login=False) as client:
            names = [" alice", "alice ", "\talice", "alice\n", " alice "]
            failures = [client.post("/login", data={"user": name, "password": "guess"}) for name in names]
            refused = client.post("/login", data={"user": "alice", "password": PASSWORD})
        assert [r.status_code for r in failures] == [401] * 5
        assert refused.status_code == 429

    def test_token_form_ignores_a_user_field(self, ui: UiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """With auth = "token" the account is the token, whatever `user=` field a form adds."""
        monkeypatch.setenv("UI_TOKEN", TOKEN)
        with ui.client(ui.config(auth="token", token_env="UI_TOKEN"), login=False) as client:
            failures = [client.post("/login", data={"token": "wrong", "user": f"u{n}"}) for n in range(5)]
            refused = client.post("/login", data={"token": TOKEN, "user": "u9"})
        assert [r.status_code for r in failures] == [401] * 5
        assert refused.status_code == 429


class TestLogoutRevokes:
    def test_logged_out_cookie_is_refused(self, ui: UiEnv) -> None:
        """A session cookie kept from before the logout gets 401 afterwards (the logout ended it server-side)."""
        with ui.client() as client:
            kept = client.cookies[SESSION_COOKIE]
            assert client.post("/logout").status_code == 303
            client.cookies.set(SESSION_COOKIE, kept)
            assert client.get("/").status_code == 401

    def test_logout_at_one_replica_ends_the_session_at_another(self, ui: UiEnv, tmp_path: Path) -> None:
        """Replicas sharing `revoked_sessions_dir` (and the session key) refuse a session logged out at any of
        them; the directory holds one file, named by the session id."""
        config = ui.config(revoked_sessions_dir=tmp_path / "revoked")
        with ui.client(config) as first, ui.client(config, login=False) as second:
            second.cookies.set(SESSION_COOKIE, first.cookies[SESSION_COOKIE])
            assert second.get("/").status_code == 200
            assert first.post("/logout").status_code == 303
            assert second.get("/").status_code == 401
        assert [len(p.name) for p in (tmp_path / "revoked").iterdir()] == [32]

    def test_unwritable_directory_is_refused_at_start(self, ui: UiEnv, tmp_path: Path) -> None:
        """A `revoked_sessions_dir` that cannot be made (a file is in the way) is a ConfigError naming the key."""
        (tmp_path / "taken").write_text("")
        with pytest.raises(ConfigError, match=r"\[ui\] revoked_sessions_dir: cannot write to"):
            ui.app(ui.config(revoked_sessions_dir=tmp_path / "taken" / "revoked"))


class TestRevokedSessions:
    def test_ended_sessions_are_forgotten_once_expired(self) -> None:
        """A revoked id is remembered while its session could live, and dropped at a later logout after that."""
        now = [1_000_000.0]
        revoked = RevokedSessions(3600, clock=lambda: now[0])
        revoked.revoke("a" * 32, 1_000_000)
        assert revoked.is_revoked("a" * 32, 1_000_000)
        now[0] += 3601
        revoked.revoke("b" * 32, int(now[0]))
        assert (len(revoked), revoked.is_revoked("a" * 32, 1_000_000)) == (1, False)

    def test_full_memory_refuses_every_earlier_session(self) -> None:
        """Past its capacity the store refuses every session issued so far rather than forget a logout."""
        now = [1_000_000.0]
        revoked = RevokedSessions(3600, clock=lambda: now[0], capacity=2)
        for n, sid in enumerate(("a", "b", "c")):
            now[0] += 1
            revoked.revoke(sid * 32, 1_000_000 + n)
        assert all(revoked.is_revoked(sid * 32, 1_000_000 + n) for n, sid in enumerate("abc"))
        assert revoked.is_revoked("d" * 32, 1_000_001)
        assert not revoked.is_revoked("e" * 32, int(now[0]) + 1)

    def test_expired_files_are_removed(self, tmp_path: Path) -> None:
        """A file whose session expired is removed at the next logout; a live one stays."""
        now = [1_000_000.0]
        revoked = RevokedSessions(3600, tmp_path, clock=lambda: now[0])
        revoked.revoke("a" * 32, 1_000_000)
        now[0] += 3601
        revoked.revoke("b" * 32, int(now[0]))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b" * 32]


RECORDED_PAGES = ["/?actor=user%231", "/export.csv?since=2020-01", "/events/{event_id}"]


def page(path: str, story: QueryEnv) -> str:
    """`path` with an event id of the archive filled in."""
    return path.format(event_id=story.written[0]["event_id"])


class TestOnlyOwnNavigationsAreRecorded:
    @pytest.mark.parametrize("path", RECORDED_PAGES)
    @pytest.mark.parametrize(("site", "mode"), [("cross-site", "navigate"), ("same-site", "navigate"),
                                                ("same-origin", "no-cors"), ("cross-site", "no-cors")])
    def test_other_sites_and_subresources_are_refused_unrecorded(self, ui: UiEnv, story: QueryEnv, path: str,
                                                                  site: str, mode: str) -> None:
        """A page that records in the viewer's name, asked for by another site or as a subresource, answers 403
        with a link of the view's own, shows no audit data and records nothing."""
        path = page(path, story)
        with ui.client() as client:
            response = client.get(path, headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode})
        assert response.status_code == 403
        assert f'<a href="{path}">' in response.text
        assert "occurred_at" not in response.text
        assert ui.recorded(*ACCESS_EVENTS) == []

    @pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"},
                                         {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}, {}])
    def test_own_typed_and_header_less_requests_are_served(self, ui: UiEnv, story: QueryEnv,
                                                           headers: dict[str, str]) -> None:
        """The view's own links, a typed URL or bookmark (`none`) and clients without Fetch Metadata are served
        and recorded."""
        with ui.client() as client:
            responses = [client.get(page(path, story), headers=headers) for path in RECORDED_PAGES]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert len(ui.recorded(*ACCESS_EVENTS)) == 3

    def test_empty_search_form_from_another_site_is_served(self, ui: UiEnv) -> None:
        """A link from another site to the bare search form (which records nothing) still works."""
        with ui.client() as client:
            response = client.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
        assert response.status_code == 200
        assert 'name="actor"' in response.text


class TestLoginFloodIsBounded:
    def test_flood_of_refusals_leaves_the_application_room(self, ui: UiEnv) -> None:
        """A flood of throttled logins writes at most the budget of events per minute plus summaries counting the
        rest — every refusal is counted — so the application sharing the spool can still write."""
        flood = 600
        config = ui.config()
        config = replace(config, spool=replace(config.spool, max_bytes=200_000))
        started = time.time()
        with ui.client(config, login=False) as client:
            for n in range(5):
                client.post("/login", data={"user": "alice", "password": f"guess-{n}"})
            statuses = Counter(client.post("/login", data={"user": "alice", "password": "guess"}).status_code
                               for _ in range(flood))
        windows = int(time.time() // WINDOW_S - started // WINDOW_S) + 1
        assert statuses == {429: flood}
        one_by_one = [e for e in ui.recorded("auth.login_failed") if e["payload"]["reason"] == "throttled"]
        summaries = ui.recorded(LOGIN_FAILED_SUMMARY)
        assert len(one_by_one) <= BUDGET * windows
        assert len(one_by_one) + sum(s["payload"]["count"] for s in summaries) == flood
        assert all(set(s["payload"]["reasons"]) == {"throttled"} for s in summaries)
        assert {s["payload"]["addresses"] for s in summaries} == {1}
        application = AuditCore(config)
        try:
            assert application.emit("order.created", {"actor_id": "user#1", "target_type": "Order",
                                                      "target_id": "1"}) is not None
        finally:
            application.writer.close()


class TestRefusedLogins:
    @pytest.fixture
    def access(self, ui: UiEnv) -> Iterator[AccessLog]:
        """The view's access log over a real spool."""
        access = AccessLog(ui.config())
        yield access
        access.close()

    def test_budget_then_summaries_count_every_refusal(self, ui: UiEnv, access: AccessLog) -> None:
        """Past the window's budget refusals are counted: a summary at the first overflow, one when the window is
        over, each with its count, times and distinct addresses; failures for real accounts stay one by one."""
        now = [1_800_000_000.0]
        refusals = RefusedLogins(access, "password", window_s=60, budget=2, clock=lambda: now[0])
        for n in range(6):
            now[0] += 1
            refusals.record("anonymous", f"198.51.100.{n % 3}", "unknown_user" if n % 2 else "throttled")
        refusals.record("user:alice", "198.51.100.9", "bad_password")
        now[0] += 60
        refusals.record("anonymous", "198.51.100.1", "throttled")  # a new window: the last one's summary first
        failed = ui.recorded("auth.login_failed", LOGIN_FAILED_SUMMARY)
        assert [(e["event_type"], e["payload"].get("reason")) for e in failed] == [
            ("auth.login_failed", "throttled"), ("auth.login_failed", "unknown_user"),
            (LOGIN_FAILED_SUMMARY, None), ("auth.login_failed", "bad_password"), (LOGIN_FAILED_SUMMARY, None),
            ("auth.login_failed", "throttled")]
        first, second = (e["payload"] for e in failed if e["event_type"] == LOGIN_FAILED_SUMMARY)
        assert (first["count"], first["reasons"], first["addresses"]) == (1, {"throttled": 1}, 1)
        assert (second["count"], second["reasons"], second["addresses"]) == (3, {"throttled": 1, "unknown_user": 2},
                                                                             3)
        assert (second["first_at"], second["last_at"]) == ("2027-01-15T08:00:04.000Z", "2027-01-15T08:00:06.000Z")

    def test_addresses_are_bounded(self, ui: UiEnv, access: AccessLog) -> None:
        """A summary counts at most MAX_ADDRESSES distinct addresses and says when there were more."""
        refusals = RefusedLogins(access, "password", budget=0, clock=lambda: 1_800_000_000.0)
        for n in range(MAX_ADDRESSES + 10):
            refusals.record("anonymous", f"10.0.{n // 256}.{n % 256}", "throttled")
        refusals.close()
        *_, last = (e["payload"] for e in ui.recorded(LOGIN_FAILED_SUMMARY))
        assert (last["count"], last["addresses"], last["addresses_capped"]) == (MAX_ADDRESSES + 9, MAX_ADDRESSES,
                                                                                True)

    def test_unwritable_summary_keeps_its_counts(self, ui: UiEnv) -> None:
        """When the summary cannot be written the refusal is refused (AccessNotRecorded) and the counts wait for
        the next summary; none is lost."""
        ui.spool.mkdir(mode=0o700)
        filler = ui.spool / f"{'0' * 32}.{0:016x}.jsonl"
        filler.write_bytes(b"x" * 70_000)
        config = ui.config()
        access = AccessLog(replace(config, spool=replace(config.spool, max_bytes=65536)))
        refusals = RefusedLogins(access, "password", budget=0, clock=lambda: 1_800_000_000.0)
        with pytest.raises(AccessNotRecorded):
            refusals.record("anonymous", "198.51.100.1", "throttled")
        filler.unlink()
        attempts = [1]

        def recorded_once_there_is_room() -> bool:
            attempts.append(1)
            try:
                refusals.record("anonymous", "198.51.100.2", "throttled")
            except AccessNotRecorded:  # the writer has not yet re-measured the spool
                return False
            return True

        wait_for(recorded_once_there_is_room, what="a refusal recorded after the spool was freed")
        refusals.close()
        access.close()
        assert sum(e["payload"]["count"] for e in ui.recorded(LOGIN_FAILED_SUMMARY)) == len(attempts) >= 2
