"""`bind_transaction` on every connection kind it accepts besides psycopg 3 (tests/test_capture.py): psycopg2, and
SQLAlchemy on either driver — bound transactions captured with the application's actor, autocommit refused.

Real PostgreSQL with `wal_level = logical`, `auditlock capture --once` as a subprocess, the spool read back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import psycopg2
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from auditlock.errors import EventError
from auditlock.handler.context import actor, job
from auditlock.integrations.postgres import bind_transaction
from tests.support.capture_env import CaptureEnv

INSERT = "INSERT INTO orders VALUES (%s, 'new', 5, NULL, NULL)"
DRIVERS = ("psycopg", "psycopg2")


class TestPsycopg2:
    """A psycopg2 connection: the bound actor goes into its transaction; autocommit is refused."""

    def test_bound_transaction_is_captured_with_the_actor(self, capture_env: CaptureEnv) -> None:
        """A psycopg2 transaction bound under auditlock.actor is recorded with that actor; the next one is not."""
        capture_env.setup()
        with closing(psycopg2.connect(capture_env.dsn)) as conn:
            with actor("user:82", ip="203.0.113.9", request_id="req-2"), conn:  # `with conn`: one transaction
                assert bind_transaction(conn)
                with conn.cursor() as cursor:
                    cursor.execute(INSERT, (1,))
            with conn, conn.cursor() as cursor:
                cursor.execute("UPDATE orders SET status = 'paid'")
        capture_env.capture("--once")
        created, updated = capture_env.events()
        assert (created["actor_id"], created["actor_type"], created["actor_ip"]) == ("user:82", "user",
                                                                                    "203.0.113.9")
        assert created["payload"]["request_id"] == "req-2"
        assert "attribution_problem" not in created["payload"]
        assert updated["actor_id"] == "db:postgres"

    def test_rolled_back_binding_attributes_nothing(self, capture_env: CaptureEnv) -> None:
        """A bound psycopg2 transaction that rolls back leaves no actor for the next one on the connection."""
        capture_env.setup()
        with closing(psycopg2.connect(capture_env.dsn)) as conn:
            with actor("user:1"):
                assert bind_transaction(conn)
            conn.rollback()
            with conn, conn.cursor() as cursor:
                cursor.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert created["actor_id"] == "db:postgres"

    def test_autocommit_connection_is_refused(self, capture_env: CaptureEnv) -> None:
        """bind_transaction on a psycopg2 connection in autocommit mode raises rather than attribute nothing."""
        with closing(psycopg2.connect(capture_env.dsn)) as conn, actor("user:1"):
            conn.autocommit = True
            with pytest.raises(EventError, match="autocommit"):
                bind_transaction(conn)

    def test_no_bound_actor_writes_nothing(self, capture_env: CaptureEnv) -> None:
        """Without a bound actor bind_transaction returns False and leaves the transaction as it was."""
        with closing(psycopg2.connect(capture_env.dsn)) as conn:
            assert not bind_transaction(conn)
            assert conn.status == psycopg2.extensions.STATUS_READY


@pytest.fixture(params=DRIVERS)
def engine(request: pytest.FixtureRequest, capture_env: CaptureEnv) -> Iterator[Engine]:
    """A SQLAlchemy engine on the capture database, on psycopg 3 and on psycopg2."""
    url = capture_env.server.url(capture_env.database).replace("+psycopg:", f"+{request.param}:")
    made = create_engine(url)
    yield made
    made.dispose()


class TestSqlalchemy:
    """A SQLAlchemy Connection or Session on either driver: bound like a driver connection; autocommit refused."""

    def test_bound_connection_is_captured_with_the_actor(self, capture_env: CaptureEnv, engine: Engine) -> None:
        """engine.begin() bound under a job: its rows are recorded with the job and its run id."""
        capture_env.setup()
        with job("nightly-import", run_id="run-4"), engine.begin() as connection:
            assert bind_transaction(connection)
            connection.execute(text("INSERT INTO orders VALUES (1, 'new', 5, NULL, NULL)"))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["payload"]["job_run_id"]) == ("job:nightly-import", "run-4")

    def test_bound_session_is_captured_with_the_actor(self, capture_env: CaptureEnv, engine: Engine) -> None:
        """A Session bound under auditlock.actor: its rows are recorded with that actor."""
        capture_env.setup()
        with actor("user:7"), Session(engine) as session:
            assert bind_transaction(session)
            session.execute(text("INSERT INTO orders VALUES (1, 'new', 5, NULL, NULL)"))
            session.commit()
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert created["actor_id"] == "user:7"

    def test_autocommit_connection_is_refused(self, engine: Engine) -> None:
        """A Connection with isolation_level AUTOCOMMIT is refused (SQLAlchemy never reports it as the level)."""
        with engine.connect() as connection, actor("user:1"):
            connection.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(EventError, match="autocommit"):
                bind_transaction(connection)

    def test_autocommit_engine_session_is_refused(self, engine: Engine) -> None:
        """A Session on an AUTOCOMMIT engine is refused too."""
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        with Session(autocommit) as session, actor("user:1"), pytest.raises(EventError, match="autocommit"):
            bind_transaction(session)
