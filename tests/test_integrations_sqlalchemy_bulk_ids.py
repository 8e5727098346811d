"""Bulk UPDATE / DELETE events name the rows they affected (primary keys through RETURNING), bounded, without
changing what the application's statement returns — on SQLite and a real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

import auditlock
from auditlock.config import Config
from auditlock.integrations.orm_events import BULK_IDS_MAX
from auditlock.integrations.sqlalchemy import SessionTracker, track
from tests.support.sqlalchemy_models import (
    INCLUDE,
    MODELS,
    ORDER_TARGET,
    Order,
    OrderLine,
    Ticket,
    add_order,
    events,
    raw_lines,
)

SMALL_EVENT_BYTES = 1024


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    """The SQLAlchemy tests' config with a Ticket target."""
    targets = {"Order": ORDER_TARGET, "OrderLine": {"fields": ["quantity"]}, "Ticket": {"fields": ["status"]}}
    return make_config(targets=targets, events={"include": INCLUDE})



@pytest.fixture
def tracker(factory: sessionmaker[Session], audit_log: logging.Logger) -> Iterator[SessionTracker]:
    """The integration on the sessionmaker (with Ticket), removed after the test."""
    with track(factory, logger=audit_log, models={**MODELS, Ticket: "Ticket"}) as handle:
        yield handle


def add_orders(factory: sessionmaker[Session], count: int) -> list[int]:
    """Insert `count` orders in one statement as user#7; their ids in order."""
    with auditlock.actor("user#7"), factory.begin() as session:
        session.execute(insert(Order), [{"status": "new"} for _ in range(count)])
        return list(session.scalars(select(Order.id).order_by(Order.id)))


def last_event(config: Config) -> dict[str, Any]:
    """The last event in the spool."""
    return events(config)[-1]


@pytest.mark.usefixtures("tracker")
class TestAffectedIds:
    def test_bulk_delete_names_the_rows_it_removed(self, factory: sessionmaker[Session], config: Config) -> None:
        """Only the deleted rows' primary keys are in ids, and the row count agrees."""
        ids = add_orders(factory, 5)
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(delete(Order).where(Order.id.in_(ids[1:4])))
        payload = last_event(config)["payload"]
        assert sorted(payload["ids"], key=int) == [str(i) for i in ids[1:4]]
        assert (payload["rowcount"], payload["ids_truncated"]) == (3, False)

    def test_bulk_update_names_the_rows_it_changed(self, factory: sessionmaker[Session], config: Config) -> None:
        """A bulk UPDATE lists the keys of the rows its WHERE matched, none of the others."""
        ids = add_orders(factory, 4)
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(update(Order).where(Order.id > ids[1]).values(status="void"))
        payload = last_event(config)["payload"]
        assert sorted(payload["ids"], key=int) == [str(i) for i in ids[2:]]

    def test_composite_keys_use_the_target_id_format(self, factory: sessionmaker[Session], config: Config) -> None:
        """A composite key is written as the ORM events write target_id: 'part:part'."""
        order_id = add_order(factory)
        with auditlock.actor("user#7"), factory.begin() as session:
            session.add_all([OrderLine(order_id=order_id, line_no=n, quantity=1) for n in (1, 2)])
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(delete(OrderLine).where(OrderLine.line_no == 2))
        assert last_event(config)["payload"]["ids"] == [f"{order_id}:2"]

    def test_no_row_matched(self, factory: sessionmaker[Session], config: Config) -> None:
        """A statement that matches nothing has an empty list of ids, not an unknown one."""
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(delete(Order).where(Order.status == "missing"))
        payload = last_event(config)["payload"]
        assert (payload["ids"], payload["ids_truncated"], payload["rowcount"]) == ([], False, 0)

    def test_rolled_back_attempt_names_its_rows_too(self, factory: sessionmaker[Session], config: Config) -> None:
        """The attempt of a rolled-back bulk DELETE says which rows it had removed."""
        ids = add_orders(factory, 2)
        with auditlock.actor("user#7"), factory() as session:
            session.execute(delete(Order))
            session.rollback()
        attempt = last_event(config)
        assert attempt["event_type"] == "order.bulk_delete_attempted"
        assert sorted(attempt["payload"]["ids"], key=int) == [str(i) for i in ids]


