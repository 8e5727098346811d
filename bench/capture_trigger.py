"""What the session trigger costs the write path, before and after restricted attribution (issue #18).

    uv run python bench/capture_trigger.py [--txns 60000] [--rounds 5] [--seconds 6] [--trials 6]

Four databases on one throwaway server (fsync and synchronous commit on), each a 100k-row pgbench-style table:
`plain` (nothing), `before` (REPLICA IDENTITY FULL and the statement trigger as it was: the message emitted in
`note_session()` itself), `now` (what `--setup` installs: `note_session()` calling the SECURITY DEFINER
`emit_session()` once per transaction, `pg_logical_emit_message` revoked from PUBLIC) and `now_noset` (the same
definer function without `SET search_path`, every name qualified instead: the clause's share). Two measures, the
variants alternating in every round so the machine's load moves all of them:

- in-process: one backend runs a procedure of `--txns` single-row UPDATE transactions (COMMIT after each,
  `synchronous_commit = off`), its own CPU from /proc; µs per transaction, the minimum over `--rounds`;
- pgbench: 4 clients, `--trials` runs of `--seconds` per variant; tps, and the server's CPU per transaction (the
  postmaster's reaped children and its live ones, from /proc).

Prints one JSON object. Not a test: it reports, it never asserts. Needs to read the server's /proc entries (run as
root or as the server's user).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.postgres import PostgresServer, postgres_bindir

from auditlock.capture import setup

# note_session() before #18: it emitted the message itself (pg_logical_emit_message executable by PUBLIC).
BEFORE_SESSION_FUNCTION = """CREATE OR REPLACE FUNCTION auditlock_capture.note_session() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  xid text := pg_catalog.pg_current_xact_id()::text;
BEGIN
  IF COALESCE(pg_catalog.current_setting('auditlock.session_noted', true), '') OPERATOR(pg_catalog.<>) xid THEN
    PERFORM pg_catalog.pg_logical_emit_message(true, 'auditlock.session', pg_catalog.json_build_object(
      'role', session_user::text, 'application_name', pg_catalog.current_setting('application_name'),
      'client_addr', pg_catalog.host(pg_catalog.inet_client_addr()))::text);
    PERFORM pg_catalog.set_config('auditlock.session_noted', xid, true);
  END IF;
  RETURN NULL;
END $fn$"""
EMIT_SESSION_NOSET = """CREATE OR REPLACE FUNCTION auditlock_capture.emit_session() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
BEGIN
  PERFORM pg_catalog.pg_logical_emit_message(true, 'auditlock.session', pg_catalog.json_build_object(
    'role', session_user::pg_catalog.text, 'application_name', pg_catalog.current_setting('application_name'),
    'client_addr', pg_catalog.host(pg_catalog.inet_client_addr()))::pg_catalog.text);
