"""A capture setup for tests: a database on the logical PostgreSQL server, a mapped `orders` table, a config file,
and `auditlock capture` run as a real subprocess; the spool read back with the spool reader.

Fixture: ``capture_env`` (a new database and spool per test). The capture role is the server's superuser unless a
test creates another one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import auditlock
from auditlock.config import load_config
from auditlock.spool.format import parse_segment_name
from auditlock.spool.reader import iter_lines, parse_event
from tests.support.postgres import PostgresServer

DSN_ENV = "AUDITLOCK_TEST_CAPTURE_DSN"
ORDERS = """CREATE TABLE public.orders (id integer PRIMARY KEY, status text NOT NULL, total integer,
    secret text, note text)"""

CONFIG = """service = "shop"
[spool]
dir = "{spool}"
durability = "sync"
[events]
include = ["order.*", "auditlock.*"]
[retention]
default = "standard"
[retention.classes.standard]
days = 30
[targets.Order]
table = "public.orders"
fields = ["status", "total", "note"]
[capture]
dsn_env = "{dsn_env}"
slot = "{slot}"
publication = "auditlock_pub"
http_port = 0
poll_interval_s = 0.05
{extra}
"""


@dataclass
class CaptureEnv:
    """One database, spool and config; helpers to run SQL and capture and to read the spool."""

    server: PostgresServer
    database: str
    root: Path
    slot: str = "auditlock"

    @property
    def spool(self) -> Path:
        """The spool directory."""
        return self.root / "spool"

    @property
    def config_path(self) -> Path:
        """The config file."""
        return self.root / "auditlock.toml"

    @property
    def dsn(self) -> str:
        """The superuser's connection string to the test database."""
        return self.server.dsn(self.database)

    def write_config(self, extra: str = "", *, dsn: str | None = None) -> None:
        """Write the config (extra TOML appended to [capture] or after it)."""
        self.config_path.write_text(CONFIG.format(spool=self.spool, dsn_env=DSN_ENV, slot=self.slot, extra=extra))
        self.dsn_for_capture = dsn or self.dsn

    def sql(self, *statements: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run statements in one transaction as the superuser; the last one's rows."""
        rows: list[tuple[Any, ...]] = []
        with psycopg.connect(self.dsn) as conn:
            for statement in statements:
                cursor = conn.execute(statement.encode() if params is None else statement, params)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a capture subprocess."""
        return {**os.environ, DSN_ENV: self.dsn_for_capture, "PYTHONUNBUFFERED": "1", **extra}

    def capture(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `auditlock capture --config F <args>` to its end."""
        done = subprocess.run([sys.executable, "-m", "auditlock", "capture", "--config", str(self.config_path),
                               *args], capture_output=True, text=True, env=self.env(**env), timeout=180,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"capture {args} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def setup(self) -> subprocess.CompletedProcess[str]:
        """`--setup` (creates publication, replica identity, triggers, slot)."""
        return self.capture("--setup")

    def events(self, *, event_prefix: str = "order.") -> list[dict[str, Any]]:
        """Every event in the spool's sealed segments whose type starts with `event_prefix`, in writer order."""
        found = []
        for path in sorted(self.spool.glob("*.jsonl")):
            name = parse_segment_name(path.name)
            if name is None or name.is_open:
                continue
            for line in iter_lines(path):
                event = parse_event(line)
                assert event is not None, f"an invalid line in {path.name}"
                if event["event_type"].startswith(event_prefix):
                    found.append(event)
        if any("commit_lsn" not in e["payload"] for e in found):
            return found
        return sorted(found, key=lambda e: (_lsn(e["payload"]["commit_lsn"]), e["payload"]["change_index"]))

    def spool_bytes(self) -> bytes:
        """Every byte of every segment in the spool (sealed and open)."""
        return b"".join(p.read_bytes() for p in sorted(self.spool.glob("*.jsonl")))


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@pytest.fixture
def capture_env(logical_postgres_server: PostgresServer, logical_database: str, tmp_path: Path) -> CaptureEnv:
    """A database with `public.orders`, a config mapping it to target Order, no setup run yet."""
    env = CaptureEnv(logical_postgres_server, logical_database, tmp_path)
    env.sql(ORDERS)
    env.write_config()
    return env


@pytest.fixture
def lazy_wal_writer(logical_postgres_server: PostgresServer) -> Iterator[None]:
    """The WAL writer wakes only every 10 s: an asynchronous commit stays unflushed (not yet decodable) for seconds.

    The logical server runs with `synchronous_commit = off`, as many production databases do for some sessions;
    this makes the window between COMMIT and the WAL flush wide enough to test instead of a race.
    """
    def set_delay(value: str) -> None:
        with psycopg.connect(logical_postgres_server.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET wal_writer_delay = '{value}'".encode())
            conn.execute("SELECT pg_reload_conf()")

    set_delay("10s")
    try:
        yield
    finally:
        set_delay("200ms")


class _CapturedBase(DeclarativeBase):
    pass


class CapturedOrder(_CapturedBase):
    """The capture tests' `public.orders` table as an application's ORM maps it (the columns it writes)."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


@contextlib.contextmanager
def app_audit_logger(env: CaptureEnv) -> Iterator[logging.Logger]:
    """The application's audit logger: an `AuditHandler` over the env's config, so into the spool capture writes to
    (with `track(..., capture="wal")` nothing is written through it, but `track()` checks it)."""
    logger = logging.getLogger(f"audit.capture.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = auditlock.AuditHandler(load_config(env.config_path))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()
