"""The admin view over the query test archive (STORY, shipped by the real agent): configs, a signed-in client,
reading the view's own audit events back from its spool, and pulling event ids out of a page."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.testclient import TestClient

from auditlock.config import Config, UiConfig
from auditlock.query.spool import copy_spool_events
from auditlock.ui.app import build_app
from auditlock.ui.auth import hash_password
from tests.support.query_env import QueryEnv

PASSWORD = "correct horse battery staple"
TOKEN = "test-token-0123456789abcdef0123456789abcdef"
CLIENT = ("127.0.0.1", 50123)
SESSION_KEY = "test-session-key"  # fixed, so a session outlives one app instance in a test
_EVENT_LINK = re.compile(r'href="/events/([0-9a-f-]{36})')
_HASHES: dict[str, str] = {}


def password_hash() -> str:
    """The argon2 hash of PASSWORD (computed once: argon2 is slow on purpose)."""
    if PASSWORD not in _HASHES:
        _HASHES[PASSWORD] = hash_password(PASSWORD)
    return _HASHES[PASSWORD]


@dataclass
class UiEnv:
    """The STORY archive, a cache for it, and a spool of the view's own (per test, so it starts empty)."""

    story: QueryEnv
    cache: Path
    spool: Path

    def config(self, **ui: Any) -> Config:
        """The archive's config with `[ui]` set (password auth for user alice, pages of 5 unless overridden)."""
        config = self.story.config
        values: dict[str, Any] = {"auth": "password", "users": MappingProxyType({"alice": password_hash()}),
                                  "page_size": 5, **ui}
        return replace(config, spool=replace(config.spool, dir=self.spool), ui=UiConfig(**values))

    def app(self, config: Config | None = None) -> Starlette:
        """The view over the archive."""
        return build_app(config or self.config(), cache_dir=self.cache, session_key=SESSION_KEY)

    @contextmanager
    def client(self, config: Config | None = None, *, login: bool = True,
               peer: tuple[str, int] = CLIENT) -> Iterator[TestClient]:
        """A test client of the view (started and shut down), signed in as alice unless `login=False`."""
        with TestClient(self.app(config), client=peer, follow_redirects=False) as client:
            if login:
                response = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": "/"})
                assert response.status_code == 303, response.text
            yield client

    def recorded(self, *types: str) -> list[dict[str, Any]]:
        """The view's own events in its spool (of `types`, if given), in write order."""
        out = io.BytesIO()
        copy_spool_events(self.spool, out)
        events = [orjson.loads(line) for line in out.getvalue().splitlines()]
        events.sort(key=lambda e: (e["writer"], e["seq"]))
        return [e for e in events if not types or e["event_type"] in types]


def event_ids(html: str) -> list[str]:
    """The event ids a results page links to, in page order."""
    return _EVENT_LINK.findall(html)


def link(html: str, rel: str) -> str | None:
    """The href of the pager link with this `rel` (prev/next), unescaped, or None."""
    match = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
    return match[1].replace("&amp;", "&") if match else None


def newest_first(events: list[dict[str, Any]]) -> list[str]:
    """Event ids in the view's order (occurred_at, then event_id, descending)."""
    return [e["event_id"] for e in sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]), reverse=True)]
