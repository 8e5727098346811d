"""`AuditMiddleware` for Django: the authenticated user as the actor of everything the request does.

    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "auditlock.integrations.django.AuditMiddleware", ...]

Place it after `AuthenticationMiddleware`: it reads `request.user` (`await request.auser()` on the async path, so
an async view never touches the database from the event loop) and binds `user:<pk>` with the client address and
the request id, by the rules of `integrations.request` (X-Forwarded-For and an incoming X-Request-ID believed only
from `AUDITLOCK['TRUSTED_PROXIES']`); the id is echoed in the response header. An anonymous request binds its
address and request id but no actor, so a change it makes fails loudly unless `ANONYMOUS_ACTOR` names one. A
login inside the request (`django.contrib.auth.login`) makes the user the actor for the rest of it. Sync and async
views alike: the binding is the request's scope, which Django's thread hand-offs (`sync_to_async`) carry.
Streaming responses are iterated after the middleware returns, outside the binding.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from auditlock.handler.context import Actor
from auditlock.integrations.django.auth_events import actor_id_of
from auditlock.integrations.django.runtime import runtime
from auditlock.integrations.request import RequestBinder, request_binding


class AuditMiddleware:
    """Binds the request's actor, client address and request id for everything the request records."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        settings = runtime().settings
        self.binder = RequestBinder(trusted_proxies=settings.trusted_proxies,
                                    request_id_header=settings.request_id_header, request_id_from_any_peer=False,
                                    anonymous_actor=settings.anonymous_actor)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        bound = self._binding(request, getattr(request, "user", None))
        with request_binding(bound):
            response = self.get_response(request)
        return self._echo(response, bound)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        auser = getattr(request, "auser", None)
        user = await auser() if auser is not None else None
        bound = self._binding(request, user)
        with request_binding(bound):
            response = await self.get_response(request)
        return self._echo(response, bound)

    def _binding(self, request: HttpRequest, user: Any) -> Actor:
        def header(name: str) -> str | None:
            return request.headers.get(name)
        return self.binder.request_actor(actor_id_of(user), request.META.get("REMOTE_ADDR"), header)

    def _echo(self, response: HttpResponseBase, bound: Actor) -> HttpResponseBase:
        if self.binder.response_header and bound.request_id and self.binder.response_header not in response:
            response[self.binder.response_header] = bound.request_id
        return response
