"""`auditlock capture --setup` and the refusals: what the database needs, created idempotently, and one clear
message naming the fix when something is missing."""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

import auditlock
from auditlock.capture.pgoutput import Begin, Commit, Message, RowChange, decode
from auditlock.integrations.sqlalchemy import track
from tests.support.capture_env import DSN_ENV, CapturedOrder, CaptureEnv, app_audit_logger
from tests.support.peak import run_with_peak
from tests.support.postgres import PostgresServer


class TestSetup:
    """--setup creates exactly what is missing and prints it; --dry-run only prints."""

    def test_dry_run_prints_and_creates_nothing(self, capture_env: CaptureEnv) -> None:
        """--dry-run prints the publication, replica identity, trigger and slot SQL and changes nothing."""
        done = capture_env.capture("--setup", "--dry-run")
        assert 'CREATE PUBLICATION "auditlock_pub" FOR TABLE "public"."orders"' in done.stdout
        assert 'ALTER TABLE "public"."orders" REPLICA IDENTITY FULL' in done.stdout
        assert "pg_create_logical_replication_slot('auditlock', 'pgoutput')" in done.stdout
        assert "FOR EACH STATEMENT EXECUTE FUNCTION auditlock_capture.note_session()" in done.stdout
        assert capture_env.sql("SELECT count(*) FROM pg_publication")[0][0] == 0
        assert capture_env.sql("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()")[0][
            0] == 0

    def test_setup_is_idempotent(self, capture_env: CaptureEnv) -> None:
        """A second --setup creates no publication, identity or slot again."""
        capture_env.setup()
        again = capture_env.setup().stdout
        assert "CREATE PUBLICATION" not in again
        assert "REPLICA IDENTITY" not in again
        assert "pg_create_logical_replication_slot" not in again
        assert capture_env.sql("SELECT relreplident FROM pg_class WHERE relname = 'orders'")[0][0] == "f"

    def test_setup_adds_a_table_without_dropping_others(self, capture_env: CaptureEnv) -> None:
        """A publication holding another table gets the mapped one added; the other stays."""
        capture_env.sql("CREATE TABLE public.other (id int PRIMARY KEY)",
                        "CREATE PUBLICATION auditlock_pub FOR TABLE public.other")
        out = capture_env.setup().stdout
        assert 'ALTER PUBLICATION "auditlock_pub" ADD TABLE "public"."orders"' in out
        tables = {row[0] for row in capture_env.sql(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'auditlock_pub'")}
        assert tables == {"orders", "other"}

    def test_schema_change_is_recorded(self, capture_env: CaptureEnv) -> None:
        """ALTER TABLE on a mapped table gives order.schema_changed with the role and the command."""
        capture_env.setup()
        capture_env.sql("ALTER TABLE orders ADD COLUMN region text")
        capture_env.capture("--once")
        (changed,) = capture_env.events()
        assert changed["event_type"] == "order.schema_changed"
        assert changed["actor_id"] == "db:postgres"
        assert changed["payload"]["command"] == "ALTER TABLE"
        assert changed["payload"]["object"] == "public.orders"


def decoded_transactions(env: CaptureEnv) -> list[list[str]]:
    """What the slot holds (peeked, not consumed), per transaction: "session" for an auditlock.session message, "row"
    for a row change. A commit with synchronous_commit on first flushes the WAL (the test server commits
    asynchronously, and decoding reads flushed WAL only)."""
    env.sql("SET LOCAL synchronous_commit = local", "SELECT pg_logical_emit_message(true, 'test.flush', '')")
    rows = env.sql("SELECT data FROM pg_logical_slot_peek_binary_changes('auditlock', NULL, NULL, 'proto_version', "
                   "'1', 'publication_names', 'auditlock_pub', 'messages', 'true')")
    transactions: list[list[str]] = []
    for (data,) in rows:
        message = decode(bytes(data))
        if isinstance(message, Begin):
            transactions.append([])
        elif isinstance(message, Message) and message.prefix == "auditlock.session":
            transactions[-1].append("session")
        elif isinstance(message, RowChange):
            transactions[-1].append("row")
        elif isinstance(message, Commit) and not transactions[-1]:
            transactions.pop()  # the flush above
    return transactions


def psql(env: CaptureEnv, sql: str, appname: str) -> None:
    """Run SQL through the real `psql` client (no application context), as an operator would."""
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(env.server.port), "-U",
                    "postgres", "-d", env.database, "-c", sql], check=True, capture_output=True,
                   env={**os.environ, "PGAPPNAME": appname}, timeout=60)