END $fn$"""
TRIGGER = ("CREATE OR REPLACE TRIGGER auditlock_capture_session BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "
           "accounts FOR EACH STATEMENT EXECUTE FUNCTION auditlock_capture.note_session()")
NOW = ["ALTER TABLE accounts REPLICA IDENTITY FULL", "CREATE SCHEMA auditlock_capture",
       "GRANT USAGE ON SCHEMA auditlock_capture TO PUBLIC", setup.EMIT_SESSION_FUNCTION, setup.SESSION_FUNCTION,
       TRIGGER, "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC"]
VARIANTS = {
    "plain": [],
    "before": ["ALTER TABLE accounts REPLICA IDENTITY FULL", "CREATE SCHEMA auditlock_capture",
               BEFORE_SESSION_FUNCTION, TRIGGER],
    "now": NOW,
    "now_noset": [EMIT_SESSION_NOSET if s == setup.EMIT_SESSION_FUNCTION else s for s in NOW],
}
PROCEDURE = """CREATE PROCEDURE bench_updates(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    UPDATE accounts SET abalance = abalance + 1 WHERE aid = 1 + (i * 7919) % 100000;
    COMMIT;
  END LOOP;
END $$"""
PGBENCH_SCRIPT = ("\\set aid random(1, 100000)\n\\set delta random(-5000, 5000)\n"
                  "UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;\n")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def server_ticks(server: PostgresServer) -> int:
    """The server's CPU so far: the postmaster's own and reaped children's, and its live children's."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # ended in between: counted in the reaped children next time
            total += cpu_ticks(int(child))
    return total


def create(server: PostgresServer) -> None:
    """The four databases."""
    for name, statements in VARIANTS.items():
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        with psycopg.connect(server.dsn(name), autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (aid integer PRIMARY KEY, abalance integer NOT NULL, filler text)")
            conn.execute("INSERT INTO accounts SELECT g, 0, repeat('x', 80) FROM generate_series(1, 100000) g")
            conn.execute("VACUUM ANALYZE accounts")
            conn.execute(PROCEDURE.encode())
            for statement in statements:
                conn.execute(statement.encode())


def in_process(server: PostgresServer, txns: int, rounds: int) -> dict[str, list[float]]:
    """µs of backend CPU per transaction, per variant and round."""
    hz = os.sysconf("SC_CLK_TCK")
    runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            with psycopg.connect(server.dsn(name), autocommit=True) as conn:
                conn.execute("SET synchronous_commit = off")
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                conn.execute("CALL bench_updates(500)")  # warm: plans cached, the table in memory
                before = cpu_ticks(row[0])
                conn.execute(f"CALL bench_updates({int(txns)})".encode())
                runs[name].append((cpu_ticks(row[0]) - before) / hz / txns * 1e6)
    return runs


def pgbench(server: PostgresServer, seconds: int, trials: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """tps and server CPU µs per transaction, per variant and trial."""
    script = server.root / "update.sql"
    script.write_text(PGBENCH_SCRIPT)
    hz = os.sysconf("SC_CLK_TCK")
    tps: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(trials):
        for name in VARIANTS:
            before = server_ticks(server)
            done = subprocess.run([shutil.which("pgbench") or "pgbench", "-n", "-f", str(script), "-c", "4", "-j",
                                   "2", "-T", str(seconds), "-h", "127.0.0.1", "-p", str(server.port), "-U",
                                   "postgres", name], capture_output=True, text=True, check=True,
                                  timeout=seconds + 120)
            spent = server_ticks(server) - before
            count = re.search(r"actually processed: ([0-9]+)", done.stdout)
            rate = re.search(r"tps = ([0-9.]+)", done.stdout)
            if count is None or rate is None:
                raise SystemExit(f"pgbench printed no count or tps:\n{done.stdout}\n{done.stderr}")
            cpu[name].append(spent / hz / int(count[1]) * 1e6)
            tps[name].append(float(rate[1]))
    return tps, cpu


def main() -> None:
    """Run both measures; print one JSON object."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--txns", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    bindir = postgres_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found")
    server = PostgresServer(bindir, logical=True, durable=True).start()
    try:
        create(server)
        load_before = os.getloadavg()[0]
        inproc = in_process(server, args.txns, args.rounds)
        tps, cpu = pgbench(server, args.seconds, args.trials) if args.trials else ({}, {})
        load_after = os.getloadavg()[0]
    finally:
        server.stop()
    median = statistics.median
    result: dict[str, Any] = {
        "inproc_us_per_txn": {n: sorted(round(v, 2) for v in vs) for n, vs in inproc.items()},
        "inproc_min_over_plain": {n: round(min(vs) - min(inproc["plain"]), 2) for n, vs in inproc.items()},
        "load_average_before": load_before, "load_average_after": load_after,
    }
    if tps:
        result |= {"tps": tps, "tps_median_vs_plain": {n: round(median(v) / median(tps["plain"]), 3)
                                                       for n, v in tps.items()},
                   "server_us_per_txn_median_over_plain": {n: round(median(v) - median(cpu["plain"]), 1)
                                                           for n, v in cpu.items()}}
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
