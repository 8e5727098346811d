"""(pN): INSERT + COMMIT of the same JSON lines on a throwaway PostgreSQL with fsync and synchronous_commit on."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from handlerbench.events import POOL, REASON, Run, in_threads, settle
from handlerbench.floors import Floor

REPO_ROOT = Path(__file__).resolve().parents[2]


def start_postgres() -> Any:
    """A throwaway PostgreSQL server with fsync and synchronous_commit on (tests/support/postgres.py), or None."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.postgres import PostgresServer, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        print("no PostgreSQL server binaries: the (pN) variants are skipped")
        return None
    return PostgresServer(bindir, durable=True).start()


def audit_lines(pool: list[Any]) -> list[str]:
    """The floor's JSON line of every argument set (what the (pN) variants insert)."""
    fd = os.open(os.devnull, os.O_WRONLY)
    lines: list[str] = []
    try:
        floor = Floor(fd)
        for target_id, before, after in pool:
            floor.emit(target_id, before, after, reason=REASON)
            lines.append(floor.last_line.decode())
    finally:
        os.close(fd)
    return lines


def run_postgres(server: Any, n: int, lines: list[str], threads: int) -> Run:
    """(pN): `threads` connections, each INSERTing its share of `n` lines, one transaction (autocommit) each."""
    import psycopg

    dsn = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
    table = f"audit_{os.urandom(6).hex()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, line jsonb NOT NULL)")
    n -= n % threads
    connections = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    free = list(connections)

    def insert_share() -> None:
        conn = free.pop()
        mask = POOL - 1
        statement = f"INSERT INTO {table} (line) VALUES (%s)"  # the table name is ours
        for i in range(n // threads):
            conn.execute(statement, (lines[i & mask],))

    try:
        settle()
        start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
        in_threads(threads, insert_share)
        elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
    finally:
        for conn in connections:
            conn.close()
    return Run(elapsed, cpu, n, 0, "INSERT + COMMIT, synchronous_commit=on")