class TestSessionTrigger:
    """The statement trigger writes one auditlock.session message per transaction, committed with its rows."""

    def test_one_message_per_transaction(self, capture_env: CaptureEnv) -> None:
        """Four statements in one transaction give one message before the rows; the next transaction gets its own."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn:
            conn.execute("INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL)")
            conn.execute("INSERT INTO orders VALUES (2, 'new', 1, NULL, NULL)")
            conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
            conn.execute("DELETE FROM orders WHERE id = 2")
            conn.commit()
            conn.execute("UPDATE orders SET status = 'sent' WHERE id = 1")
            conn.commit()
        assert decoded_transactions(capture_env) == [["session", "row", "row", "row", "row"], ["session", "row"]]

    def test_rolled_back_savepoint_emits_again(self, capture_env: CaptureEnv) -> None:
        """The message of a savepoint rolled back goes with it; the next statement writes it again, once."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn:
            conn.execute("SAVEPOINT first")
            conn.execute("INSERT INTO orders VALUES (1, 'undone', 1, NULL, NULL)")
            conn.execute("ROLLBACK TO SAVEPOINT first")
            conn.execute("INSERT INTO orders VALUES (2, 'kept', 1, NULL, NULL)")
            conn.execute("SAVEPOINT second")
            conn.execute("INSERT INTO orders VALUES (3, 'undone', 1, NULL, NULL)")
            conn.execute("ROLLBACK TO SAVEPOINT second")
            conn.execute("INSERT INTO orders VALUES (4, 'kept', 1, NULL, NULL)")
            conn.commit()
        assert decoded_transactions(capture_env) == [["session", "row", "row"]]
        capture_env.capture("--once")
        assert [(e["target_id"], e["actor_id"]) for e in capture_env.events()] == [("2", "db:postgres"),
                                                                                   ("4", "db:postgres")]

    def test_psql_transaction_is_attributed_to_the_role(self, capture_env: CaptureEnv) -> None:
        """A psql transaction of several statements, no application context: every row by db:postgres, one message."""
        capture_env.setup()
        psql(capture_env, "BEGIN; INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL); "
                          "UPDATE orders SET total = 2 WHERE id = 1; COMMIT", appname="ops-shell")
        assert decoded_transactions(capture_env) == [["session", "row", "row"]]
        capture_env.capture("--once")
        events = capture_env.events()
        assert [(e["actor_id"], e["actor_type"], e["actor_ip"]) for e in events] == [("db:postgres", "db",
                                                                                      "127.0.0.1")] * 2
        assert {e["payload"]["application_name"] for e in events} == {"ops-shell"}

    def test_a_session_level_marker_does_not_switch_it_off(self, capture_env: CaptureEnv) -> None:
        """`SET auditlock.session_noted` for the session (PGOPTIONS, ALTER ROLE … SET alike) leaves the message on."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn, autocommit=True) as conn:
            conn.execute("SET auditlock.session_noted = 'on'")
            conn.execute("INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL)")
        assert decoded_transactions(capture_env) == [["session", "row"]]

    def test_setup_replaces_an_older_function(self, capture_env: CaptureEnv) -> None:
        """--setup over an install whose note_session() is older replaces it (CREATE OR REPLACE), keeping the rest."""
        capture_env.sql("CREATE SCHEMA auditlock_capture",
                        "CREATE FUNCTION auditlock_capture.note_session() RETURNS trigger LANGUAGE plpgsql "
                        "AS $$ BEGIN RETURN NULL; END $$")
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL)")
        assert decoded_transactions(capture_env) == [["session", "row"]]
        (source,) = capture_env.sql("SELECT prosrc FROM pg_proc WHERE proname = 'note_session'")[0]
        assert "pg_current_xact_id" in source


class TestRefusals:
    """Capture refuses to start, naming the fix, when the database is not ready."""

    def test_missing_slot_publication_and_identity(self, capture_env: CaptureEnv) -> None:
        """Without --setup: one message naming the slot, the publication and the replica identity."""
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert "replication slot 'auditlock' does not exist: run `auditlock capture --setup`" in done.stderr
        assert "publication 'auditlock_pub' does not exist" in done.stderr
        assert "REPLICA IDENTITY DEFAULT" in done.stderr

    def test_role_without_replication(self, capture_env: CaptureEnv) -> None:
        """A capture role without REPLICATION is refused with the ALTER ROLE fix."""
        capture_env.setup()
        role = f"r_{uuid.uuid4().hex[:8]}"
        capture_env.sql(f"CREATE ROLE {role} LOGIN")
        capture_env.write_config(dsn=capture_env.server.dsn(capture_env.database, user=role))
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert "lacks REPLICATION: ALTER ROLE" in done.stderr

    def test_wal_level_not_logical(self, postgres_server: PostgresServer, tmp_path: Path) -> None:
        """On a server with wal_level = replica, capture names wal_level = logical."""
        env = CaptureEnv(postgres_server, "postgres", tmp_path)
        env.write_config()
        done = env.capture("--once", check=False)
        assert done.returncode == 1
        assert "wal_level is 'replica', not 'logical'" in done.stderr

    def test_no_mapped_table(self, capture_env: CaptureEnv) -> None:
        """A config without any [targets.*] table is refused with an example."""
        text = capture_env.config_path.read_text().replace('table = "public.orders"\n', "")
        capture_env.config_path.write_text(text)
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert 'table = "public.orders"' in done.stderr


@pytest.fixture
def audit_logger(capture_env: CaptureEnv) -> Iterator[logging.Logger]:
    """The application's audit logger writing into the same spool capture writes to."""
    os.environ.setdefault(DSN_ENV, capture_env.dsn)
    with app_audit_logger(capture_env) as logger:
        yield logger


