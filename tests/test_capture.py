"""`auditlock capture`: committed PostgreSQL row changes from a pgoutput slot, as audit events, with who made them.

Real PostgreSQL with `wal_level = logical` (tests/support/postgres.py), `auditlock capture` run as a subprocess,
the spool read back with the spool reader.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
import pytest

from auditlock.handler.context import actor, job
from auditlock.integrations.postgres import bind_transaction
from tests.support.capture_env import CaptureEnv

MARKER = "NEVER-IN-THE-SPOOL-7f3a"


def psql(env: CaptureEnv, sql: str, *, appname: str = "psql-test", user: str = "postgres") -> None:
    """Run SQL through the real `psql` client, as an operator would."""
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(env.server.port), "-U",
                    user, "-d", env.database, "-c", sql], check=True, capture_output=True,
                   env={**os.environ, "PGAPPNAME": appname}, timeout=60)


class TestRawChanges:
    """Changes made outside the application are recorded with the database role as the actor."""

    def test_psql_update_is_captured_with_the_role_and_allowlisted_values_only(self, capture_env: CaptureEnv) -> None:
        """A raw psql UPDATE gives order.updated by db:<role>, before/after of allowlisted columns, no marker."""
        capture_env.setup()
        psql(capture_env, f"INSERT INTO orders VALUES (7, 'new', 10, '{MARKER}', 'n1')")
        psql(capture_env, f"UPDATE orders SET status = 'paid', total = 12, secret = '{MARKER}2' WHERE id = 7",
             appname="ops-console")
        capture_env.capture("--once")
        created, updated = capture_env.events()
        assert created["event_type"] == "order.created"
        assert updated["event_type"] == "order.updated"
        assert (updated["actor_id"], updated["actor_type"], updated["actor_ip"]) == ("db:postgres", "db", "127.0.0.1")
        assert updated["target_type"] == "Order"
        assert updated["target_id"] == "7"
        payload = updated["payload"]
        assert payload["changes"] == {"status": ["new", "paid"], "total": [10, 12]}
        assert payload["application_name"] == "ops-console"
        assert payload["db_role"] == "postgres"
        assert payload["table"] == "public.orders"
        assert payload["change_index"] == 0
        assert isinstance(payload["xid"], int)
        assert MARKER.encode() not in capture_env.spool_bytes()

    def test_each_change_once_in_commit_order(self, capture_env: CaptureEnv) -> None:
        """Several transactions give one event per row change, in commit order, each once over two runs."""
        capture_env.setup()
        capture_env.sql("INSERT INTO orders (id, status) SELECT g, 'new' FROM generate_series(1, 5) g")
        capture_env.capture("--once")
        capture_env.sql("UPDATE orders SET status = 'paid' WHERE id IN (2, 4)", "DELETE FROM orders WHERE id = 5")
        capture_env.capture("--once")
        capture_env.capture("--once")
        events = capture_env.events()
        assert [(e["event_type"], e["target_id"]) for e in events] == [
            *(("order.created", str(i)) for i in range(1, 6)),
            ("order.updated", "2"), ("order.updated", "4"), ("order.deleted", "5")]

    def test_rolled_back_transaction_leaves_no_row_events(self, capture_env: CaptureEnv) -> None:
        """A transaction that rolls back (or a savepoint that does) produces no event."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn:
            conn.execute("INSERT INTO orders VALUES (1, 'kept', 1, NULL, NULL)")
            with conn.transaction(savepoint_name="sp") as sp:
                conn.execute("INSERT INTO orders VALUES (2, 'undone', 1, NULL, NULL)")
                raise_rollback(sp)
        with psycopg.connect(capture_env.dsn) as conn:
            conn.execute("UPDATE orders SET status = 'never'")
            conn.rollback()
        capture_env.capture("--once")
        assert [(e["event_type"], e["target_id"]) for e in capture_env.events()] == [("order.created", "1")]

    def test_truncate_is_recorded(self, capture_env: CaptureEnv) -> None:
        """TRUNCATE gives one order.truncated event with the role."""
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (1, 'a', 1, NULL, NULL)")
        psql(capture_env, "TRUNCATE orders")
        capture_env.capture("--once")
        truncated = capture_env.events()[-1]
        assert truncated["event_type"] == "order.truncated"
        assert truncated["actor_id"] == "db:postgres"
        assert truncated["payload"]["cascade"] is False

    def test_unchanged_toasted_column_keeps_its_value(self, capture_env: CaptureEnv) -> None:
        """An UPDATE not touching a TOASTed column reports no change of it; a DELETE gives its full before-value."""
        big = secrets.token_hex(20000)  # incompressible: stored out of line
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (1, 'new', 1, NULL, %s)", params=(big,))
        capture_env.sql("UPDATE orders SET status = 'paid' WHERE id = 1")
        capture_env.sql("DELETE FROM orders WHERE id = 1")
        capture_env.capture("--once")
        _, updated, deleted = capture_env.events()
        assert updated["payload"]["changes"] == {"status": ["new", "paid"]}
        assert deleted["payload"]["changes"]["note"] == [big, None]

    @pytest.mark.usefixtures("lazy_wal_writer")
    def test_once_includes_commits_not_yet_flushed(self, capture_env: CaptureEnv) -> None:
        """--once writes every transaction committed before it started, even one whose WAL is not yet flushed."""
        capture_env.setup()
        for order_id in range(1, 4):
            capture_env.sql("SET synchronous_commit = off",
                            f"INSERT INTO orders VALUES ({order_id}, 'new', 1, NULL, NULL)")
        capture_env.capture("--once")
        assert [event["target_id"] for event in capture_env.events()] == ["1", "2", "3"]


