"""`track(..., capture="wal")` binds the actor that is bound when the rows are written, not only the one bound when
the session's transaction began.

Found by trying capture on the public fastapi/full-stack-fastapi-template (issue #18): its `get_current_user`
dependency loads the user through the request's session — which begins the transaction — and only then calls
`set_request_actor`; every change of an authenticated request was recorded as the middleware's anonymous actor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

import auditlock
from auditlock.integrations.sqlalchemy import track
from tests.support.capture_env import CapturedOrder, CaptureEnv, app_audit_logger


@pytest.fixture
def audit_logger(capture_env: CaptureEnv) -> Iterator[logging.Logger]:
    """The application's audit logger (capture="wal" writes nothing through it, but track() checks it)."""
    with app_audit_logger(capture_env) as logger:
        yield logger


@pytest.fixture
def engine(capture_env: CaptureEnv) -> Iterator[Engine]:
    """An engine on the capture database, set up for capture."""
    capture_env.setup()
    made = create_engine(capture_env.server.url(capture_env.database))
    yield made
    made.dispose()


def _actors(capture_env: CaptureEnv) -> list[tuple[str, str, str | None]]:
    capture_env.capture("--once")
    return [(e["event_type"], e["actor_id"], e["target_id"]) for e in capture_env.events()]


class TestActorBoundAfterBegin:
    """An actor bound after the transaction began (an auth dependency that reads through the same session)."""

    def test_actor_bound_after_a_read_is_the_rows_actor(self, capture_env: CaptureEnv, engine: Engine,
                                                        audit_logger: logging.Logger) -> None:
        """A read begins the transaction with no actor; the insert flushed under the actor bound next is theirs."""
        factory = sessionmaker(engine)
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), factory() as session:
            session.execute(select(CapturedOrder)).all()  # the transaction begins here, no actor bound yet
            with auditlock.actor("user:82"):
                session.add(CapturedOrder(id=1, status="new"))
                session.commit()
        assert _actors(capture_env) == [("order.created", "user:82", "1")]

    def test_actor_changed_in_the_transaction_names_the_later_rows(self, capture_env: CaptureEnv, engine: Engine,
                                                                  audit_logger: logging.Logger) -> None:
        """Rows flushed under the anonymous binding keep it; rows flushed after the user is known are theirs."""
        factory = sessionmaker(engine)
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), factory() as session:
            with auditlock.actor("anonymous"):
                session.add(CapturedOrder(id=1, status="new"))
                session.flush()
            with auditlock.actor("user:82"):
                session.add(CapturedOrder(id=2, status="new"))
                session.commit()
        assert _actors(capture_env) == [("order.created", "anonymous", "1"), ("order.created", "user:82", "2")]

    def test_bulk_and_text_statements_after_the_actor_changed(self, capture_env: CaptureEnv, engine: Engine,
                                                             audit_logger: logging.Logger) -> None:
        """An ORM bulk UPDATE and a text() statement run under the newly bound actor are recorded as theirs."""
        capture_env.sql("INSERT INTO orders (id, status) VALUES (1, 'new'), (2, 'new')")
        factory = sessionmaker(engine)
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), factory() as session:
            session.execute(select(CapturedOrder)).all()
            with auditlock.actor("user:82"):
                session.execute(update(CapturedOrder).where(CapturedOrder.id == 1).values(status="paid"))
            with auditlock.actor("user:83"):
                session.execute(text("UPDATE orders SET status = 'paid' WHERE id = 2"))
            session.commit()
        updates = [a for a in _actors(capture_env) if a[0] == "order.updated"]
        assert updates == [("order.updated", "user:82", "1"), ("order.updated", "user:83", "2")]

    def test_binding_rolled_back_with_a_savepoint_is_bound_again(self, capture_env: CaptureEnv, engine: Engine,
                                                                audit_logger: logging.Logger) -> None:
        """An actor first bound inside a savepoint that rolls back is bound again for the rows after it."""
        factory = sessionmaker(engine)
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), factory() as session:
            session.execute(select(CapturedOrder)).all()
            with auditlock.actor("user:82"):
                savepoint = session.begin_nested()
                session.add(CapturedOrder(id=1, status="new"))
                session.flush()
                savepoint.rollback()
                session.add(CapturedOrder(id=2, status="new"))
                session.commit()
        assert _actors(capture_env) == [("order.created", "user:82", "2")]

    def test_one_actor_message_per_transaction_when_the_actor_stays(self, capture_env: CaptureEnv, engine: Engine,
                                                                   audit_logger: logging.Logger) -> None:
        """Several flushes and statements under one actor write one actor message, at the transaction's begin."""
        factory = sessionmaker(engine)
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), \
                auditlock.actor("user:82"), factory() as session:
            for order_id in (1, 2, 3):
                session.add(CapturedOrder(id=order_id, status="new"))
                session.flush()
            session.execute(update(CapturedOrder).values(status="paid"))
            session.commit()
        capture_env.sql("SELECT pg_create_logical_replication_slot('count_actor_messages', 'test_decoding')")
        # The slot above starts after the commit: count the messages bind_actor writes from now on instead.
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), \
                auditlock.actor("user:82"), factory() as session:
            for order_id in (4, 5):
                session.add(CapturedOrder(id=order_id, status="new"))
                session.flush()
            session.execute(update(CapturedOrder).values(status="shipped"))
            session.commit()
        # The server commits asynchronously: a synchronous commit flushes the WAL past the session's commits.
        capture_env.sql("SET synchronous_commit = local", "SELECT auditlock_capture.flush_wal()")
        rows = capture_env.sql("SELECT data FROM pg_logical_slot_get_changes('count_actor_messages', NULL, NULL)")
        assert sum("auditlock.actor" in row[0] for row in rows) == 1, rows
        capture_env.sql("SELECT pg_drop_replication_slot('count_actor_messages')")


class TestSessionWithoutDefaultBind:
    """A session bound per mapper (`binds=`, no default engine) is bound again on the connections it holds."""

    def test_binds_per_mapper_actor_bound_after_a_read(self, capture_env: CaptureEnv, engine: Engine,
                                                       audit_logger: logging.Logger) -> None:
        """With `binds={Order: engine}` and no `bind`, the insert under the actor bound after a read is theirs."""
        factory = sessionmaker(binds={CapturedOrder: engine})
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), factory() as session:
            session.execute(select(CapturedOrder)).all()
            with auditlock.actor("user:82"):
                session.add(CapturedOrder(id=1, status="new"))
                session.commit()
        assert _actors(capture_env) == [("order.created", "user:82", "1")]


class TestAsyncSessionBinding:
    """An AsyncSession is bound through its sync session: the actor bound after the transaction began too."""

    def test_async_session_actor_bound_after_a_read(self, capture_env: CaptureEnv, engine: Engine,
                                                    audit_logger: logging.Logger) -> None:
        """An async read begins the transaction; the insert committed under the actor bound next is theirs."""
        import asyncio

        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

        async def write() -> None:
            async_engine = create_async_engine(capture_env.server.url(capture_env.database))
            factory = async_sessionmaker(async_engine, expire_on_commit=False)
            with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"):
                async with factory() as session:
                    (await session.execute(select(CapturedOrder))).all()
                    with auditlock.actor("user:82"):
                        session.add(CapturedOrder(id=1, status="new"))
                        await session.commit()
            await async_engine.dispose()

        asyncio.run(write())
        assert _actors(capture_env) == [("order.created", "user:82", "1")]
