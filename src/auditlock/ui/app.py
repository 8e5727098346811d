"""The Starlette application of `auditlock ui`: routes, session cookie, security headers, shutdown.

`build_app` refuses (`ConfigError`) when `[ui] auth` is not configured, so there is no way to build an
unauthenticated view. The session cookie is signed (itsdangerous, via Starlette's `SessionMiddleware`) with a
key made at start (restarting the view signs everyone out), or with `[ui] session_key_file` so replicas and restarts
share sessions. It carries what `sessions` puts in it (actor id, session id, issued-at, credential stamp), is
`HttpOnly`, `SameSite=Lax`, `Secure` when the view serves TLS itself or `[ui] secure_cookies` says a proxy does,
and expires after `[ui] session_max_age_s`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditlock.config.model import Config
from auditlock.query.cache import default_cache_dir
from auditlock.spool.writer import SpoolWriter
from auditlock.ui.access_log import AccessLog
from auditlock.ui.auth import authenticator
from auditlock.ui.navigation import NotOwnNavigation
from auditlock.ui.reader import ArchiveReader
from auditlock.ui.views import Views

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HERE = Path(__file__).parent
SESSION_COOKIE = "auditlock_ui"
# Audit data is never cached, framed or leaked through a Referer to another site; pages load nothing but their own
# stylesheet.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: Chromium then sends `Origin: null` with form POSTs
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def build_app(config: Config, *, cache_dir: Path | None = None, client: S3Client | None = None,
              writer: SpoolWriter | None = None, session_key: str | None = None) -> Starlette:
    """The view over `config`'s archive; raises `ConfigError` when no authentication method is configured."""
    auth = authenticator(config.ui)
    access = AccessLog(config, writer=writer)
    cache_dir = cache_dir or config.ui.cache_dir or config.query.cache_dir or default_cache_dir()
    reader = ArchiveReader(config, cache_dir, client=client)  # bounded by [query] cache_max_bytes
    views = Views(config, auth, reader, access, Jinja2Templates(directory=HERE / "templates"))
    routes = [
        Route("/", views.search, methods=["GET"], name="search"),
        Route("/events/{event_id}", views.event, methods=["GET"], name="event"),
        Route("/export.{fmt}", views.export, methods=["GET"], name="export"),
        Route("/login", views.login_page, methods=["GET"], name="login_page"),
        Route("/login", views.login, methods=["POST"], name="login"),
        Route("/logout", views.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SameOriginPosts),
        Middleware(SessionMiddleware,
                   secret_key=session_key or config.ui.load_session_key() or secrets.token_urlsafe(32),
                   session_cookie=SESSION_COOKIE, max_age=config.ui.session_max_age_s, same_site="lax",
                   https_only=config.ui.tls_cert_file is not None or config.ui.secure_cookies),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        try:
            await run_in_threadpool(views.refusals.close)
        finally:
            await run_in_threadpool(access.close)

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={NotOwnNavigation: views.not_own_navigation})


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SameOriginPosts:
    """Refuses (403) a POST whose `Origin` names another host: no cross-site login or logout. Browsers send
    `Origin` with every POST; a request without it (curl) is not a cross-site request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not _same_origin(scope):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"cross-site request refused\n"})
            return
        await self.app(scope, receive, send)


def _same_origin(scope: Scope) -> bool:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    origin = headers.get(b"origin")
    if origin is None:
        return True
    return origin.split(b"://", 1)[-1].rstrip(b"/") == headers.get(b"host", b"")
