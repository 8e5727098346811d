"""The SQLAlchemy integration against SQLite and a real PostgreSQL, read back from the real spool files."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, delete, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

import auditlock
from auditlock import ConfigError, EventError, SpoolError
from auditlock.config import Config
from auditlock.integrations.sqlalchemy import SessionTracker, default_event_prefix, track
from tests.support.sqlalchemy_models import (
    INCLUDE,
    MODELS,
    ORDER_TARGET,
    SECRET,
    Base,
    Customer,
    Order,
    OrderLine,
    add_order,
    events,
    raw_lines,
    types,
)


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    """The shared test config plus Order.customer_id, an OrderLine target and the integration's event types."""
    return make_config(targets={"Order": ORDER_TARGET, "OrderLine": {"fields": ["quantity"]}},
                       events={"include": INCLUDE})



@pytest.fixture
def tracker(factory: sessionmaker[Session], audit_log: logging.Logger) -> Iterator[SessionTracker]:
    """The integration on the sessionmaker, removed after the test."""
    with track(factory, logger=audit_log, models=MODELS) as handle:
        yield handle


@pytest.mark.usefixtures("tracker")
class TestUnitOfWork:
    def test_created_updated_deleted(self, factory: sessionmaker[Session], config: Config) -> None:
        """Each committed ORM change is one event with the allowlisted before/after and the primary key."""
        order_id = add_order(factory, customer_email="ann@example.com", internal_note=SECRET)
        with auditlock.actor("user#7"), factory.begin() as session:
            order = session.get(Order, order_id)
            assert order is not None
            order.status, order.total = "paid", Decimal("12.00")
        with auditlock.actor("user#8"), factory.begin() as session:
            session.delete(session.get(Order, order_id))
        created, updated, deleted = events(config)
        assert [created["event_type"], updated["event_type"], deleted["event_type"]] == [
            "order.created", "order.updated", "order.deleted"]
        assert {e["target_type"] for e in (created, updated, deleted)} == {"Order"}
        assert {e["target_id"] for e in (created, updated, deleted)} == {str(order_id)}
        changes = created["payload"]["changes"]
        assert changes["status"] == [None, "new"]
        assert changes["total"] == [None, "10.50"]
        assert changes["customer_email"][1].startswith("hmac-sha256:")
        assert updated["payload"] == {"changes": {"status": ["new", "paid"], "total": ["10.50", "12.00"]}}
        assert deleted["payload"]["changes"]["status"] == ["paid", None]
        assert (updated["actor_id"], deleted["actor_id"]) == ("user#7", "user#8")

    def test_update_of_an_expired_object_knows_the_old_value(self, factory: sessionmaker[Session],
                                                              config: Config) -> None:
        """An attribute set on an expired object (after a commit) still gets its before value from the database."""
        with auditlock.actor("user#7"), factory() as session:
            order = Order(status="new")
            session.add(order)
            session.commit()  # expires the object
            order.status = "cancelled"  # set without loading: the session has no old value
            session.commit()
        assert events(config)[1]["payload"] == {"changes": {"status": ["new", "cancelled"]}}

    def test_composite_primary_key(self, factory: sessionmaker[Session], config: Config) -> None:
        """A composite key becomes 'part:part' and the snake-case prefix names the event."""
        order_id = add_order(factory)
        with auditlock.actor("user#7"), factory.begin() as session:
            session.add(OrderLine(order_id=order_id, line_no=2, quantity=3))
        line = events(config)[-1]
        assert (line["event_type"], line["target_type"], line["target_id"]) == (
            "order_line.created", "OrderLine", f"{order_id}:2")
        assert line["payload"] == {"changes": {"quantity": [None, 3]}}

    def test_relationship_change_is_its_foreign_key(self, factory: sessionmaker[Session], config: Config) -> None:
        """Re-pointing a many-to-one shows as the allowlisted foreign key's change, old value read from the database."""
        with auditlock.actor("user#7"), factory() as session:
            ann, bob = (Customer(name=n, email=f"{n}@example.com", password_hash="x") for n in ("ann", "bob"))
            order = Order(status="new", customer=ann)
            session.add_all([ann, bob, order])
            session.commit()  # expires everything: the old foreign key is no longer in the session
            order.customer = bob
            session.commit()
            ids = (ann.id, bob.id)
        assert events(config)[-1]["payload"] == {"changes": {"customer_id": list(ids)}}

    def test_nothing_is_written_before_commit(self, factory: sessionmaker[Session], config: Config) -> None:
        """A flush alone writes no event; the commit writes them."""
        with auditlock.actor("user#7"), factory() as session:
            session.add(Order(status="new"))
            session.flush()
            session.get(Order, 1)
            assert events(config) == []
            session.commit()
        assert types(config) == ["order.created"]

    def test_non_allowlisted_columns_never_reach_the_spool(self, factory: sessionmaker[Session],
                                                           config: Config) -> None:
        """Neither the value nor the name of a column outside the allowlist is in the spool's bytes."""
        with auditlock.actor("user#7"), factory() as session:
            customer = Customer(name="Ann", email="ann@example.com", password_hash=f"hash-{SECRET}")
            session.add(customer)
            session.commit()
            customer.password_hash = f"new-{SECRET}"
            session.commit()
            session.delete(customer)
            session.commit()
        assert types(config) == ["customer.created", "customer.updated", "customer.deleted"]
        assert events(config)[1]["payload"] == {"changes": {}}  # who touched the record, not what it holds
        spool_bytes = b"\n".join(raw_lines(config))
        assert SECRET.encode() not in spool_bytes
        assert b"password_hash" not in spool_bytes
        assert b"ann@example.com" not in spool_bytes  # email is an hmac field

    def test_no_actor_means_no_database_write(self, factory: sessionmaker[Session], config: Config) -> None:
        """A tracked change with no actor bound raises EventError before the flush reaches the database."""
        with factory() as session:
            session.add(Order(status="new"))
            with pytest.raises(EventError, match="no actor"):
                session.commit()
        with factory() as session:
            assert session.scalars(select(Order)).all() == []
        assert events(config) == []


