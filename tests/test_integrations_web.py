"""The ASGI and WSGI middlewares under real frameworks (Starlette, Flask), writing a real spool."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import flask
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from werkzeug.serving import make_server

import auditlock
from auditlock import EventError
from auditlock.config import Config
from auditlock.integrations import asgi, auth, wsgi
from auditlock.integrations.emit import emit_event
from auditlock.integrations.request import ProxyTrust, RequestBinder, is_sane_request_id, set_request_actor
from tests.support.spool_files import spool_events

PEER = "203.0.113.9"  # an ordinary client on the internet
PROXY = "10.0.0.2"  # a load balancer inside trusted_proxies
TRUSTED = ("10.0.0.0/8",)



def events(config: Config) -> list[dict[str, Any]]:
    """Every event in the test spool."""
    return spool_events(config.spool.dir) if config.spool.dir.exists() else []


def is_uuid7(value: str) -> bool:
    """Whether `value` is a canonical UUIDv7."""
    return uuid.UUID(value).version == 7 and str(uuid.UUID(value)) == value


def user_of_scope(scope: Any) -> str | None:
    """The test apps' 'authentication': the actor id from an x-test-user header."""
    for name, value in scope.get("headers", ()):
        if name == b"x-test-user":
            return str(value.decode())
    return None


async def async_user_of_scope(scope: Any) -> str | None:
    """The same, as a coroutine."""
    return user_of_scope(scope)


def user_of_environ(environ: dict[str, Any]) -> str | None:
    """The WSGI form: the actor id from an x-test-user header."""
    value = environ.get("HTTP_X_TEST_USER")
    return value if isinstance(value, str) else None


# --- Starlette ---------------------------------------------------------------------------------------------


def starlette_app(audit_log: logging.Logger, **options: Any) -> Starlette:
    """A Starlette app whose endpoints emit audit events, behind AuditMiddleware(**options)."""

    def order_updated(order_id: object) -> None:
        emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id, status="paid")

    async def update(request: Request) -> Response:
        order_updated(request.path_params["order_id"])
        bound = auditlock.current_actor()
        return JSONResponse({"actor": bound.id if bound else None})

    def update_in_threadpool(request: Request) -> Response:
        order_updated(request.path_params["order_id"])
        return PlainTextResponse("ok")

    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for n in range(3):
                yield b"chunk\n"
                order_updated(n)

        return StreamingResponse(body())

    async def fail(request: Request) -> Response:
        order_updated(1)
        raise RuntimeError("boom")

    async def login(request: Request) -> Response:
        auth.login_failed(audit_log, reason="bad_password", method="password")
        set_request_actor("user#7")  # authenticated halfway through, as a dependency would
        order_updated(7)
        return PlainTextResponse("ok")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        order_updated(await websocket.receive_text())
        await websocket.close()

    routes = [Route("/orders/{order_id}", update, methods=["POST"]),
              Route("/sync/{order_id}", update_in_threadpool, methods=["POST"]),
              Route("/stream", stream), Route("/fail", fail), Route("/login", login, methods=["POST"]),
              WebSocketRoute("/ws", socket)]
    return Starlette(routes=routes, middleware=[Middleware(asgi.AuditMiddleware, **options)])


def call(app: Any, method: str, path: str, *, peer: str = PEER,
         headers: dict[str, str] | None = None) -> httpx.Response:
    """One request through httpx's ASGI transport, from `peer`."""

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(run())


