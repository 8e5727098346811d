"""The request integrations in a real FastAPI application: the actor set in a dependency reaches the endpoint,
whatever thread or task the dependency, the endpoint or the work they start runs in."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Header
from starlette.concurrency import run_in_threadpool

import auditlock
from auditlock.config import Config
from auditlock.integrations import asgi
from auditlock.integrations.emit import emit_event
from auditlock.integrations.request import set_request_actor
from tests.support.spool_files import spool_events

PEER = "203.0.113.9"
REQUESTS = 50


def events(config: Config) -> list[dict[str, Any]]:
    """Every event in the test spool."""
    return spool_events(config.spool.dir) if config.spool.dir.exists() else []


def post(app: FastAPI, path: str, user: str | None = "user#7") -> httpx.Response:
    """One POST through httpx's ASGI transport (the whole ASGI call, background tasks included, completes)."""

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(PEER, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            return await client.post(path, headers={"x-test-user": user} if user else None)

    return asyncio.run(run())


def sync_login(x_test_user: Annotated[str | None, Header()] = None) -> str | None:
    """The most common FastAPI auth dependency: a plain `def`, run by Starlette in a worker thread."""
    if x_test_user:
        set_request_actor(x_test_user)
    return x_test_user


async def async_login(x_test_user: Annotated[str | None, Header()] = None) -> str | None:
    """The same as an `async def` dependency, run in the request's task."""
    if x_test_user:
        set_request_actor(x_test_user)
    return x_test_user


def shop_app(audit_log: logging.Logger, login: Callable[..., Any]) -> FastAPI:
    """A FastAPI app behind AuditMiddleware (no actor callable): the dependency `login` names the actor."""
    app = FastAPI()
    app.add_middleware(asgi.AuditMiddleware)
    user = Depends(login)

    def order_updated(order_id: object) -> None:
        emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id, status="paid")

    @app.post("/async/{order_id}", dependencies=[user])
    async def update_async(order_id: str) -> dict[str, str | None]:
        order_updated(order_id)
        bound = auditlock.current_actor()
        return {"actor": bound.id if bound else None}

    @app.post("/sync/{order_id}", dependencies=[user])
    def update_sync(order_id: str) -> dict[str, str]:
        order_updated(order_id)
        return {"ok": "yes"}

    @app.post("/background/{order_id}", dependencies=[user])
    async def update_later(order_id: str, tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(order_updated, order_id)  # a sync task: run in the thread pool after the response
        tasks.add_task(_async_call, order_updated, f"{order_id}-async")
        return {"ok": "yes"}

    @app.post("/thread/{order_id}", dependencies=[user])
    async def update_in_thread(order_id: str) -> dict[str, str]:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(order_updated, order_id))
        worker.start()
        worker.join(timeout=30)
        return {"ok": "yes"}

    return app


async def _async_call(function: Callable[[str], None], argument: str) -> None:
    function(argument)


class TestActorFromADependency:
    def test_sync_dependency_async_endpoint(self, audit_log: logging.Logger, config: Config) -> None:
        """set_request_actor in a plain `def` dependency (a worker thread) is the actor of the async endpoint."""
        response = post(shop_app(audit_log, sync_login), "/async/1")
        assert response.status_code == 200
        assert response.json() == {"actor": "user#7"}
        [event] = events(config)
        assert (event["actor_id"], event["actor_type"], event["actor_ip"]) == ("user#7", "user", PEER)

    def test_sync_dependency_sync_endpoint(self, audit_log: logging.Logger, config: Config) -> None:
        """A sync dependency and a sync endpoint, each in its own worker-thread call, share the actor."""
        assert post(shop_app(audit_log, sync_login), "/sync/2").status_code == 200
        assert [e["actor_id"] for e in events(config)] == ["user#7"]

    def test_async_dependency(self, audit_log: logging.Logger, config: Config) -> None:
        """An `async def` dependency binds the actor of a sync endpoint too."""
        app = shop_app(audit_log, async_login)
        assert post(app, "/sync/3").status_code == 200
        assert post(app, "/async/4").json() == {"actor": "user#7"}
        assert [e["actor_id"] for e in events(config)] == ["user#7", "user#7"]

    def test_background_tasks(self, audit_log: logging.Logger, config: Config) -> None:
        """Background tasks (sync in the thread pool, async in the request's task) act as the request's user."""
        assert post(shop_app(audit_log, sync_login), "/background/5").status_code == 200
        written = {e["target_id"]: e for e in events(config)}
        assert set(written) == {"5", "5-async"}
        assert {e["actor_id"] for e in written.values()} == {"user#7"}
        assert len({e["payload"]["request_id"] for e in written.values()}) == 1

    def test_thread_started_with_the_requests_context(self, audit_log: logging.Logger, config: Config) -> None:
        """A thread the endpoint starts with `contextvars.copy_context().run` acts as the request's user."""
        assert post(shop_app(audit_log, sync_login), "/thread/6").status_code == 200
        assert [e["actor_id"] for e in events(config)] == ["user#7"]

    def test_anonymous_request_event_is_refused(self, audit_log: logging.Logger, config: Config) -> None:
        """No header, no actor: the endpoint's event is refused (500), not filed under a made-up actor."""
        app = shop_app(audit_log, sync_login)

        with pytest.raises(auditlock.EventError, match="no actor"):
            post(app, "/async/8", user=None)
        assert events(config) == []