@pytest.mark.usefixtures("tracker")
class TestIdsAreBounded:
    def test_more_rows_than_the_cap(self, factory: sessionmaker[Session], config: Config) -> None:
        """Past BULK_IDS_MAX rows the event keeps that many ids, says ids_truncated, and counts every row."""
        add_orders(factory, BULK_IDS_MAX + 5)
        with auditlock.actor("user#7"), factory.begin() as session:
            session.execute(delete(Order))
        payload = last_event(config)["payload"]
        assert (len(payload["ids"]), payload["ids_truncated"]) == (BULK_IDS_MAX, True)
        assert payload["rowcount"] == BULK_IDS_MAX + 5

    def test_ids_give_way_to_max_event_bytes(self, make_config: Callable[..., Config], factory: sessionmaker[Session],
                                             closing: Callable[[Any], Any]) -> None:
        """With a small max_event_bytes fewer ids are kept so the event still fits, and it says so."""
        small = make_config(targets={"Order": ORDER_TARGET}, events={"include": INCLUDE,
                                                                     "max_event_bytes": SMALL_EVENT_BYTES})
        logger = logging.getLogger("audit.test.small_events")
        logger.setLevel(logging.INFO)
        handler = closing(auditlock.AuditHandler(small))
        logger.addHandler(handler)
        try:
            add_orders(factory, 300)
            with track(factory, logger=logger, models=[Order]), auditlock.actor("user#7"), \
                    factory.begin() as session:
                session.execute(delete(Order))
        finally:
            logger.removeHandler(handler)
        [line] = raw_lines(small)[-1:]
        payload = events(small)[-1]["payload"]
        assert len(line) <= SMALL_EVENT_BYTES
        assert 0 < len(payload["ids"]) < 300
        assert (payload["ids_truncated"], payload["rowcount"]) == (True, 300)


@pytest.mark.usefixtures("tracker")
class TestIdsUnknown:
    def test_statement_with_its_own_returning(self, factory: sessionmaker[Session], config: Config) -> None:
        """The application's RETURNING rows reach it unchanged; the event says the ids are unknown, and why."""
        ids = add_orders(factory, 3)
        with auditlock.actor("user#7"), factory.begin() as session:
            rows = session.execute(delete(Order).where(Order.id != ids[0]).returning(Order.id, Order.status)).all()
        assert sorted(tuple(row) for row in rows) == [(i, "new") for i in ids[1:]]
        payload = last_event(config)["payload"]
        assert (payload["ids"], payload["ids_unknown"]) == (None, "statement_returning")

    def test_table_without_returning(self, factory: sessionmaker[Session], config: Config) -> None:
        """A table with implicit_returning=False (as a database without RETURNING) records ids unknown."""
        with auditlock.actor("user#7"), factory.begin() as session:
            session.add_all([Ticket(status="open"), Ticket(status="open")])
        with auditlock.actor("user#7"), factory.begin() as session:
            assert session.execute(delete(Ticket)).rowcount == 2  # type: ignore[attr-defined]
        payload = last_event(config)["payload"]
        assert (payload["ids"], payload["ids_unknown"], payload["rowcount"]) == (None, "no_returning", 2)

    def test_execution_option_turns_it_off(self, factory: sessionmaker[Session], config: Config) -> None:
        """execution_options(auditlock_bulk_ids=False) runs the statement as written; the event says so."""
        add_orders(factory, 2)
        with auditlock.actor("user#7"), factory.begin() as session:
            result = session.execute(delete(Order).execution_options(auditlock_bulk_ids=False))
            assert (result.rowcount, result.returns_rows) == (2, False)  # type: ignore[attr-defined]
        payload = last_event(config)["payload"]
        assert (payload["ids"], payload["ids_unknown"]) == (None, "disabled")


class TestResultSeenByTheApplication:
    @pytest.mark.parametrize("strategy", ["auto", "evaluate", "fetch", False])
    @pytest.mark.usefixtures("tracker")
    def test_session_synchronisation_still_works(self, factory: sessionmaker[Session], config: Config,
                                                  strategy: str | bool) -> None:
        """Every synchronize_session strategy still updates the objects the session holds, and ids are recorded."""
        ids = add_orders(factory, 2)
        with auditlock.actor("user#7"), factory.begin() as session:
            held = session.get_one(Order, ids[0])
            session.execute(update(Order).where(Order.id == ids[0]).values(status="paid")
                            .execution_options(synchronize_session=strategy))
            assert held.status == ("new" if strategy is False else "paid")
            session.execute(delete(Order).where(Order.id == ids[1]).execution_options(synchronize_session=strategy))
        updated, deleted = events(config)[-2:]
        assert (updated["payload"]["ids"], deleted["payload"]["ids"]) == ([str(ids[0])], [str(ids[1])])

    def test_rowcount_is_what_it_is_untracked(self, factory: sessionmaker[Session], audit_log: logging.Logger,
                                              config: Config) -> None:
        """result.rowcount of a bulk UPDATE and DELETE is the same with and without the integration."""
        def run() -> tuple[int, int]:
            add_orders(factory, 3)
            with auditlock.actor("user#7"), factory.begin() as session:
                updated = session.execute(update(Order).where(Order.status == "new").values(status="old"))
                deleted = session.execute(delete(Order).where(Order.status == "old"))
                return updated.rowcount, deleted.rowcount  # type: ignore[attr-defined]

        untracked = run()
        with track(factory, logger=audit_log, models=MODELS):
            tracked = run()
        assert untracked == tracked == (3, 3)
        assert len(last_event(config)["payload"]["ids"]) == 3
