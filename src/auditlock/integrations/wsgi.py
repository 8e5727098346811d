"""WSGI middleware: every audit event of a request carries its actor, client address and request id — Flask,
Django's WSGI application, or any WSGI app; no framework is imported.

    app.wsgi_app = AuditMiddleware(app.wsgi_app, actor=None, trusted_proxies=("10.0.0.0/8",))   # Flask
    application = AuditMiddleware(get_wsgi_application(), trusted_proxies=("10.0.0.0/8",))      # Django

The binding is in place while the application is called and while the server consumes the response iterable
(a streamed body is produced then), and undone after the iterable's `close()` — which the middleware calls on
the application's iterable, inside the binding, so teardown code still sees the actor. Each step enters the
request's scope and leaves it again, so the binding never leaks to whatever a pooled worker thread runs next,
even when a server iterates the response in another context. The actor the application set for the rest of the
request (`set_request_actor`) is held by that scope, so it carries over from the call into the body. Address
and request-id rules: `integrations.request`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from auditlock.handler.context import RequestScope, entered_request
from auditlock.integrations.request import DEFAULT_TRUSTED_PROXIES, IPNetwork, RequestBinder

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
ActorOfEnviron = Callable[[Environ], str | None]


class AuditMiddleware:
    """Binds actor, client address and request id around each request of a WSGI app, body included.

    `actor(environ)` returns the actor id or None (anonymous). Session-based frameworks know the user only
    inside the app: leave `actor` out and call `auditlock.integrations.request.set_request_actor(...)` where the
    framework has authenticated (Flask `before_request`, a Django middleware). Anonymous requests bind ip and
    request id only, as in the ASGI middleware (`anonymous_actor=` files them under a fixed id instead).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        actor: ActorOfEnviron | None = None,
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Call the app with the request's binding in place; the body is consumed under it too."""
        actor_id = self._actor(environ) if self._actor is not None else None
        bound = self._binder.request_actor(actor_id, environ.get("REMOTE_ADDR"), _header_reader(environ))
        scope = RequestScope(bound)
        try:
            with entered_request(scope):
                body = self.app(environ, self._echoing(start_response, bound.request_id))
        except BaseException:
            scope.close()
            raise
        # The actor the application set for the rest of the request (set_request_actor) is in the scope.
        return BoundBody(body, scope)


    def _echoing(self, start_response: StartResponse, request_id: str | None) -> StartResponse:
        """`start_response`, adding the request id header to the response unless the application set one."""
        name = self._binder.response_header
        if name is None or request_id is None:
            return start_response

        def start_with_request_id(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            if not any(key.lower() == name for key, _ in headers):
                headers = [*headers, (name, request_id)]
            return start_response(status, headers, *exc_info)

        return start_with_request_id


class BoundBody:
    """A WSGI response iterable that produces each chunk, and closes, with a request's binding in place."""

    def __init__(self, body: Iterable[bytes], scope: RequestScope) -> None:
        self._body = body
        self._chunks: Iterator[bytes] | None = None
        self._scope = scope

    def __iter__(self) -> BoundBody:
        return self

    def __next__(self) -> bytes:
        with entered_request(self._scope):
            if self._chunks is None:
                self._chunks = iter(self._body)
            return next(self._chunks)

    def close(self) -> None:
        """Close the application's iterable (PEP 3333), under the binding; then the request's scope ends."""
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                with entered_request(self._scope):
                    close()
        finally:
            self._scope.close()


def _header_reader(environ: Environ) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None

    return header