class TestActorSetElsewhereInTheRequest:
    def app(self, audit_log: logging.Logger, set_actor: Callable[[], Any]) -> FastAPI:
        """An app whose endpoint calls `set_actor()` (awaitable or not), then emits."""
        app = FastAPI()
        app.add_middleware(asgi.AuditMiddleware)

        @app.post("/orders/{order_id}")
        async def update(order_id: str) -> dict[str, str]:
            result = set_actor()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
            emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id)
            return {"ok": "yes"}

        return app

    def test_run_in_threadpool(self, audit_log: logging.Logger, config: Config) -> None:
        """set_request_actor inside `run_in_threadpool` is seen by the endpoint afterwards."""
        app = self.app(audit_log, lambda: run_in_threadpool(set_request_actor, "user#11"))
        assert post(app, "/orders/1").status_code == 200
        assert [e["actor_id"] for e in events(config)] == ["user#11"]

    def test_thread_started_by_the_request(self, audit_log: logging.Logger, config: Config) -> None:
        """set_request_actor in a thread started with the request's context is seen by the endpoint."""

        def in_thread() -> None:
            worker = threading.Thread(target=contextvars.copy_context().run, args=(set_request_actor, "user#12"))
            worker.start()
            worker.join(timeout=30)

        assert post(self.app(audit_log, in_thread), "/orders/2").status_code == 200
        assert [e["actor_id"] for e in events(config)] == ["user#12"]

    def test_asyncio_task(self, audit_log: logging.Logger, config: Config) -> None:
        """set_request_actor in an asyncio task started by the request is seen by the endpoint."""

        async def in_task() -> None:
            await asyncio.create_task(_async_set("user#13"))

        assert post(self.app(audit_log, in_task), "/orders/3").status_code == 200
        assert [e["actor_id"] for e in events(config)] == ["user#13"]

    def test_with_block_inside_the_request_still_wins(self, audit_log: logging.Logger, config: Config) -> None:
        """`with auditlock.actor(...)` inside the request overrides the request's actor for its block only."""

        def both() -> None:
            set_request_actor("user#14")
            with auditlock.actor("svc:refunds"):
                emit_event(audit_log, "order.refunded", target_type="Order", target_id="0")

        assert post(self.app(audit_log, both), "/orders/4").status_code == 200
        written = events(config)
        assert [(e["actor_id"], e["actor_type"]) for e in written] == [("svc:refunds", "service"),
                                                                      ("user#14", "user")]
        assert written[0]["actor_ip"] == PEER
        assert written[0]["payload"]["request_id"] == written[1]["payload"]["request_id"]


async def _async_set(actor_id: str) -> None:
    set_request_actor(actor_id)


class TestRequestEnd:
    def test_context_kept_after_the_request_has_no_actor(self, audit_log: logging.Logger, config: Config) -> None:
        """A context copied from a request and used after it ended sees no request actor, and cannot set one."""
        kept: list[contextvars.Context] = []
        app = FastAPI()
        app.add_middleware(asgi.AuditMiddleware)

        @app.post("/orders/{order_id}", dependencies=[Depends(sync_login)])
        async def update(order_id: str) -> dict[str, str]:
            kept.append(contextvars.copy_context())
            return {"ok": "yes"}

        assert post(app, "/orders/1").status_code == 200
        assert kept[0].run(auditlock.current_actor) is None
        with pytest.raises(RuntimeError, match="outside a request"):
            kept[0].run(set_request_actor, "user#99")

    def test_nothing_bound_outside_requests(self) -> None:
        """Outside any request there is no actor, and set_request_actor says how to bind one."""
        assert auditlock.current_actor() is None
        with pytest.raises(RuntimeError, match="AuditMiddleware"):
            set_request_actor("user#1")


class TestConcurrentDependencies:
    def test_sync_dependencies_never_mix(self, audit_log: logging.Logger, config: Config) -> None:
        """50 concurrent requests whose sync dependency sets 50 actors: every event has its request's actor."""
        barrier = asyncio.Barrier(REQUESTS)
        app = FastAPI()
        app.add_middleware(asgi.AuditMiddleware)

        @app.post("/orders/{n}", dependencies=[Depends(sync_login)])
        async def update(n: str) -> dict[str, str]:
            await barrier.wait()  # every request has run its dependency before any emits
            emit_event(audit_log, "order.updated", target_type="Order", target_id=n)
            return {"ok": "yes"}

        async def run() -> None:
            transport = httpx.ASGITransport(app=app, client=(PEER, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client, \
                    asyncio.timeout(60):
                responses = await asyncio.gather(*(
                    client.post(f"/orders/{n}", headers={"x-test-user": f"user#{n}"}) for n in range(REQUESTS)))
            assert all(r.status_code == 200 for r in responses)

        asyncio.run(run())
        written = events(config)
        assert len(written) == REQUESTS
        assert all(e["actor_id"] == f"user#{e['target_id']}" for e in written)
        assert len({e["payload"]["request_id"] for e in written}) == REQUESTS