def raise_rollback(savepoint: psycopg.Transaction) -> None:
    """Roll a savepoint back from inside its block."""
    raise psycopg.Rollback(savepoint)


class TestApplicationContext:
    """The actor bound in the application goes into the transaction's WAL and wins over the database role."""

    def test_bind_transaction_carries_the_application_actor(self, capture_env: CaptureEnv) -> None:
        """A psycopg transaction bound under auditlock.actor is recorded with that actor, ip and request id."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn:
            with actor("user:82", ip="203.0.113.9", request_id="req-1"), conn.transaction():
                assert bind_transaction(conn)
                conn.execute("INSERT INTO orders VALUES (1, 'new', 5, NULL, NULL)")
            conn.execute("UPDATE orders SET status = 'paid'")
        capture_env.capture("--once")
        created, updated = capture_env.events()
        assert (created["actor_id"], created["actor_type"], created["actor_ip"]) == ("user:82", "user",
                                                                                    "203.0.113.9")
        assert created["payload"]["request_id"] == "req-1"
        assert created["payload"]["db_role"] == "postgres"
        assert updated["actor_id"] == "db:postgres"

    def test_job_run_is_carried(self, capture_env: CaptureEnv) -> None:
        """A job's name and run id reach the captured event."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn, job("nightly-import", run_id="run-9"), conn.transaction():
            bind_transaction(conn)
            conn.execute("INSERT INTO orders VALUES (1, 'new', 5, NULL, NULL)")
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["actor_type"]) == ("job:nightly-import", "job")
        assert created["payload"]["job_run_id"] == "run-9"

    def test_autocommit_connection_is_refused(self, capture_env: CaptureEnv) -> None:
        """bind_transaction on an autocommit connection raises rather than attribute nothing."""
        from auditlock.errors import EventError

        with psycopg.connect(capture_env.dsn, autocommit=True) as conn, actor("user:1"), \
                pytest.raises(EventError, match="autocommit"):
            bind_transaction(conn)

    def test_forged_message_is_not_trusted(self, capture_env: CaptureEnv) -> None:
        """A malformed actor message is ignored (rows go to the role) and the problem is recorded."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn:
            conn.execute("SELECT pg_logical_emit_message(true, 'auditlock.actor', '{\"actor_id\": 5}')")
            conn.execute("INSERT INTO orders VALUES (1, 'new', 5, NULL, NULL)")
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert created["actor_id"] == "db:postgres"
        assert "actor_id" in created["payload"]["attribution_problem"]


class TestSlotGap:
    """A slot lost and created again leaves a gap: recorded as an event, named by verify."""

    def test_recreated_slot_is_a_recorded_gap(self, capture_env: CaptureEnv) -> None:
        """Changes while the slot was gone are missing; capture_gap says so and verify --spool reports it."""
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (1, 'before', 1, NULL, NULL)")
        capture_env.capture("--once")
        capture_env.sql("SELECT pg_drop_replication_slot('auditlock')")
        capture_env.sql("INSERT INTO orders VALUES (2, 'lost', 1, NULL, NULL)")
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (3, 'after', 1, NULL, NULL)")
        capture_env.capture("--once")
        assert [e["target_id"] for e in capture_env.events()] == ["1", "3"]
        (gap,) = capture_env.events(event_prefix="auditlock.capture_gap")
        assert gap["payload"]["slot"] == "auditlock"
        argv = [sys.executable, "-m", "auditlock", "verify", "--config", str(capture_env.config_path), "--spool",
                str(capture_env.spool)]
        verify = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=capture_env.env())
        assert verify.returncode == 1
        assert "capture gap" in verify.stdout

    def test_no_gap_on_a_normal_restart(self, capture_env: CaptureEnv) -> None:
        """Idle and busy restarts never record a gap."""
        capture_env.setup()
        for i in range(3):
            capture_env.capture("--once")
            capture_env.sql("INSERT INTO orders VALUES (%s, 'x', 1, NULL, NULL)", params=(i,))
        capture_env.capture("--once")
        assert capture_env.events(event_prefix="auditlock.capture_gap") == []
