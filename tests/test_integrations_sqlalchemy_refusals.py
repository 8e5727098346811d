"""A change that commits always has its event: what the audit write would refuse after COMMIT is refused before
the database is written — through a real ASGI app with AuditMiddleware, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session, UOWTransaction, sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import auditlock
from auditlock import EventError
from auditlock.config import Config
from auditlock.integrations import asgi
from auditlock.integrations.request import set_request_actor
from auditlock.integrations.sqlalchemy import SessionTracker, track
from tests.support.sqlalchemy_models import (
    INCLUDE,
    MODELS,
    ORDER_TARGET,
    Note,
    Order,
    add_order,
    events,
)

MAX_EVENT_BYTES = 2048


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    """The SQLAlchemy tests' config with a Note target and a small max_event_bytes."""
    targets = {"Order": ORDER_TARGET, "OrderLine": {"fields": ["quantity"]}, "Note": {"fields": ["body"]}}
    return make_config(targets=targets, events={"include": INCLUDE, "max_event_bytes": MAX_EVENT_BYTES})



@pytest.fixture
def tracker(factory: sessionmaker[Session], audit_log: logging.Logger) -> Iterator[SessionTracker]:
    """The integration on the sessionmaker (Order, Customer, OrderLine and Note), removed after the test."""
    with track(factory, logger=audit_log, models={**MODELS, Note: "Note"}) as handle:
        yield handle


def order_count(factory: sessionmaker[Session]) -> int:
    """How many orders the database holds."""
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Order)) or 0


def shop_app(factory: sessionmaker[Session], **options: Any) -> Starlette:
    """A Starlette app behind AuditMiddleware(**options) whose endpoints create and change orders."""

    def create_order(request: Request) -> Response:  # a sync endpoint: Starlette runs it in its thread pool
        if "as" in request.query_params:
            set_request_actor(request.query_params["as"])  # what an authentication dependency does
        with factory.begin() as session:
            session.add(Order(status="new"))
        return PlainTextResponse("created")

    async def cancel_all(request: Request) -> Response:
        with factory.begin() as session:
            session.execute(update(Order).values(status="cancelled"))
        return PlainTextResponse("cancelled")

    routes = [Route("/orders", create_order, methods=["POST"]), Route("/orders/cancel", cancel_all, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(asgi.AuditMiddleware, **options)])


