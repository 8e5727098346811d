"""The mapped classes, engines and spool readers the SQLAlchemy integration's test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from sqlalchemy import Engine, ForeignKey, Numeric, String, Text, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

import auditlock
from auditlock.config import Config
from tests.support.spool_files import spool_lines

SECRET = "SECRET-7f3a"  # marks every value that must never reach the spool


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(120), unique=True)
    password_hash: Mapped[str] = mapped_column(String(120))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=Decimal("0.00"))
    customer_email: Mapped[str | None] = mapped_column(String(120))
    internal_note: Mapped[str | None] = mapped_column(String(120))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer | None] = relationship()


class OrderLine(Base):
    __tablename__ = "order_lines"
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(primary_key=True)
    quantity: Mapped[int]


class Note(Base):
    """A record with a free-text allowlisted column: how an event grows past max_event_bytes."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(Text)


class Ticket(Base):
    """A table that turns RETURNING off (`implicit_returning=False`): as on a database without it."""

    __tablename__ = "tickets"
    __table_args__: ClassVar[dict[str, Any]] = {"implicit_returning": False}
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


MODELS = {Order: "Order", Customer: "Customer", OrderLine: "OrderLine"}
INCLUDE = ["order.*", "customer.*", "order_line.*", "sales_order.*", "note.*", "ticket.*"]
ORDER_TARGET = {"fields": ["status", "total", "customer_email", "customer_id"], "hmac": ["customer_email"],
                "retention": "orders"}


def create_test_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """An engine with the schema created: a SQLite file in tmp_path (request.param "sqlite"), or a fresh
    PostgreSQL database (`postgres_url`)."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
        # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy's documented recipe takes it over.
        event.listen(engine, "connect", lambda dbapi_conn, _record: setattr(dbapi_conn, "isolation_level", None))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    else:
        engine = create_engine(request.getfixturevalue("postgres_url"))
    Base.metadata.create_all(engine)
    return engine


def events(config: Config) -> list[dict[str, Any]]:
    """The application's events in the spool so far, without the writer's own `auditlock.*` records (a lifespan
    shutdown closes the writers: `auditlock.writer_closed`); none when the spool was never written."""
    parsed = [orjson.loads(line) for line in raw_lines(config)]
    return [event for event in parsed if not event["event_type"].startswith("auditlock.")]


def raw_lines(config: Config) -> list[bytes]:
    """The spool's lines as bytes."""
    return spool_lines(config.spool.dir) if config.spool.dir.exists() else []


def types(config: Config) -> list[str]:
    """The event types in the spool, in order."""
    return [e["event_type"] for e in events(config)]


def add_order(factory: sessionmaker[Session], **values: Any) -> int:
    """Insert an order as user#7 and return its id."""
    with auditlock.actor("user#7"), factory.begin() as session:
        order = Order(**{"status": "new", "total": Decimal("10.50"), **values})
        session.add(order)
        session.flush()
        return order.id


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine with the schema created: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    engine = create_test_engine(request, tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker on the engine (expire_on_commit stays on, as in most applications)."""
    return sessionmaker(engine)