class TestAsgiBinding:
    def test_request_binds_actor_ip_and_request_id(self, audit_log: logging.Logger, config: Config) -> None:
        """An event in a request carries the actor from the callable, the peer's address and a new UUIDv7 id."""
        app = starlette_app(audit_log, actor=user_of_scope)
        response = call(app, "POST", "/orders/5", headers={"x-test-user": "user#82"})
        assert response.json() == {"actor": "user#82"}
        [event] = events(config)
        assert (event["actor_id"], event["actor_type"], event["actor_ip"]) == ("user#82", "user", PEER)
        assert is_uuid7(event["payload"]["request_id"])
        assert event["payload"]["status"] == "paid"

    def test_async_actor_callable(self, audit_log: logging.Logger, config: Config) -> None:
        """The actor callable may be a coroutine function."""
        app = starlette_app(audit_log, actor=async_user_of_scope)
        call(app, "POST", "/orders/5", headers={"x-test-user": "svc:billing"})
        [event] = events(config)
        assert (event["actor_id"], event["actor_type"]) == ("svc:billing", "service")

    def test_add_middleware(self, audit_log: logging.Logger, config: Config) -> None:
        """`app.add_middleware(AuditMiddleware, actor=...)` works as documented."""
        app = Starlette(routes=[Route("/", lambda request: (emit_event(audit_log, "order.created"),
                                                           PlainTextResponse("ok"))[1])])
        app.add_middleware(asgi.AuditMiddleware, actor=user_of_scope)
        call(app, "GET", "/", headers={"x-test-user": "user#3"})
        assert [e["actor_id"] for e in events(config)] == ["user#3"]

    def test_sync_endpoint_in_threadpool(self, audit_log: logging.Logger, config: Config) -> None:
        """A sync endpoint (run in Starlette's thread pool) sees the request's binding."""
        call(starlette_app(audit_log, actor=user_of_scope), "POST", "/sync/9", headers={"x-test-user": "user#9"})
        assert [(e["actor_id"], e["target_id"]) for e in events(config)] == [("user#9", "9")]

    def test_streaming_body_carries_the_actor(self, audit_log: logging.Logger, config: Config) -> None:
        """Events emitted while a streamed body is produced carry the request's actor and request id."""
        response = call(starlette_app(audit_log, actor=user_of_scope), "GET", "/stream",
                        headers={"x-test-user": "user#4"})
        assert response.text == "chunk\n" * 3
        written = events(config)
        assert [(e["actor_id"], e["target_id"]) for e in written] == [("user#4", "0"), ("user#4", "1"), ("user#4", "2")]
        assert len({e["payload"]["request_id"] for e in written}) == 1

    def test_binding_is_reset_after_the_request(self, audit_log: logging.Logger) -> None:
        """Once the request returns, the caller's context has no actor bound."""
        app = starlette_app(audit_log, actor=user_of_scope)

        async def run() -> tuple[object, object]:
            transport = httpx.ASGITransport(app=app, client=(PEER, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                with auditlock.actor("user#outer"):
                    await client.post("/orders/1", headers={"x-test-user": "user#1"})
                    inside = auditlock.current_actor()
                return inside, auditlock.current_actor()

        inside, after = asyncio.run(run())
        assert inside == auditlock.Actor("user#outer", "user")
        assert after is None

    def test_binding_is_reset_after_an_exception(self, audit_log: logging.Logger, config: Config) -> None:
        """An exception from the app propagates, the event before it is attributed, and the binding is gone."""
        app = starlette_app(audit_log, actor=user_of_scope)

        async def run() -> object:
            transport = httpx.ASGITransport(app=app, client=(PEER, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                with pytest.raises(RuntimeError, match="boom"):
                    await client.get("/fail", headers={"x-test-user": "user#5"})
            return auditlock.current_actor()

        assert asyncio.run(run()) is None
        assert [e["actor_id"] for e in events(config)] == ["user#5"]

    def test_websocket_is_bound(self, audit_log: logging.Logger, config: Config) -> None:
        """A WebSocket connection is bound like a request; a peer that is no address gives actor_ip null."""
        with TestClient(starlette_app(audit_log, actor=user_of_scope)) as client, \
                client.websocket_connect("/ws", headers={"x-test-user": "user#6"}) as websocket:
            websocket.send_text("61")
        event, closed = events(config)  # leaving the TestClient is a lifespan shutdown: the writer closes
        assert closed["event_type"] == "auditlock.writer_closed"
        assert (event["actor_id"], event["target_id"], event["actor_ip"]) == ("user#6", "61", None)

    def test_lifespan_passes_through(self, audit_log: logging.Logger) -> None:
        """Lifespan startup runs with nothing bound."""
        seen: list[object] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            seen.append(auditlock.current_actor())
            yield

        app = Starlette(lifespan=lifespan, middleware=[Middleware(asgi.AuditMiddleware, actor=user_of_scope)])
        with TestClient(app):
            pass
        assert seen == [None]

    def test_actor_callable_must_return_an_id(self, audit_log: logging.Logger) -> None:
        """An actor callable returning something other than a string or None fails the request loudly."""
        app = starlette_app(audit_log, actor=lambda scope: 82)
        with pytest.raises(TypeError, match="return an actor id like 'user:82'"):
            call(app, "POST", "/orders/1")


class TestRequestContext:
    def test_inner_actor_keeps_the_request(self, audit_log: logging.Logger, config: Config) -> None:
        """An actor bound inside a request keeps its ip and request id; an explicit actor_id= keeps the id too."""
        with auditlock.actor(None, ip=PEER, request_id="req-1"), auditlock.actor("user#2"):
            assert auditlock.current_actor() == auditlock.Actor("user#2", "user", PEER, None, "req-1")
            emit_event(audit_log, "order.created")
            emit_event(audit_log, "order.deleted", actor_id="svc:cleanup")
        assert [(e["actor_id"], e["actor_ip"], e["payload"]) for e in events(config)] == [
            ("user#2", PEER, {"request_id": "req-1"}), ("svc:cleanup", PEER, {"request_id": "req-1"})]

    def test_no_request_no_request_id(self, audit_log: logging.Logger, config: Config) -> None:
        """Outside a request an event has no payload.request_id."""
        with auditlock.actor("user#2"):
            emit_event(audit_log, "order.created")
        assert [e["payload"] for e in events(config)] == [{}]

    def test_empty_actor_id_is_refused(self) -> None:
        """An empty actor id is refused when bound, not only when an event is emitted."""
        with pytest.raises(ValueError, match="non-empty string"), auditlock.actor(""):
            pass

    def test_import_auditlock_loads_no_framework(self) -> None:
        """`import auditlock` (and the request module) import no web framework and no Celery."""
        script = ("import sys, auditlock, auditlock.integrations.request, auditlock.integrations.asgi, "
                  "auditlock.integrations.wsgi, auditlock.integrations.auth\n"
                  "print(','.join(m for m in ('starlette', 'flask', 'django', 'celery', 'werkzeug') "
                  "if m in sys.modules) or 'none')")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "none"


class TestAnonymousRequests:
    def test_unattributed_event_is_refused(self, audit_log: logging.Logger, config: Config) -> None:
        """In an anonymous request an event without actor_id raises EventError naming the anonymous request."""
        with pytest.raises(EventError, match="the bound request is anonymous"):
            call(starlette_app(audit_log, actor=user_of_scope), "POST", "/orders/1")
        assert events(config) == []

    def test_failed_login_and_later_actor(self, audit_log: logging.Logger, config: Config) -> None:
        """A failed login is filed under 'anonymous'; set_request_actor then binds the user, keeping ip and id."""
        call(starlette_app(audit_log, actor=user_of_scope), "POST", "/login")
        failed, updated = events(config)
        assert (failed["event_type"], failed["actor_id"], failed["actor_ip"]) == ("auth.login_failed", "anonymous",
                                                                                  PEER)
        assert (updated["actor_id"], updated["actor_ip"]) == ("user#7", PEER)
        assert failed["payload"]["request_id"] == updated["payload"]["request_id"]

    def test_anonymous_actor_option(self, audit_log: logging.Logger, config: Config) -> None:
        """anonymous_actor= files events of anonymous requests under that id."""
        call(starlette_app(audit_log, actor=user_of_scope, anonymous_actor="anonymous"), "POST", "/orders/1")
        assert [e["actor_id"] for e in events(config)] == ["anonymous"]

    def test_set_request_actor_outside_a_request(self) -> None:
        """set_request_actor outside the middleware raises instead of leaking a binding into the thread."""
        with pytest.raises(RuntimeError, match="outside a request"):
            set_request_actor("user#1")


class TestRequestIds:
    def test_kept_from_a_trusted_proxy(self, audit_log: logging.Logger, config: Config) -> None:
        """A sane x-request-id from a trusted proxy is the event's request id."""
        app = starlette_app(audit_log, actor=user_of_scope, trusted_proxies=TRUSTED)
        call(app, "POST", "/orders/1", peer=PROXY, headers={"x-test-user": "user#1", "x-request-id": "req-42.a:b"})
        assert [e["payload"]["request_id"] for e in events(config)] == ["req-42.a:b"]

    def test_replaced_from_an_untrusted_peer(self, audit_log: logging.Logger, config: Config) -> None:
        """A client cannot choose its request id: from an untrusted peer a new UUIDv7 is used."""
        app = starlette_app(audit_log, actor=user_of_scope, trusted_proxies=TRUSTED)
        call(app, "POST", "/orders/1", headers={"x-test-user": "user#1", "x-request-id": "victims-request"})
        [event] = events(config)
        assert is_uuid7(event["payload"]["request_id"])

    def test_from_any_peer_when_asked(self, audit_log: logging.Logger, config: Config) -> None:
        """request_id_from_any_peer=True keeps a sane id from any peer."""
        app = starlette_app(audit_log, actor=user_of_scope, request_id_from_any_peer=True)
        call(app, "POST", "/orders/1", headers={"x-test-user": "user#1", "x-request-id": "upstream-1"})
        assert [e["payload"]["request_id"] for e in events(config)] == ["upstream-1"]

    @pytest.mark.parametrize("value", ["", "a b", "x" * 129, "id\u00e9", "a,b", "<script>"])
    def test_insane_ids_are_replaced(self, value: str) -> None:
        """Empty, long, spaced, non-ASCII or punctuated ids are replaced by a new UUIDv7."""
        binder = RequestBinder(trusted_proxies=TRUSTED, request_id_header="x-request-id",
                               request_id_from_any_peer=True, anonymous_actor=None)
        bound = binder.request_actor("user#1", PROXY, {"x-request-id": value}.get)
        assert bound.request_id is not None
        assert is_uuid7(bound.request_id)

    def test_custom_header(self, audit_log: logging.Logger, config: Config) -> None:
        """request_id_header= names the header to read."""
        app = starlette_app(audit_log, actor=user_of_scope, request_id_header="X-Amzn-Trace-Id",
                            trusted_proxies=TRUSTED)
        call(app, "POST", "/orders/1", peer=PROXY, headers={"x-test-user": "user#1", "x-amzn-trace-id": "Root=1-6"})
        assert [e["payload"]["request_id"] for e in events(config)] == ["Root=1-6"]


class TestRequestIdInResponse:
    def test_asgi_response_names_the_events_request_id(self, audit_log: logging.Logger, config: Config) -> None:
        """The response carries X-Request-ID: the id under which the request's events were written."""
        response = call(starlette_app(audit_log, actor=user_of_scope), "POST", "/orders/5",
                        headers={"x-test-user": "user#82"})
        [event] = events(config)
        assert response.headers.get_list("x-request-id") == [event["payload"]["request_id"]]

    def test_asgi_keeps_the_applications_own_header(self, audit_log: logging.Logger) -> None:
        """An application that sets X-Request-ID itself keeps its value; no second header is added."""

        async def own(request: Request) -> Response:
            return PlainTextResponse("ok", headers={"X-Request-ID": "app-chosen"})

        app = Starlette(routes=[Route("/own", own)], middleware=[Middleware(asgi.AuditMiddleware)])
        assert call(app, "GET", "/own").headers.get_list("x-request-id") == ["app-chosen"]

    def test_asgi_echo_can_be_turned_off(self, audit_log: logging.Logger) -> None:
        """echo_request_id=False leaves the response headers alone."""
        response = call(starlette_app(audit_log, actor=user_of_scope, echo_request_id=False), "POST",
                        "/orders/5", headers={"x-test-user": "user#82"})
        assert "x-request-id" not in response.headers

    def test_wsgi_response_names_the_events_request_id(self, audit_log: logging.Logger, config: Config) -> None:
        """A Flask response carries X-Request-ID: the id under which the request's events were written."""
        client = flask_app(audit_log, actor=user_of_environ).test_client()
        response = client.post("/orders/5", headers={"x-test-user": "user#82"}, environ_base={"REMOTE_ADDR": PEER})
        [event] = events(config)
        assert response.headers.getlist("x-request-id") == [event["payload"]["request_id"]]


class TestForwardedFor:
    def test_ignored_from_an_untrusted_peer(self, audit_log: logging.Logger, config: Config) -> None:
        """X-Forwarded-For from a peer outside trusted_proxies is ignored: the peer is the client."""
        app = starlette_app(audit_log, actor=user_of_scope, trusted_proxies=TRUSTED)
        call(app, "POST", "/orders/1", headers={"x-test-user": "user#1", "x-forwarded-for": "198.51.100.1"})
        assert [e["actor_ip"] for e in events(config)] == [PEER]

    def test_honoured_from_a_trusted_proxy(self, audit_log: logging.Logger, config: Config) -> None:
        """From a trusted proxy, the address it appended is the client."""
        app = starlette_app(audit_log, actor=user_of_scope, trusted_proxies=TRUSTED)
        call(app, "POST", "/orders/1", peer=PROXY, headers={"x-test-user": "user#1",
                                                            "x-forwarded-for": "198.51.100.1"})
        assert [e["actor_ip"] for e in events(config)] == ["198.51.100.1"]

    def test_spoofed_chain(self, audit_log: logging.Logger, config: Config) -> None:
        """Addresses a client put left of the first untrusted hop are never believed."""
        app = starlette_app(audit_log, actor=user_of_scope, trusted_proxies=TRUSTED)
        chain = "10.1.1.1, 192.0.2.66, 198.51.100.7, 10.0.0.3"  # client wrote the first two
        call(app, "POST", "/orders/1", peer=PROXY, headers={"x-test-user": "user#1", "x-forwarded-for": chain})
        assert [e["actor_ip"] for e in events(config)] == ["198.51.100.7"]

    @pytest.mark.parametrize(("peer", "forwarded_for", "client"), [
        ("10.0.0.2", "10.3.0.1, 10.0.0.3", "10.3.0.1"),  # every hop trusted: the leftmost
        ("10.0.0.2", "198.51.100.7, bogus, 10.0.0.3", None),  # a malformed hop: unknown, not a guess
        ("10.0.0.2", "198.51.100.7:4711", "198.51.100.7"),  # a hop with a port
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.0.0.2", "198.51.100.7", "198.51.100.7"),  # IPv4-mapped peer of a dual-stack socket
        ("10.0.0.2", "::ffff:198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "", "10.0.0.2"),  # the proxy itself
        ("10.0.0.2", None, "10.0.0.2"),
        ("testclient", "198.51.100.7", None),  # a peer that is no address is neither trusted nor reported
        (None, "198.51.100.7", None),  # no peer (a Unix socket) is untrusted by default
        ("fe80::1%eth0", None, "fe80::1"),
    ])
    def test_resolution(self, peer: str | None, forwarded_for: str | None, client: str | None) -> None:
        """The client address for a peer and an X-Forwarded-For value, trusting 10.0.0.0/8."""
        assert ProxyTrust(TRUSTED).client_ip(peer, forwarded_for) == client

    def test_unix_socket_peer_can_be_trusted(self) -> None:
        """'unix' in trusted_proxies trusts a peer without an address (nginx to gunicorn over a socket)."""
        assert ProxyTrust(("unix",)).client_ip(None, "198.51.100.7") == "198.51.100.7"
        assert ProxyTrust(("unix",)).client_ip("", "198.51.100.7") == "198.51.100.7"

    def test_default_trusts_loopback_only(self) -> None:
        """By default only loopback peers may forward addresses."""
        trust = ProxyTrust()
        assert trust.client_ip("127.0.0.1", "198.51.100.7") == "198.51.100.7"
        assert trust.client_ip("10.0.0.2", "198.51.100.7") == "10.0.0.2"

    def test_bad_network_is_refused(self) -> None:
        """A malformed trusted_proxies entry fails at construction, naming it."""
        with pytest.raises(ValueError, match=r"trusted_proxies entry '10\.0\.0\.1/8'"):
            ProxyTrust(("10.0.0.1/8",))


class TestHeaderFuzz:
    @given(peer=st.one_of(st.none(), st.text(max_size=50), st.ip_addresses().map(str)),
           forwarded_for=st.one_of(st.none(), st.text(max_size=200),
                                   st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
                                            max_size=8).map(", ".join)))
    def test_client_ip_is_an_address_or_none(self, peer: str | None, forwarded_for: str | None) -> None:
        """Whatever the peer and X-Forwarded-For say, the result is a valid IP address or None, never an error."""
        for trust in (ProxyTrust(TRUSTED), ProxyTrust(("0.0.0.0/0", "::/0", "unix"))):
            client = trust.client_ip(peer, forwarded_for)
            assert client is None or str(ipaddress.ip_address(client)) == client

    @given(value=st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
    def test_request_id_is_always_sane(self, value: str) -> None:
        """Whatever the header holds, the bound request id is sane: the header itself or a new UUIDv7."""
        binder = RequestBinder(trusted_proxies=TRUSTED, request_id_header="x-request-id",
                               request_id_from_any_peer=True, anonymous_actor=None)
        request_id = binder.request_actor(None, PEER, {"x-request-id": value}.get).request_id
        assert request_id is not None
        assert is_sane_request_id(request_id)
        assert request_id == value or is_uuid7(request_id)


# --- Flask (WSGI) -----------------------------------------------------------------------------------------


def flask_app(audit_log: logging.Logger, **options: Any) -> flask.Flask:
    """A Flask app whose views emit audit events, wrapped in wsgi.AuditMiddleware(**options)."""
    app = flask.Flask("shop")
    app.config["TESTING"] = True

    @app.post("/orders/<order_id>")
    def update(order_id: str) -> dict[str, Any]:
        emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id, status="paid")
        return {"ok": True}

    @app.get("/stream")
    def stream() -> flask.Response:
        def body() -> Iterator[bytes]:
            for n in range(3):
                yield b"chunk\n"
                emit_event(audit_log, "order.updated", target_type="Order", target_id=n)

        return flask.Response(body())

    @app.get("/fail")
    def fail() -> str:
        emit_event(audit_log, "order.created", target_type="Order", target_id=1)
        raise RuntimeError("boom")

    app.wsgi_app = wsgi.AuditMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


class TestWsgiBinding:
    def test_request_binds_actor_ip_and_request_id(self, audit_log: logging.Logger, config: Config) -> None:
        """A Flask view's event carries the actor from environ, REMOTE_ADDR and a new UUIDv7 request id."""
        client = flask_app(audit_log, actor=user_of_environ).test_client()
        client.post("/orders/5", headers={"x-test-user": "user#82"}, environ_base={"REMOTE_ADDR": PEER})
        [event] = events(config)
        assert (event["actor_id"], event["actor_ip"], event["target_id"]) == ("user#82", PEER, "5")
        assert is_uuid7(event["payload"]["request_id"])

    def test_forwarded_for_and_request_id_from_a_trusted_proxy(self, audit_log: logging.Logger,
                                                                config: Config) -> None:
        """HTTP_X_FORWARDED_FOR and HTTP_X_REQUEST_ID are honoured from a trusted REMOTE_ADDR only."""
        client = flask_app(audit_log, actor=user_of_environ, trusted_proxies=TRUSTED).test_client()
        headers = {"x-test-user": "user#1", "x-forwarded-for": "192.0.2.66, 198.51.100.7", "x-request-id": "r-1"}
        client.post("/orders/1", headers=headers, environ_base={"REMOTE_ADDR": PROXY})
        client.post("/orders/2", headers=headers, environ_base={"REMOTE_ADDR": PEER})
        trusted, untrusted = events(config)
        assert (trusted["actor_ip"], trusted["payload"]["request_id"]) == ("198.51.100.7", "r-1")
        assert untrusted["actor_ip"] == PEER
        assert is_uuid7(untrusted["payload"]["request_id"])

    def test_streamed_body_carries_the_actor(self, audit_log: logging.Logger, config: Config) -> None:
        """Events emitted while the server consumes a streamed body carry the request's actor."""
        client = flask_app(audit_log, actor=user_of_environ).test_client()
        response = client.get("/stream", headers={"x-test-user": "user#4"})
        assert response.data == b"chunk\n" * 3
        assert auditlock.current_actor() is None
        assert [(e["actor_id"], e["target_id"]) for e in events(config)] == [("user#4", "0"), ("user#4", "1"),
                                                                             ("user#4", "2")]

    def test_actor_set_in_before_request_reaches_the_body(self, audit_log: logging.Logger, config: Config) -> None:
        """set_request_actor in a before_request hook binds the user for the view and its streamed body."""
        app = flask_app(audit_log)
        app.before_request(lambda: (set_request_actor(str(flask.request.headers["x-test-user"])), None)[1])
        response = app.test_client().get("/stream", headers={"x-test-user": "user#8"})
        assert response.data == b"chunk\n" * 3
        assert [e["actor_id"] for e in events(config)] == ["user#8"] * 3
        assert auditlock.current_actor() is None

    def test_binding_is_reset_after_an_exception(self, audit_log: logging.Logger, config: Config) -> None:
        """A view that raises leaves nothing bound; its earlier event is attributed."""
        client = flask_app(audit_log, actor=user_of_environ).test_client()
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/fail", headers={"x-test-user": "user#5"})
        assert auditlock.current_actor() is None
        assert [e["actor_id"] for e in events(config)] == ["user#5"]

    def test_close_runs_under_the_binding(self, audit_log: logging.Logger, config: Config) -> None:
        """The app iterable's close() is called, with the binding still in place; afterwards nothing is bound."""
        closed: list[object] = []

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"ok"

            def close(self) -> None:
                closed.append(auditlock.current_actor())
                emit_event(audit_log, "order.deleted", target_type="Order", target_id=3)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Body()

        middleware = wsgi.AuditMiddleware(app, actor=user_of_environ)
        body = middleware({"REMOTE_ADDR": PEER, "HTTP_X_TEST_USER": "user#3"}, lambda status, headers: None)
        assert auditlock.current_actor() is None
        assert list(body) == [b"ok"]
        body.close()  # type: ignore[attr-defined]
        assert [getattr(a, "id", None) for a in closed] == ["user#3"]
        assert auditlock.current_actor() is None
        assert [(e["event_type"], e["actor_id"], e["actor_ip"]) for e in events(config)] == [
            ("order.deleted", "user#3", PEER)]


# --- Concurrency ------------------------------------------------------------------------------------------

REQUESTS = 50


class TestConcurrentRequests:
    def test_asgi_requests_never_mix(self, audit_log: logging.Logger, config: Config) -> None:
        """50 concurrent ASGI requests by 50 actors, all in flight at once: every event has its request's actor."""
        barrier = asyncio.Barrier(REQUESTS)

        async def update(request: Request) -> Response:
            await barrier.wait()  # every request is inside the app before any emits
            emit_event(audit_log, "order.updated", target_type="Order", target_id=request.path_params["n"])
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/orders/{n}", update, methods=["POST"])],
                        middleware=[Middleware(asgi.AuditMiddleware, actor=user_of_scope, trusted_proxies=TRUSTED)])

        async def run() -> None:
            transport = httpx.ASGITransport(app=app, client=(PROXY, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client, \
                    asyncio.timeout(30):
                responses = await asyncio.gather(*(
                    client.post(f"/orders/{n}", headers={"x-test-user": f"user#{n}",
                                                         "x-forwarded-for": f"198.51.100.{n}"})
                    for n in range(REQUESTS)))
            assert all(r.status_code == 200 for r in responses)

        asyncio.run(run())
        written = events(config)
        assert len(written) == REQUESTS
        for event in written:
            n = event["target_id"]
            assert (event["actor_id"], event["actor_ip"]) == (f"user#{n}", f"198.51.100.{n}")
        assert len({e["payload"]["request_id"] for e in written}) == REQUESTS

    def test_wsgi_requests_on_a_threaded_server_never_mix(self, audit_log: logging.Logger, config: Config) -> None:
        """50 threads against a real threaded werkzeug server, all requests in flight at once, never mix actors."""
        barrier = threading.Barrier(REQUESTS, timeout=30)
        app = flask.Flask("concurrent")

        @app.post("/orders/<n>")
        def update(n: str) -> flask.Response:
            barrier.wait()
            emit_event(audit_log, "order.updated", target_type="Order", target_id=n)

            def body() -> Iterator[bytes]:  # a streamed body emits after the view returned
                yield b"ok"
                emit_event(audit_log, "order.deleted", target_type="Order", target_id=n)

            return flask.Response(body())

        app.wsgi_app = wsgi.AuditMiddleware(app.wsgi_app, actor=user_of_environ)  # type: ignore[method-assign]
        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, name="werkzeug-test-server")
        serving.start()
        statuses: dict[int, int] = {}

        def client(n: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
            connection.request("POST", f"/orders/{n}", headers={"x-test-user": f"user#{n}",
                                                                "x-forwarded-for": f"198.51.100.{n}"})
            response = connection.getresponse()
            response.read()
            statuses[n] = response.status
            connection.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(REQUESTS)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            server.shutdown()
            serving.join()
            server.server_close()
        assert statuses == dict.fromkeys(range(REQUESTS), 200)
        written = events(config)
        assert len(written) == 2 * REQUESTS
        for event in written:
            n = event["target_id"]
            assert (event["actor_id"], event["actor_ip"]) == (f"user#{n}", f"198.51.100.{n}")
        by_request: dict[str, set[str]] = {}
        for event in written:
            by_request.setdefault(event["payload"]["request_id"], set()).add(event["target_id"])
        assert len(by_request) == REQUESTS
        assert all(len(targets) == 1 for targets in by_request.values())