@pytest.mark.usefixtures("tracker")
class TestRollback:
    def test_rollback_leaves_attempts_and_no_success(self, factory: sessionmaker[Session], config: Config) -> None:
        """Flushed-then-rolled-back changes are written as <verb>_attempted with outcome rolled_back."""
        order_id = add_order(factory)
        with auditlock.actor("user#7"), factory() as session:
            order = session.get(Order, order_id)
            assert order is not None
            order.status = "refunded"
            session.add(Order(status="new"))
            session.flush()
            session.rollback()
        attempts = events(config)[1:]
        assert sorted(e["event_type"] for e in attempts) == ["order.create_attempted", "order.update_attempted"]
        update_attempt = next(e for e in attempts if e["event_type"] == "order.update_attempted")
        assert update_attempt["payload"] == {"changes": {"status": ["new", "refunded"]}, "outcome": "rolled_back"}
        assert update_attempt["target_id"] == str(order_id)
        assert types(config).count("order.updated") == 0

    def test_closing_without_commit_is_a_rollback(self, factory: sessionmaker[Session], config: Config) -> None:
        """A session closed with flushed, uncommitted changes leaves attempt events."""
        with auditlock.actor("user#7"), factory() as session:
            session.add(Order(status="new"))
            session.flush()
        assert types(config) == ["order.create_attempted"]

    def test_failing_flush_leaves_a_failed_attempt(self, factory: sessionmaker[Session], config: Config) -> None:
        """A constraint violation during flush leaves an attempt naming the error class, not the SQL parameters."""
        with auditlock.actor("user#7"), factory.begin() as session:
            session.add(Customer(name="Ann", email="ann@example.com", password_hash="x"))
        with auditlock.actor("user#7"), factory() as session:
            session.add(Customer(name="Bob", email="ann@example.com", password_hash=f"hash-{SECRET}"))
            with pytest.raises(IntegrityError):
                session.commit()
            session.rollback()
        created, attempt = events(config)
        assert (created["event_type"], attempt["event_type"]) == ("customer.created", "customer.create_attempted")
        assert attempt["target_id"] is None
        assert attempt["payload"]["outcome"] == "failed"
        assert attempt["payload"]["error"] == "IntegrityError"
        assert attempt["payload"]["changes"]["name"] == [None, "Bob"]
        assert SECRET.encode() not in b"\n".join(raw_lines(config))

    def test_rolled_back_savepoint_keeps_the_outer_transaction(self, factory: sessionmaker[Session],
                                                                config: Config) -> None:
        """Changes in a rolled-back savepoint become attempts; the outer transaction's commit still records its own."""
        order_id = add_order(factory)
        with auditlock.actor("user#7"), factory() as session:
            order = session.get(Order, order_id)
            assert order is not None
            order.status = "paid"
            nested = session.begin_nested()
            session.add(Order(status="nested"))
            session.flush()
            nested.rollback()
            with session.begin_nested():
                session.add(Order(status="kept"))
            assert types(config) == ["order.created", "order.create_attempted"]
            session.commit()
        written = events(config)[1:]
        assert [e["event_type"] for e in written] == ["order.create_attempted", "order.updated", "order.created"]
        assert written[0]["payload"]["changes"]["status"] == [None, "nested"]
        assert written[2]["payload"]["changes"]["status"] == [None, "kept"]

    def test_failing_flush_in_a_savepoint(self, factory: sessionmaker[Session], config: Config) -> None:
        """A constraint violation inside a savepoint fails only the savepoint; the outer commit is recorded."""
        with auditlock.actor("user#7"), factory() as session:
            session.add(Customer(name="Ann", email="ann@example.com", password_hash="x"))
            session.flush()
            with pytest.raises(IntegrityError), session.begin_nested():
                session.add(Customer(name="Bob", email="ann@example.com", password_hash="x"))
            session.commit()
        attempt, created = events(config)
        assert (attempt["event_type"], attempt["payload"]["outcome"]) == ("customer.create_attempted", "failed")
        assert attempt["payload"]["changes"]["name"] == [None, "Bob"]
        assert (created["event_type"], created["payload"]["changes"]["name"]) == ("customer.created", [None, "Ann"])

    def test_released_savepoint_in_a_rolled_back_transaction(self, factory: sessionmaker[Session],
                                                             config: Config) -> None:
        """A released savepoint's changes follow the outer transaction: rolled back, they are attempts."""
        with auditlock.actor("user#7"), factory() as session:
            with session.begin_nested():
                session.add(Order(status="new"))
            session.rollback()
        assert types(config) == ["order.create_attempted"]


