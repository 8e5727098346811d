"""Pure-ASGI middleware: every audit event of an HTTP or WebSocket request carries its actor, client address and
request id — Starlette, FastAPI, or any ASGI application; no framework is imported.

    app.add_middleware(AuditMiddleware, actor=lambda scope: f"user:{scope['user'].id}"
                       if scope["user"].is_authenticated else None, trusted_proxies=("10.0.0.0/8",))

The binding is a per-request scope (`handler.context.RequestScope`, one object in a contextvar), in place for
the whole application call — including a streamed response body and background tasks, which run inside that
call — and closed when the call returns or raises. Every context copied from the request's (the thread pool of
sync dependencies and endpoints, asyncio tasks) shares that scope, so `set_request_actor` anywhere in the
request is seen everywhere in it. On lifespan shutdown the middleware closes every audit writer of the process
(`spool.shutdown`): a server stopped by SIGTERM still leaves a clean end. Address and request-id rules:
`integrations.request`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from auditlock.integrations.request import DEFAULT_TRUSTED_PROXIES, IPNetwork, RequestBinder, request_binding
from auditlock.spool.shutdown import close_all_writers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ActorOfScope = Callable[[Scope], "str | Awaitable[str | None] | None"]

_BOUND_SCOPES = frozenset({"http", "websocket"})
_SHUTDOWN_DONE = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


class AuditMiddleware:
    """Binds actor, client address and request id around each HTTP / WebSocket request of an ASGI app.

    `actor(scope)` (sync or async) returns the actor id (`"user:82"`) or None for an anonymous request; put the
    middleware inside your authentication middleware so `scope["user"]` is set. An anonymous request binds no
    actor id (`anonymous_actor=None`): its ip and request id are bound, and an event emitted in it must name its
    actor (`actor_id=`, or `set_request_actor`, or `auditlock.actor(...)`) or it is refused — no event is
    filed under a made-up actor. Give `anonymous_actor="anonymous"` to file such events under that id instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        actor: ActorOfScope | None = None,
        trusted_proxies: Iterable[str | IPNetwork] = DEFAULT_TRUSTED_PROXIES,
        request_id_header: str | None = "x-request-id",
        request_id_from_any_peer: bool = False,
        anonymous_actor: str | None = None,
        echo_request_id: bool = True,
    ) -> None:
        self.app = app
        self._actor = actor
        self._binder = RequestBinder(
            trusted_proxies=trusted_proxies, request_id_header=request_id_header,
            request_id_from_any_peer=request_id_from_any_peer, anonymous_actor=anonymous_actor,
            echo_request_id=echo_request_id,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one ASGI call with the request's binding in place; close the writers on lifespan shutdown."""
        if scope["type"] == "lifespan":
            await _closing_on_shutdown(self.app, scope, receive, send)
            return
        if scope["type"] not in _BOUND_SCOPES:
            await self.app(scope, receive, send)
            return
        actor_id = await self._actor_id(scope)
        headers = _Headers(scope.get("headers") or ())
        client = scope.get("client")
        bound = self._binder.request_actor(actor_id, client[0] if client else None, headers.get)
        with request_binding(bound):
            await self.app(scope, receive, self._echoing(send, bound.request_id))

    def _echoing(self, send: Send, request_id: str | None) -> Send:
        """`send`, adding the request id header to the response unless the application set one."""
        name = self._binder.response_header
        if name is None or request_id is None:
            return send
        header = (name.encode("latin-1"), request_id.encode("latin-1"))

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if not any(key.lower() == header[0] for key, _ in headers):
                    message = {**message, "headers": [*headers, header]}
            await send(message)

        return send_with_request_id

    async def _actor_id(self, scope: Scope) -> object:
        if self._actor is None:
            return None
        actor_id = self._actor(scope)
        if inspect.isawaitable(actor_id):
            actor_id = await actor_id
        return actor_id


async def _closing_on_shutdown(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Pass a lifespan call through; on shutdown close every audit writer of the process, after the
    application's own shutdown code (which may still emit events) and before the server hears it is complete.

    uvicorn re-raises SIGTERM after its shutdown, so `atexit` never runs: this is where its writers end cleanly.
    """
    shutting_down = False

    async def receive_noting_shutdown() -> Message:
        nonlocal shutting_down
        message = await receive()
        shutting_down = shutting_down or message["type"] == "lifespan.shutdown"
        return message

    async def send_closing_writers(message: Message) -> None:
        if message["type"] in _SHUTDOWN_DONE:
            close_all_writers()
        await send(message)

    try:
        await app(scope, receive_noting_shutdown, send_closing_writers)
    finally:
        if shutting_down:
            close_all_writers()  # the application ended without reporting; its events still end cleanly


class _Headers:
    """Header lookup over ASGI's raw `(name, value)` byte pairs; repeated headers are joined with commas."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str) -> str | None:
        wanted = name.encode("latin-1")
        values = [value.decode("latin-1") for key, value in self._raw if key.lower() == wanted]
        return ",".join(values) if values else None
