"""A throwaway PostgreSQL server for the session, from Debian's `postgresql` package, and a fresh database per test.

Fixtures: ``postgres_server`` (session) and ``postgres_url`` (a new database, dropped afterwards). Without the
PostgreSQL binaries they skip, or fail when ``AUDITLOCK_REQUIRE_POSTGRES=1`` (CI), like ``rgw_s3``.
The server runs as the ``postgres`` OS user when the tests run as root (initdb refuses root), listens on
127.0.0.1 on a free port, keeps its socket and data in one temporary directory, and is stopped at the end of the
session — or, if the test process dies without running finalizers, by a watchdog process.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3servers import free_port

REQUIRE_POSTGRES_ENV = "AUDITLOCK_REQUIRE_POSTGRES"
INSTALL_HINT = "install it with .ci/install-postgres (apt-get install postgresql)"
_BINARIES = ("initdb", "pg_ctl", "postgres")

# Blocks until the test process closes the pipe (or dies), then stops the server and removes its directory.
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


def postgres_bindir() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb, pg_ctl and postgres (or PATH's), else None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in _BINARIES):
            return bindir
    return None


class PostgresError(RuntimeError):
    """The throwaway server did not start (the message carries the end of its log)."""


class PostgresServer:
    """initdb + pg_ctl start in a temporary directory; `url(database)` for SQLAlchemy (psycopg 3)."""

    def __init__(self, bindir: Path, *, logical: bool = False, durable: bool = False) -> None:
        """`logical`: wal_level = logical (capture's tests); `durable`: fsync and synchronous_commit on, as in
        production (bench/handler.py compares with it); off by default, since the tests need no crash safety from
        their database."""
        self.bindir = bindir
        self.logical = logical
        self.durable = durable
        self.port = free_port()
        # A short /tmp path: the socket path must fit in sun_path (107 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="auditlock-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._run_as = _server_user()
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; on failure stop what was started and raise PostgresError."""
        if self._run_as is not None:
            pw = pwd.getpwnam(self._run_as)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._spawn_watchdog()
        try:
            self._pg(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--no-instructions"])
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            if self.logical:
                options += " -c wal_level=logical -c max_replication_slots=64 -c max_wal_senders=16"
            self._pg(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                      "start"])
        except BaseException:
            self.stop()
            raise
        return self

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for `database` on this server."""
        return f"host=127.0.0.1 port={self.port} user={user} dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for `database` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (immediate mode: the data is throwaway) and remove its directory; safe to call twice."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            assert watchdog.stdin is not None
            watchdog.stdin.close()  # the watchdog stops the server and removes the directory
            try:
                watchdog.wait(timeout=60)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def _command(self, argv: list[str]) -> list[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        return command if self._run_as is None else ["runuser", "-u", self._run_as, "--", *command]

    def _pg(self, argv: list[str]) -> None:
        done = subprocess.run(self._command(argv), capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "<no server log>"
            raise PostgresError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}")

    def _spawn_watchdog(self) -> None:
        stop = self._command(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.root), *stop],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )


def _server_user() -> str | None:
    """The OS user to run PostgreSQL as: `postgres` when we are root (initdb refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError("running as root needs the 'postgres' OS user (created by Debian's package)") from None
    return "postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session; skips when PostgreSQL is missing (fails if required)."""
    server = PostgresServer(_bindir_or_skip()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def logical_postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server with `wal_level = logical` (replication slots, `auditlock capture`)."""
    bindir = _bindir_or_skip()
    server = PostgresServer(bindir, logical=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def logical_database(logical_postgres_server: PostgresServer) -> Iterator[str]:
    """The name of a new, empty database on the logical server; its slots and the database are dropped afterwards."""
    yield from _throwaway_database(logical_postgres_server)


def _throwaway_database(server: PostgresServer) -> Iterator[str]:
    import psycopg

    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        slots = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)).fetchall()
        for (slot,) in slots:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _bindir_or_skip() -> Path:
    bindir = postgres_bindir()
    if bindir is None:
        reason = f"PostgreSQL server binaries not found (initdb, pg_ctl, postgres); {INSTALL_HINT}"
        # CI sets AUDITLOCK_REQUIRE_POSTGRES=1 so a broken install cannot silently skip the PostgreSQL cases.
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{reason} [{REQUIRE_POSTGRES_ENV}=1]", pytrace=False)
        pytest.skip(reason)
    return bindir


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database on the session's server; the database is dropped afterwards."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