@pytest.mark.usefixtures("tracker")
class TestBulk:
    def test_bulk_update(self, factory: sessionmaker[Session], config: Config) -> None:
        """One event per statement: WHERE with parameter names, SET column names, allowlisted values, row count."""
        matching = [add_order(factory, internal_note=f"where-{SECRET}") for _ in range(2)]
        add_order(factory)
        with auditlock.actor("user#7"), factory.begin() as session:
            result = session.execute(update(Order).where(Order.internal_note == f"where-{SECRET}")
                                     .values(status="shipped", internal_note=f"set-{SECRET}"))
            assert result.rowcount == 2  # type: ignore[attr-defined]
        bulk = events(config)[-1]
        assert (bulk["event_type"], bulk["target_type"], bulk["target_id"]) == ("order.bulk_updated", "Order", None)
        assert sorted(bulk["payload"].pop("ids"), key=int) == [str(i) for i in matching]
        assert bulk["payload"] == {"criteria": "orders.internal_note = :internal_note_1",
                                   "columns": ["internal_note", "status"], "status": "shipped", "rowcount": 2,
                                   "ids_truncated": False}
        assert SECRET.encode() not in b"\n".join(raw_lines(config))

    def test_bulk_delete(self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk DELETE records its criteria, how many rows it removed and their primary keys."""
        ids = [add_order(factory) for _ in range(3)]
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(delete(Order).where(Order.id.in_(ids[:2])))
        bulk = events(config)[-1]
        assert bulk["event_type"] == "order.bulk_deleted"
        assert sorted(bulk["payload"].pop("ids"), key=int) == [str(i) for i in ids[:2]]
        assert bulk["payload"] == {"criteria": "orders.id IN (:id_1)", "columns": [], "rowcount": 2,
                                   "ids_truncated": False}

    def test_bulk_insert(self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk INSERT of parameter sets is one bulk_created event with its columns and row count."""
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(insert(Order), [{"status": "a", "internal_note": SECRET}, {"status": "b"}])
        [bulk] = events(config)
        assert bulk["event_type"] == "order.bulk_created"
        assert bulk["payload"] == {"columns": ["internal_note", "status"], "rowcount": 2}

    def test_bulk_update_by_primary_key_and_core_statements(self, factory: sessionmaker[Session],
                                                             config: Config) -> None:
        """UPDATE with parameter sets and a Core update(table) through the session are captured; text() is not."""
        ids = [add_order(factory) for _ in range(2)]
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(update(Order), [{"id": ids[0], "status": "a"}, {"id": ids[1], "status": "b"}])
            session.execute(update(Order.__table__).where(Order.__table__.c.id == ids[0]).values(status="c"))
            session.execute(text("UPDATE orders SET status = 'raw'"))
        by_key, core = events(config)[2:]
        assert by_key["payload"] == {"criteria": "primary key of each of 2 parameter sets", "columns": ["status"],
                                     "rowcount": None, "ids": None, "ids_unknown": "parameter_sets"}
        assert core["payload"] == {"criteria": "orders.id = :id_1", "columns": ["status"], "status": "c",
                                   "rowcount": 1, "ids": [str(ids[0])], "ids_truncated": False}

    def test_rolled_back_bulk_update_is_an_attempt(self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk statement whose transaction rolls back leaves bulk_update_attempted, not bulk_updated."""
        add_order(factory)
        with auditlock.actor("user#7"), factory() as session:
            session.execute(update(Order).values(status="void"))
            session.rollback()
        attempt = events(config)[-1]
        assert attempt["event_type"] == "order.bulk_update_attempted"
        assert attempt["payload"]["outcome"] == "rolled_back"
        assert attempt["payload"]["rowcount"] == 1
        assert "order.bulk_updated" not in types(config)

    def test_failing_bulk_statement_is_an_attempt(self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk statement that fails leaves a failed attempt at once, with the error class."""
        with auditlock.actor("user#7"), factory.begin() as session:
            session.add_all([Customer(name="A", email="a@example.com", password_hash="x"),
                             Customer(name="B", email="b@example.com", password_hash="x")])
        with auditlock.actor("user#7"), factory() as session:
            with pytest.raises(IntegrityError):
                session.execute(update(Customer).values(email=f"same-{SECRET}@example.com"))
            session.rollback()
        attempt = events(config)[-1]
        assert attempt["event_type"] == "customer.bulk_update_attempted"
        assert attempt["payload"]["outcome"] == "failed"
        assert attempt["payload"]["error"] == "IntegrityError"
        assert attempt["payload"]["email"].startswith("hmac-sha256:")
        assert SECRET.encode() not in b"\n".join(raw_lines(config))


class TestSpoolFailureAfterCommit:
    def test_spool_error_reaches_the_caller_after_the_commit(
            self, factory: sessionmaker[Session], tracker: SessionTracker, config: Config) -> None:
        """When the spool cannot take the events the commit has happened, and SpoolError says so."""
        config.spool.dir.parent.mkdir(parents=True, exist_ok=True)
        config.spool.dir.write_text("not a directory")
        with auditlock.actor("user#7"), factory() as session:
            session.add(Order(status="new"))
            with pytest.raises(SpoolError) as raised:
                session.commit()
            assert "was COMMITTED" in "\n".join(raised.value.__notes__)
            assert "order.created Order#1" in "\n".join(raised.value.__notes__)
            assert session.scalars(select(Order.status)).all() == ["new"]  # the session is still usable


class TestTrack:
    def test_untrack_stops_recording(self, factory: sessionmaker[Session], audit_log: logging.Logger,
                                     config: Config) -> None:
        """After untrack() (twice is fine) nothing more is recorded."""
        handle = track(factory, logger=audit_log, models=[Order])
        handle.untrack()
        handle.untrack()
        add_order(factory)
        assert events(config) == []

    def test_one_session_and_a_prefix_override(self, engine: Engine, audit_log: logging.Logger,
                                               config: Config) -> None:
        """A single Session can be tracked, and event_prefixes renames a model's events."""
        with auditlock.actor("user#7"), Session(engine) as session, \
                track(session, logger=audit_log, models=[Order], event_prefixes={Order: "sales_order"}):
            session.add(Order(status="new"))
            session.commit()
        assert types(config) == ["sales_order.created"]

    def test_structlog_adapter(self, factory: sessionmaker[Session], config: Config,
                               closing: Callable[[Any], Any]) -> None:
        """With a structlog logger the config is found in its AuditProcessor and events go to the same spool."""
        structlog.configure(processors=[closing(auditlock.AuditProcessor(config))], cache_logger_on_first_use=False)
        try:
            with track(factory, logger=structlog.get_logger(), models=MODELS):
                add_order(factory)
        finally:
            structlog.reset_defaults()
        assert types(config) == ["order.created"]

    def test_configuration_problems_are_reported_together(self, make_config: Callable[..., Config],
                                                          audit_log: logging.Logger) -> None:
        """Every model's unmatched event types (one line each) and missing sections fail track() together."""
        narrow = make_config(events={"include": ["order.created", "order.updated", "order.deleted"]})
        with pytest.raises(ConfigError) as raised:
            track(Session, logger=audit_log, config=narrow, models={Order: "Order", OrderLine: "OrderLine"})
        message = str(raised.value)
        assert "9 event types of Order (" in message
        assert "add 'order.*'" in message
        assert "event types of OrderLine" in message  # checked even though its section is missing too
        assert "[targets.OrderLine] is missing" in message

    def test_prefix_rule(self) -> None:
        """The default prefix is the target type in snake case."""
        assert [default_event_prefix(t) for t in ("Order", "OrderLine", "HTTPLog")] == [
            "order", "order_line", "httplog"]


AsyncBody = Callable[[AsyncEngine], Awaitable[Any]]


@pytest.fixture(params=["sqlite", "postgresql"])
def run_async(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[AsyncBody], Any]:
    """Run `body(engine)` in its own event loop on a fresh async engine with the schema created; its result.

    SQLite through aiosqlite (a file in tmp_path), PostgreSQL through psycopg 3's async driver.
    """
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    else:
        url = make_url(request.getfixturevalue("postgres_url")).set(
            drivername="postgresql+psycopg_async").render_as_string(hide_password=False)

    def run(body: AsyncBody) -> Any:
        async def main() -> Any:
            engine = create_async_engine(url)
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(Base.metadata.create_all)
                return await body(engine)
            finally:
                await engine.dispose()

        return asyncio.run(main())

    return run


async def add_order_async(maker: async_sessionmaker[AsyncSession], **values: Any) -> int:
    """Insert an order as user#7 through an AsyncSession and return its id."""
    with auditlock.actor("user#7"):
        async with maker.begin() as session:
            order = Order(**{"status": "new", "total": Decimal("10.50"), **values})
            session.add(order)
            await session.flush()
            return order.id


class TestAsyncSession:
    def test_created_updated_deleted(self, run_async: Callable[[AsyncBody], Any], audit_log: logging.Logger,
                                     config: Config) -> None:
        """Through an async_sessionmaker each committed change is one event with its diff and the coroutine's actor."""
        async def body(engine: AsyncEngine) -> int:
            maker = async_sessionmaker(engine, expire_on_commit=False)
            with track(maker, logger=audit_log, models=MODELS):
                order_id = await add_order_async(maker, customer_email="ann@example.com", internal_note=SECRET)
                with auditlock.actor("user#7"):
                    async with maker.begin() as session:
                        order = await session.get(Order, order_id)
                        assert order is not None
                        order.status, order.total = "paid", Decimal("12.00")
                with auditlock.actor("user#8"):
                    async with maker.begin() as session:
                        await session.delete(await session.get(Order, order_id))
            return order_id

        order_id = run_async(body)
        created, updated, deleted = events(config)
        assert [created["event_type"], updated["event_type"], deleted["event_type"]] == [
            "order.created", "order.updated", "order.deleted"]
        assert {e["target_id"] for e in (created, updated, deleted)} == {str(order_id)}
        assert created["payload"]["changes"]["status"] == [None, "new"]
        assert created["payload"]["changes"]["customer_email"][1].startswith("hmac-sha256:")
        assert updated["payload"] == {"changes": {"status": ["new", "paid"], "total": ["10.50", "12.00"]}}
        assert deleted["payload"]["changes"]["status"] == ["paid", None]
        assert [e["actor_id"] for e in (created, updated, deleted)] == ["user#7", "user#7", "user#8"]
        assert SECRET.encode() not in b"\n".join(raw_lines(config))

    def test_nothing_is_written_before_commit(self, run_async: Callable[[AsyncBody], Any],
                                              audit_log: logging.Logger, config: Config) -> None:
        """A flush alone writes no event; `await session.commit()` writes them."""
        seen: list[list[str]] = []

        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine)
            with track(maker, logger=audit_log, models=MODELS), auditlock.actor("user#7"):
                async with maker() as session:
                    session.add(Order(status="new"))
                    await session.flush()
                    seen.append(types(config))
                    await session.commit()
                    seen.append(types(config))

        run_async(body)
        assert seen == [[], ["order.created"]]

    def test_expired_object_old_value_is_read_in_the_greenlet(self, run_async: Callable[[AsyncBody], Any],
                                                              audit_log: logging.Logger, config: Config) -> None:
        """An attribute set on an expired object gets its before value from the SELECT run inside the flush."""
        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine, expire_on_commit=False)
            with track(maker, logger=audit_log, models=MODELS), auditlock.actor("user#7"):
                async with maker() as session:
                    order = Order(status="new")
                    session.add(order)
                    await session.commit()
                    session.expire(order)
                    order.status = "cancelled"  # set without loading: the session has no old value
                    await session.commit()

        run_async(body)
        assert events(config)[1]["payload"] == {"changes": {"status": ["new", "cancelled"]}}

    def test_rollback_and_close_leave_attempts(self, run_async: Callable[[AsyncBody], Any],
                                               audit_log: logging.Logger, config: Config) -> None:
        """`await rollback()`, an exception leaving `maker.begin()`, and `close()` without commit leave attempts."""
        async def abort(maker: async_sessionmaker[AsyncSession]) -> None:
            async with maker.begin() as session:
                session.add(Order(status="aborted"))
                await session.flush()
                raise LookupError

        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine, expire_on_commit=False)
            with track(maker, logger=audit_log, models=MODELS):
                order_id = await add_order_async(maker)
                with auditlock.actor("user#7"):
                    async with maker() as session:
                        order = await session.get(Order, order_id)
                        assert order is not None
                        order.status = "refunded"
                        await session.flush()
                        await session.rollback()
                    with pytest.raises(LookupError):
                        await abort(maker)
                    async with maker() as session:
                        session.add(Order(status="closed"))
                        await session.flush()

        run_async(body)
        created, refunded, aborted, closed = events(config)
        assert created["event_type"] == "order.created"
        assert refunded["event_type"] == "order.update_attempted"
        assert refunded["payload"] == {"changes": {"status": ["new", "refunded"]}, "outcome": "rolled_back"}
        assert [aborted["event_type"], closed["event_type"]] == ["order.create_attempted"] * 2
        assert [aborted["payload"]["outcome"], closed["payload"]["outcome"]] == ["rolled_back"] * 2
        assert "order.updated" not in types(config)

    def test_failing_flush_names_the_error(self, run_async: Callable[[AsyncBody], Any],
                                           audit_log: logging.Logger, config: Config) -> None:
        """A constraint violation in `await commit()` leaves a failed attempt with the exception's class name."""
        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine)
            with track(maker, logger=audit_log, models=MODELS), auditlock.actor("user#7"):
                async with maker.begin() as session:
                    session.add(Customer(name="Ann", email="ann@example.com", password_hash="x"))
                async with maker() as session:
                    session.add(Customer(name="Bob", email="ann@example.com", password_hash=f"hash-{SECRET}"))
                    with pytest.raises(IntegrityError):
                        await session.commit()
                    await session.rollback()

        run_async(body)
        created, attempt = events(config)
        assert (created["event_type"], attempt["event_type"]) == ("customer.created", "customer.create_attempted")
        assert attempt["payload"]["outcome"] == "failed"
        assert attempt["payload"]["error"] == "IntegrityError"
        assert SECRET.encode() not in b"\n".join(raw_lines(config))

    def test_bulk_update(self, run_async: Callable[[AsyncBody], Any], audit_log: logging.Logger,
                         config: Config) -> None:
        """`await session.execute(update(...))` is one bulk_updated event with criteria, columns and row count."""
        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine)
            with track(maker, logger=audit_log, models=MODELS):
                for note in (f"where-{SECRET}", f"where-{SECRET}", None):
                    await add_order_async(maker, internal_note=note)
                with auditlock.actor("user#9"):
                    async with maker.begin() as session:
                        result = await session.execute(update(Order).where(Order.internal_note == f"where-{SECRET}")
                                                       .values(status="shipped"))
                        assert result.rowcount == 2  # type: ignore[attr-defined]
                    async with maker() as session:
                        await session.execute(delete(Order))
                        await session.rollback()

        run_async(body)
        bulk, attempt = events(config)[3:]
        assert (bulk["event_type"], bulk["target_id"], bulk["actor_id"]) == ("order.bulk_updated", None, "user#9")
        assert len(bulk["payload"].pop("ids")) == 2
        assert bulk["payload"] == {"criteria": "orders.internal_note = :internal_note_1", "columns": ["status"],
                                   "status": "shipped", "rowcount": 2, "ids_truncated": False}
        assert (attempt["event_type"], attempt["payload"]["outcome"]) == ("order.bulk_delete_attempted",
                                                                          "rolled_back")
        assert SECRET.encode() not in b"\n".join(raw_lines(config))

    def test_actor_is_per_task(self, run_async: Callable[[AsyncBody], Any], audit_log: logging.Logger,
                               config: Config) -> None:
        """Concurrent tasks, each with its own actor bound, get their own actor; no actor means no database write."""
        async def worker(maker: async_sessionmaker[AsyncSession], actor_id: str, turn: asyncio.Event,
                         done: asyncio.Event) -> None:
            with auditlock.actor(actor_id):
                await turn.wait()  # both actors are bound, in their own tasks, while each one writes
                async with maker.begin() as session:
                    session.add(Order(status=actor_id))
            done.set()

        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine)
            with track(maker, logger=audit_log, models=MODELS):
                first, second, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
                first.set()
                await asyncio.gather(worker(maker, "user#b", second, finished), worker(maker, "user#a", first, second))
                async with maker() as session:
                    session.add(Order(status="nobody"))
                    with pytest.raises(EventError, match="no actor"):
                        await session.commit()
                    await session.rollback()
                    assert (await session.scalars(select(Order.status).order_by(Order.id))).all() == [
                        "user#a", "user#b"]

        run_async(body)
        assert [(e["actor_id"], e["payload"]["changes"]["status"][1]) for e in events(config)] == [
            ("user#a", "user#a"), ("user#b", "user#b")]

    def test_async_session_scoped_session_and_configured_sync_maker(
            self, run_async: Callable[[AsyncBody], Any], audit_log: logging.Logger, config: Config) -> None:
        """One AsyncSession, an async_scoped_session and a maker with its own sync sessionmaker can each be tracked."""
        async def body(engine: AsyncEngine) -> None:
            with auditlock.actor("user#7"):
                async with AsyncSession(engine) as session:
                    with track(session, logger=audit_log, models=[Order], event_prefixes={Order: "sales_order"}):
                        session.add(Order(status="one"))
                        await session.commit()
                sync_maker = sessionmaker()
                maker = async_sessionmaker(engine, sync_session_class=sync_maker)
                with track(maker, logger=audit_log, models=MODELS):
                    assert maker.kw["sync_session_class"] is sync_maker  # the application's own: used as is
                    async with maker.begin() as session:
                        session.add(Order(status="two"))
                scoped = async_scoped_session(async_sessionmaker(engine), scopefunc=asyncio.current_task)
                with track(scoped, logger=audit_log, models=MODELS):
                    scoped.add(Order(status="three"))
                    await scoped.commit()
                    await scoped.remove()

        run_async(body)
        assert [(e["event_type"], e["payload"]["changes"]["status"][1]) for e in events(config)] == [
            ("sales_order.created", "one"), ("order.created", "two"), ("order.created", "three")]

    def test_only_the_tracked_maker_and_untrack(self, run_async: Callable[[AsyncBody], Any],
                                                audit_log: logging.Logger, config: Config) -> None:
        """Sessions of another async_sessionmaker are not tracked, and after untrack() nothing more is recorded."""
        async def body(engine: AsyncEngine) -> None:
            tracked, other = async_sessionmaker(engine), async_sessionmaker(engine)
            handle = track(tracked, logger=audit_log, models=MODELS)
            with auditlock.actor("user#7"):
                for maker, status in ((tracked, "tracked"), (other, "other")):
                    async with maker.begin() as session:
                        session.add(Order(status=status))
                handle.untrack()
                async with tracked.begin() as session:
                    session.add(Order(status="after"))

        run_async(body)
        assert [e["payload"]["changes"]["status"][1] for e in events(config)] == ["tracked"]

    def test_async_session_class_tracks_every_session(self, run_async: Callable[[AsyncBody], Any],
                                                      audit_log: logging.Logger, config: Config) -> None:
        """The AsyncSession class means its sync_session_class: every session, whichever maker made it."""
        async def body(engine: AsyncEngine) -> None:
            with track(AsyncSession, logger=audit_log, models=MODELS), auditlock.actor("user#7"):
                async with async_sessionmaker(engine).begin() as session:
                    session.add(Order(status="any"))

        run_async(body)
        assert types(config) == ["order.created"]

    def test_spool_error_after_commit(self, run_async: Callable[[AsyncBody], Any], audit_log: logging.Logger,
                                      config: Config) -> None:
        """When the spool cannot take the events, `await commit()` raises SpoolError saying the commit happened."""
        config.spool.dir.parent.mkdir(parents=True, exist_ok=True)
        config.spool.dir.write_text("not a directory")

        async def body(engine: AsyncEngine) -> None:
            maker = async_sessionmaker(engine)
            with track(maker, logger=audit_log, models=MODELS), auditlock.actor("user#7"):
                async with maker() as session:
                    session.add(Order(status="new"))
                    with pytest.raises(SpoolError) as raised:
                        await session.commit()
                    assert "was COMMITTED" in "\n".join(raised.value.__notes__)
                    assert (await session.scalars(select(Order.status))).all() == ["new"]

        run_async(body)
