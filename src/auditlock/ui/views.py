"""The pages: search (with paging), one event, export, login and logout.

Every page that shows audit data first records the access (`AccessLog`) and shows nothing if that fails (503).
Data pages are plain GET links (a search is bookmarkable); login and logout are POST forms. Archive reads and
the fsync of the access record are blocking, so those endpoints are sync functions (Starlette runs them in
its thread pool).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.templating import Jinja2Templates

from auditlock.config.model import Config
from auditlock.query.errors import QueryError
from auditlock.query.paging import EVENT_ID
from auditlock.ui import access_log as events
from auditlock.ui import present
from auditlock.ui.access_log import AccessLog, AccessNotRecorded
from auditlock.ui.auth import Authenticator, TrustedProxies, Viewer
from auditlock.ui.navigation import require_own_navigation
from auditlock.ui.reader import EXPORT_FORMATS, ArchiveReader
from auditlock.ui.refusals import RefusedLogins
from auditlock.ui.revocations import RevokedSessions, SessionStateError
from auditlock.ui.search import FIELDS, LABELS, QUICK_RANGES, FormError, SearchForm
from auditlock.ui.sessions import Sessions
from auditlock.ui.throttle import LoginThrottle

_EXPORT_CHUNK = 64 * 1024
_SPOOL_MEMORY = 4 * 1024 * 1024


class Views:
    """The endpoints, sharing the config, the authenticator, the archive reader and the access log."""

    def __init__(self, config: Config, auth: Authenticator, reader: ArchiveReader, access: AccessLog,
                 templates: Jinja2Templates) -> None:
        self.config = config
        self.auth = auth
        self.reader = reader
        self.access = access
        self.templates = templates
        self.proxies = TrustedProxies(config.ui.trusted_proxies)
        self.throttle = LoginThrottle()
        self.refusals = RefusedLogins(access, auth.method)
        self.sessions = Sessions(auth, RevokedSessions(config.ui.session_max_age_s, config.ui.revoked_sessions_dir))
        self.page_size = config.ui.page_size

    # --- data pages -----------------------------------------------------------------------------------

    def search(self, request: Request) -> Response:
        """The search form, and — when a search was submitted — one page of results, newest first."""
        viewer = self.viewer_of(request)
        if viewer is None:
            return self.unauthorized(request)
        try:
            form = SearchForm.from_query(request.query_params)
            if not form.submitted:
                return self.render(request, "search.html", viewer, form=form)
            event_filter = form.event_filter(dt.datetime.now(dt.UTC))
        except FormError as exc:
            return self.render(request, "search.html", viewer, form=_lenient_form(request), error=str(exc),
                               status=400)
        require_own_navigation(request)
        try:
            result = self.reader.search(event_filter, self.page_size, include_spool=form.include_spool,
                                        older=form.older, newer=form.newer)
        except QueryError as exc:
            return self.render(request, "search.html", viewer, form=form, error=str(exc), status=502)
        try:
            self.access.viewer(events.SEARCHED, viewer, self.client_ip(request),
                               **form.audit_payload(event_filter), results=result.total)
        except AccessNotRecorded as exc:
            return self.refused(request, viewer, exc)
        rows = [present.present(row) for row in result.page.events]
        return self.render(request, "search.html", viewer, form=form, result=result, rows=rows)

    def event(self, request: Request) -> Response:
        """One event: its fields, the before/after table, the raw JSON, links to related searches."""
        viewer = self.viewer_of(request)
        if viewer is None:
            return self.unauthorized(request)
        require_own_navigation(request)
        event_id = request.path_params["event_id"]
        if not EVENT_ID.match(event_id):
            return self.render(request, "error.html", viewer, title="No such event",
                               message=f"{event_id!r} is not an auditlock event id.", status=404)
        include_spool = request.query_params.get("spool") == "1"
        try:
            row = self.reader.event(event_id, include_spool=include_spool)
        except QueryError as exc:
            return self.render(request, "error.html", viewer, title="The archive cannot be read",
                               message=str(exc), status=502)
        try:
            self.access.viewer(events.VIEWED, viewer, self.client_ip(request), target_id=event_id,
                               found=row is not None)
        except AccessNotRecorded as exc:
            return self.refused(request, viewer, exc)
        if row is None:
            return self.render(request, "error.html", viewer, title="No such event", status=404,
                               message=f"No event {event_id} in the archive" + ("" if include_spool else
                                                                                  " (nor searched in the spool)."))
        event = present.present(row)
        return self.render(request, "event.html", viewer, event=event, changes=present.changes(event["payload"]),
                           payload_fields=present.other_fields(event["payload"]), raw=present.raw_json(event),
                           target=present.target_text(event), spool=include_spool)

    def export(self, request: Request) -> Response:
        """Every event of the current search as CSV, JSONL or OCSF (`auditlock query --format`), as a download."""
        viewer = self.viewer_of(request)
        if viewer is None:
            return self.unauthorized(request)
        fmt = request.path_params["fmt"]
        if fmt not in EXPORT_FORMATS:
            return self.render(request, "error.html", viewer, title="Not found", message="", status=404)
        require_own_navigation(request)
        try:
            form = SearchForm.from_query(request.query_params)
            event_filter = form.event_filter(dt.datetime.now(dt.UTC))
        except FormError as exc:
            return self.render(request, "search.html", viewer, form=_lenient_form(request), error=str(exc),
                               status=400)
        out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY, mode="w+", encoding="utf-8")  # noqa: SIM115
        try:
            count = self.reader.export(event_filter, fmt, out, include_spool=form.include_spool)
            self.access.viewer(events.EXPORTED, viewer, self.client_ip(request), **form.audit_payload(event_filter),
                               format=fmt, results=count)
        except QueryError as exc:
            out.close()
            return self.render(request, "search.html", viewer, form=form, error=str(exc), status=502)
        except AccessNotRecorded as exc:
            out.close()
            return self.refused(request, viewer, exc)
        out.seek(0)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        suffix = "ocsf.jsonl" if fmt == "ocsf" else fmt
        filename = f"auditlock-{self.config.service}-{stamp}.{suffix}"
        return StreamingResponse(_chunks(out), media_type=EXPORT_FORMATS[fmt],
                                 headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    # --- login and logout -----------------------------------------------------------------------------

    def login_page(self, request: Request) -> Response:
        """The login form (or, when already signed in, the search page)."""
        if self.viewer_of(request) is not None:
            return RedirectResponse(self.base(request) + "/", status_code=303)
        if self.auth.presents_credential(request):
            return self.unauthorized(request)
        return self.login_form(request, status=200)

    async def login(self, request: Request) -> Response:
        """Check the login form; on success start a session and go where the viewer was going."""
        if not self.auth.form_fields:
            return self.unauthorized(request)
        form = await request.form()
        values = {name: value for name, value in form.items() if isinstance(value, str)}
        ip = self.client_ip(request)
        account = self.auth.account(values)  # as the check reads it (a token form names no account)
        if not self.throttle.allows(account, ip):
            return await self.login_throttled(request, ip, values.get("next", ""))
        attempt = await run_in_threadpool(self.auth.login, values)
        if attempt.viewer is None:
            self.throttle.failed(account, ip)
        else:
            self.throttle.succeeded(account)
        try:
            if attempt.viewer is None:
                await run_in_threadpool(self.refusals.record, attempt.actor_id, ip, attempt.reason or "unknown")
                return self.login_form(request, status=401, error="Wrong credentials.",
                                       next_url=values.get("next", ""))
            await run_in_threadpool(self.access.record, events.LOGIN_SUCCEEDED, attempt.actor_id, ip,
                                    method=self.auth.method)
        except AccessNotRecorded as exc:
            return self.refused(request, None, exc)
        self.sessions.start(request.session, attempt.viewer)
        return RedirectResponse(self.base(request) + _safe_next(values.get("next", "")), status_code=303)

    async def login_throttled(self, request: Request, ip: str | None, next_url: str) -> Response:
        """Too many failed logins for this account or address: refused unchecked (429), and recorded."""
        try:
            await run_in_threadpool(self.refusals.record, "anonymous", ip, "throttled")
        except AccessNotRecorded as exc:
            return self.refused(request, None, exc)
        return self.login_form(request, status=429, error="Too many failed sign-ins. Try again in 15 minutes.",
                               next_url=next_url, headers={"Retry-After": "900"})

    async def logout(self, request: Request) -> Response:
        """End the session (recorded as `auth.logout`, then revoked: its cookie is refused from now on)."""
        viewer = self.viewer_of(request)
        if viewer is None and self.auth.presents_credential(request):
            return await run_in_threadpool(self.unauthorized, request)
        if viewer is not None and self.sessions.viewer(request.session) is not None:
            try:
                await run_in_threadpool(self.access.viewer, events.LOGOUT, viewer, self.client_ip(request),
                                        reason="user")
            except AccessNotRecorded as exc:
                return self.refused(request, viewer, exc)
        try:
            await run_in_threadpool(self.sessions.end, request.session)
        except SessionStateError as exc:
            return self.render(request, "error.html", None, title="Signed out here only", message=str(exc),
                               status=503)
        return RedirectResponse(self.base(request) + "/login", status_code=303)

    # --- helpers --------------------------------------------------------------------------------------

    def viewer_of(self, request: Request) -> Viewer | None:
        """The authenticated viewer: by the request itself (token, proxy header), else by the session. A request
        presenting a credential (a bearer token) is judged by it alone, and not checked at all while its account
        or address is throttled (`unauthorized` then records the refusal)."""
        if self.auth.presents_credential(request):
            if not self.throttle.allows(self.auth.method, self.client_ip(request)):
                return None
            viewer = self.auth.from_request(request)
            if viewer is not None:
                self.throttle.succeeded(self.auth.method)
            return viewer
        viewer = self.auth.from_request(request)
        if viewer is not None or not self.auth.form_fields:
            return viewer
        return self.sessions.viewer(request.session)

    def client_ip(self, request: Request) -> str | None:
        """The client's address, through trusted proxies."""
        return self.proxies.client_ip(request)

    def unauthorized(self, request: Request) -> Response:
        """401: the login form (password, token), or a page saying the proxy did not authenticate (header)."""
        refusal = self.credential_failed(request)
        if refusal is not None:
            return refusal
        headers = {"WWW-Authenticate": 'Bearer realm="auditlock"'} if self.auth.method == "token" else None
        if not self.auth.form_fields:
            return self.render(request, "error.html", None, title="Not authenticated", status=401, headers=headers,
                               message="This view is reached through an authenticating proxy, which did not "
                                       "name a user for this request.")
        target = request.url.path.removeprefix(self.base(request)) or "/"
        if request.url.query:
            target += "?" + request.url.query
        return self.login_form(request, status=401, next_url=target, headers=headers)

    def credential_failed(self, request: Request) -> Response | None:
        """A refused request that presented a credential (a bearer token) is a failed login: recorded as
        `auth.login_failed` (reason `bad_bearer_token`, never the token) and counted by the login throttle; while
        throttled, refused unchecked with 429 (reason `throttled`). None when the caller answers (401)."""
        if not self.auth.presents_credential(request):
            return None
        ip = self.client_ip(request)
        throttled = not self.throttle.allows(self.auth.method, ip)
        if not throttled:
            self.throttle.failed(self.auth.method, ip)
        try:
            self.refusals.record("anonymous", ip, "throttled" if throttled else "bad_bearer_token")
        except AccessNotRecorded as exc:
            return self.refused(request, None, exc)
        if throttled:
            return self.render(request, "error.html", None, title="Too many failed sign-ins", status=429,
                               message="Too many failed sign-ins. Try again in 15 minutes.",
                               headers={"Retry-After": "900", "WWW-Authenticate": 'Bearer realm="auditlock"'})
        return None

    def login_form(self, request: Request, *, status: int, error: str | None = None, next_url: str = "",
                   headers: dict[str, str] | None = None) -> Response:
        """The login page."""
        return self.render(request, "login.html", None, status=status, error=error, headers=headers,
                           next_url=_safe_next(next_url), login_fields=self.auth.form_fields)

    def not_own_navigation(self, request: Request, exc: Exception) -> Response:
        """403, recording nothing: another site (or a subresource) asked for a page recorded in the viewer's
        name (`NotOwnNavigation`). The page links to the same URL, for a viewer who did mean to follow it."""
        own_url = request.url.path + ("?" + request.url.query if request.url.query else "")
        return self.render(request, "error.html", None, title="Opened from another site", status=403,
                           message="This page records a search in your name, and the request came from another "
                                   "site, so it was not run. Follow the link below to run it yourself.",
                           continue_url=own_url)

    def refused(self, request: Request, viewer: Viewer | None, exc: AccessNotRecorded) -> Response:
        """503: the access could not be recorded, so nothing is shown."""
        return self.render(request, "error.html", viewer, title="Refused: the access could not be audited",
                           message=str(exc), status=503, headers={"Retry-After": "30"})

    def base(self, request: Request) -> str:
        """The path the view is mounted under (`[ui] root_path`, or the server's root path)."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(self, request: Request, template: str, viewer: Viewer | None, *, status: int = 200,
               headers: dict[str, str] | None = None, **context: Any) -> Response:
        """A page with the shared context (service, viewer, base path, labels)."""
        context.setdefault("fields", FIELDS)
        context.update(service=self.config.service, viewer=viewer, base=self.base(request), labels=LABELS,
                       quick_ranges=QUICK_RANGES, urlencode=urlencode,
                       summary=present.summary, target_text=present.target_text, page_size=self.page_size)
        return self.templates.TemplateResponse(request, template, context, status_code=status, headers=headers)


def _lenient_form(request: Request) -> SearchForm:
    """The submitted values for redisplay when they do not parse (no validation, no page position)."""
    values = {name: request.query_params.get(name, "").strip()[:500] for name in FIELDS}
    return SearchForm({k: v for k, v in values.items() if v}, request.query_params.get("spool") == "1")


def _safe_next(target: str) -> str:
    """A local path to go to after login; anything else (another host, `//x`, a scheme) becomes `/`."""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


def _chunks(out: IO[str]) -> Iterator[bytes]:
    try:
        while chunk := out.read(_EXPORT_CHUNK):
            yield chunk.encode()
    finally:
        out.close()