@pytest.mark.usefixtures("tracker")
class TestAnonymousRequest:
    def test_change_in_an_anonymous_request_is_refused_before_the_database(
            self, factory: sessionmaker[Session], config: Config) -> None:
        """Nobody logged in: the flush raises EventError naming the anonymous request, and no row is written."""
        with TestClient(shop_app(factory)) as client, \
                pytest.raises(EventError, match=r"not sent to the database.*anonymous\).*set_request_actor"):
            client.post("/orders")
        with TestClient(shop_app(factory), raise_server_exceptions=False) as client:
            assert client.post("/orders").status_code == 500
        assert order_count(factory) == 0
        assert events(config) == []

    def test_bulk_statement_in_an_anonymous_request_is_refused_before_it_runs(
            self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk UPDATE in an anonymous request raises before it is executed: the rows keep their values."""
        add_order(factory)
        with TestClient(shop_app(factory), raise_server_exceptions=False) as client:
            assert client.post("/orders/cancel").status_code == 500
        with factory() as session:
            assert session.scalars(select(Order.status)).all() == ["new"]
        assert [e["event_type"] for e in events(config)] == ["order.created"]

    def test_actor_bound_during_the_request_commits_with_its_event(
            self, factory: sessionmaker[Session], config: Config) -> None:
        """set_request_actor() in the request makes the change attributable: it commits and is recorded."""
        with TestClient(shop_app(factory)) as client:
            response = client.post("/orders", params={"as": "user:7"})
        assert response.status_code == 200
        assert order_count(factory) == 1
        [created] = events(config)
        assert (created["event_type"], created["actor_id"]) == ("order.created", "user:7")
        assert created["payload"]["request_id"] == response.headers["x-request-id"]

    def test_anonymous_actor_option_files_the_change_under_it(
            self, factory: sessionmaker[Session], config: Config) -> None:
        """With anonymous_actor= the anonymous request is attributable to that id, and its change commits."""
        with TestClient(shop_app(factory, anonymous_actor="anonymous")) as client:
            assert client.post("/orders").status_code == 200
        assert order_count(factory) == 1
        assert [e["actor_id"] for e in events(config)] == ["anonymous"]


@pytest.mark.usefixtures("tracker")
class TestRefusedBeforeTheDatabase:
    def test_anonymous_binding_outside_a_web_app(self, factory: sessionmaker[Session], config: Config) -> None:
        """auditlock.actor(None) binds no one: the flush is refused before the INSERT is sent."""
        statements: list[str] = []
        event.listen(factory.kw["bind"], "before_cursor_execute", lambda *args: statements.append(args[2]))
        with auditlock.actor(None, ip="10.0.0.1"), factory() as session:
            session.add(Order(status="new"))
            with pytest.raises(EventError, match="not sent to the database"):
                session.flush()
        assert not [sql for sql in statements if sql.lstrip().upper().startswith("INSERT")]
        assert order_count(factory) == 0

    def test_actor_the_record_builder_refuses(self, factory: sessionmaker[Session], config: Config) -> None:
        """An actor type the record builder refuses is refused at the flush, not after the commit."""
        with auditlock.actor("user:7", type="robot"), factory() as session:
            session.add(Order(status="new"))
            with pytest.raises(EventError, match="actor_type 'robot'"):
                session.commit()
        assert order_count(factory) == 0
        assert events(config) == []

    def test_event_over_max_event_bytes(self, factory: sessionmaker[Session], config: Config) -> None:
        """A change whose event would exceed [events] max_event_bytes is refused at the flush; nothing commits."""
        with auditlock.actor("user:7"), factory() as session:
            session.add(Note(body="x" * MAX_EVENT_BYTES))
            with pytest.raises(EventError, match="max_event_bytes"):
                session.commit()
        with factory() as session:
            assert session.scalars(select(Note)).all() == []
        assert events(config) == []

    def test_change_made_by_a_later_before_flush_listener(self, factory: sessionmaker[Session],
                                                          config: Config) -> None:
        """An application listener that grows an object after auditlock's check is caught at after_flush: the
        flush fails and rolls back, and the attempt is recorded."""
        def grow(session: Session, _context: UOWTransaction, _instances: object) -> None:
            for obj in session.new:
                if isinstance(obj, Note):
                    obj.body = "y" * MAX_EVENT_BYTES

        event.listen(factory, "before_flush", grow)
        with auditlock.actor("user:7"), factory() as session:
            session.add(Note(body="short"))
            with pytest.raises(EventError, match="max_event_bytes"):
                session.commit()
            session.rollback()
        with factory() as session:
            assert session.scalars(select(Note)).all() == []
        [attempt] = events(config)
        assert (attempt["event_type"], attempt["payload"]["outcome"]) == ("note.create_attempted", "failed")

    def test_audit_logger_that_does_not_log_info(self, factory: sessionmaker[Session], audit_log: logging.Logger,
                                                 config: Config) -> None:
        """An audit logger whose level would silently drop the events refuses the change instead."""
        audit_log.setLevel(logging.WARNING)
        with auditlock.actor("user:7"), factory() as session:
            session.add(Order(status="new"))
            with pytest.raises(EventError, match="level"):
                session.commit()
        assert order_count(factory) == 0

    def test_bulk_delete_with_no_actor(self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk DELETE with nobody bound is refused before it runs."""
        add_order(factory)
        with factory() as session, pytest.raises(EventError, match="no actor"):
            session.execute(delete(Order))
        assert order_count(factory) == 1