class TestOrmWithCapture:
    """track(..., capture="wal") binds the actor and records nothing itself: each change once."""

    def test_orm_change_is_recorded_once_with_the_application_actor(self, capture_env: CaptureEnv,
                                                                    audit_logger: logging.Logger) -> None:
        """An ORM insert under auditlock.actor is one order.created, from capture, by that user."""
        capture_env.setup()
        engine = create_engine(capture_env.server.url(capture_env.database))
        factory = sessionmaker(engine)
        with track(factory, logger=audit_logger, models={CapturedOrder: "Order"}, capture="wal"), \
                auditlock.actor("user:82", ip="198.51.100.4"), factory() as session:
            session.add(CapturedOrder(id=1, status="new"))
            session.commit()
        engine.dispose()
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["actor_ip"]) == ("user:82", "198.51.100.4")
        assert "commit_lsn" in created["payload"]


    def test_bind_transaction_on_a_session(self, capture_env: CaptureEnv) -> None:
        """bind_transaction(session) binds the actor into the session's transaction (no track() needed)."""
        from auditlock.integrations.postgres import bind_transaction

        capture_env.setup()
        engine = create_engine(capture_env.server.url(capture_env.database))
        with auditlock.job("reindex", run_id="r-1"), sessionmaker(engine)() as session:
            assert bind_transaction(session)
            session.add(CapturedOrder(id=2, status="new"))
            session.commit()
        engine.dispose()
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["payload"]["job_run_id"]) == ("job:reindex", "r-1")


class TestLargeTransaction:
    """A transaction of 100k rows is captured without holding it in memory."""

    def test_100k_rows_in_bounded_memory(self, capture_env: CaptureEnv) -> None:
        """100,000 inserted rows in one transaction: 100,000 events; capture's own peak RSS stays under 150 MB."""
        capture_env.setup()
        capture_env.sql("INSERT INTO orders (id, status, total, note) SELECT g, 'new', g, repeat('x', 200) "
                        "FROM generate_series(1, 100000) g")
        done = run_with_peak(["capture", "--config", str(capture_env.config_path), "--once"], env=capture_env.env())
        assert done.code in ("0", "None"), done.stderr[-2000:]
        peak_mb = done.peak_kib / 1024
        assert peak_mb < 150, f"capture peaked at {peak_mb:.0f} MB"
        events = capture_env.events()
        assert len(events) == 100_000
        assert [e["payload"]["change_index"] for e in events[:3]] == [0, 1, 2]
        assert len({e["target_id"] for e in events}) == 100_000
