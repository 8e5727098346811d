"""Benchmark of `auditlock capture` on a throwaway PostgreSQL (not a test: it reports, it never asserts).

    uv run python bench/capture.py            # 50k row changes, pgbench 4 × 8 s per database and phase
    uv run python bench/capture.py --quick    # smoke run

(1) capture throughput: `--rows` row changes (INSERTs in transactions of 100 rows into a mapped table) are read
    from the slot by `python -m auditlock capture --once` (WAL → events durable in the spool, position written,
    slot advanced), the whole subprocess timed, nothing subtracted. The floor reads the same changes from a second
    slot created at the same point, with a hand-written loop (this script with --floor-child, a subprocess too):
    the same peek through a server-side cursor, a minimal pgoutput parse of each Insert (struct, no checks), one
    orjson line per row with the values, written to a file and fsync'd, the slot advanced. `capture_vs_floor` is
    rows/s of capture over rows/s of the floor (goal ≥ 0.7); CPU seconds (os.wait4) are reported too.
(2) write overhead: pgbench-style single-row UPDATE transactions (`pgbench -n -f`, 4 clients, 2 threads) on two
    identical 100k-row tables in two databases of the server: `plain` (nothing) and `bench` (mapped and set up:
    REPLICA IDENTITY FULL, the statement trigger, the slot). `--trials` runs of `--seconds`, alternating between
    the two so that the machine's load moves both: first with capture not running (`write_set_up_vs_without`: what
    the database pays on its write path), then with a long-running `auditlock capture` reading `bench`
    (`write_with_vs_without`, goal ≥ 0.95: on a small machine this includes capture's own CPU and the server's
    decoding, taken from the same cores as the writers).

The server runs with fsync and synchronous commit on, as in production (`--no-fsync`: the tests' settings).
A readable table goes to stdout; the LAST line is exactly one JSON object. The machine's load average is reported:
on a shared machine every figure moves with it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

if TYPE_CHECKING:
    from tests.support.postgres import PostgresServer

CONFIG = """service = "bench"
[spool]
dir = "{spool}"
segment_max_bytes = 16777216
[events]
include = ["{prefix}.*", "auditlock.*"]
[retention]
default = "standard"
[retention.classes.standard]
days = 30
[targets.{target}]
table = "public.{table}"
fields = {fields}
[capture]
dsn_env = "BENCH_CAPTURE_DSN"
slot = "{slot}"
publication = "{slot}_pub"
http_port = 0
poll_interval_s = 0.2
"""


def write_config(root: Path, *, table: str, target: str, prefix: str, fields: list[str], slot: str) -> Path:
    """A capture config for one table."""
    path = root / f"{slot}.toml"
    path.write_text(CONFIG.format(spool=root / f"spool-{slot}", table=table, target=target, prefix=prefix,
                                  fields=orjson.dumps(fields).decode(), slot=slot))
    return path


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of a subprocess that must succeed."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read().decode() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed:\n{stderr[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


# -- (1) capture throughput ---------------------------------------------------------------------------------


def throughput(server: PostgresServer, root: Path, rows: int, env: dict[str, str]) -> dict[str, Any]:
    """Capture vs the hand-written floor on the same `rows` inserts."""
    dsn = server.dsn("bench")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY, status text, total integer, note text)")
    config = write_config(root, table="orders", target="Order", prefix="order", fields=["status", "total", "note"],
                          slot="capture_tp")
    run_timed([sys.executable, "-m", "auditlock", "capture", "--config", str(config), "--setup"], env)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('floor_tp', 'pgoutput')")
        for start in range(0, rows, 100):
            conn.execute("INSERT INTO orders SELECT g, 'new', g, 'a note of some length' "
                         "FROM generate_series(%s::int, %s::int) g", (start, min(start + 99, rows - 1)))
    capture_wall, capture_cpu = run_timed([sys.executable, "-m", "auditlock", "capture", "--config", str(config),
                                           "--once"], env)
    floor_wall, floor_cpu = run_timed([sys.executable, __file__, "--floor-child", dsn, str(root / "floor.jsonl")],
                                      env)
    return {"rows": rows, "capture_rows_per_s": rows / capture_wall, "capture_cpu_s": capture_cpu,
            "floor_rows_per_s": rows / floor_wall, "floor_cpu_s": floor_cpu,
            "capture_vs_floor": floor_wall / capture_wall, "capture_vs_floor_cpu": floor_cpu / capture_cpu}


def floor_child(dsn: str, out: str) -> None:
    """The hand-written pgoutput read loop: peek, parse Inserts minimally, one JSON line per row, fsync, advance."""
    relations: dict[int, list[str]] = {}
    last_end = 0
    with psycopg.connect(dsn, autocommit=True) as conn, open(out, "wb") as sink:
        with conn.transaction(), conn.cursor(name="floor") as cursor:
            cursor.itersize = 2000
            cursor.execute("SELECT data FROM pg_logical_slot_peek_binary_changes('floor_tp', NULL, NULL, "
                           "'proto_version', '1', 'publication_names', 'capture_tp_pub', 'messages', 'true')")
            for (data,) in cursor:
                kind = data[0]
                if kind == 0x49:  # Insert
                    oid, count = struct.unpack_from("!Ixh", data, 1)
                    offset, values = 8, []
                    for _ in range(count):
                        if data[offset] == 0x74:
                            (size,) = struct.unpack_from("!i", data, offset + 1)
                            values.append(bytes(data[offset + 5:offset + 5 + size]).decode())
                            offset += 5 + size
                        else:
                            values.append(None)
                            offset += 1
                    sink.write(orjson.dumps(dict(zip(relations[oid], values, strict=False))) + b"\n")
                elif kind == 0x52:  # Relation
                    relations.update([relation_columns(bytes(data))])
                elif kind == 0x43:  # Commit
                    last_end = struct.unpack_from("!Q", data, 10)[0]
        sink.flush()
        os.fsync(sink.fileno())
        conn.execute("SELECT pg_replication_slot_advance('floor_tp', %s::pg_lsn)",
                     (f"{last_end >> 32:X}/{last_end & 0xFFFFFFFF:X}",))


def relation_columns(data: bytes) -> tuple[int, list[str]]:
    """A Relation message's oid and column names (the floor's minimal parse)."""
    oid = struct.unpack_from("!I", data, 1)[0]
    offset = data.index(b"\0", data.index(b"\0", 5) + 1) + 2  # namespace, name, replica identity
    (count,) = struct.unpack_from("!h", data, offset)
    offset += 2
    names = []
    for _ in range(count):
        end = data.index(b"\0", offset + 1)
        names.append(data[offset + 1:end].decode())
        offset = end + 9  # type oid, typmod
    return oid, names


# -- (2) write overhead -------------------------------------------------------------------------------------


def pgbench(server: PostgresServer, database: str, script: Path, seconds: int) -> float:
    """tps of one pgbench run."""
    done = subprocess.run([shutil.which("pgbench") or "pgbench", "-n", "-f", str(script), "-c", "4", "-j", "2", "-T",
                           str(seconds), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", database],
                          capture_output=True, text=True, check=True, timeout=seconds + 120)
    match = re.search(r"tps = ([0-9.]+)", done.stdout)
    if match is None:
        raise SystemExit(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    return float(match[1])


def accounts(server: PostgresServer, database: str) -> None:
    """The pgbench-style table: 100k rows."""
    with psycopg.connect(server.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (aid integer PRIMARY KEY, abalance integer NOT NULL, filler text)")
        conn.execute("INSERT INTO accounts SELECT g, 0, repeat('x', 80) FROM generate_series(1, 100000) g")
        conn.execute("VACUUM ANALYZE accounts")


def interleaved(server: PostgresServer, script: Path, trials: int, seconds: int) -> tuple[list[float], list[float]]:
    """tps of `trials` runs on the plain database and on the captured one, alternating (the load moves both)."""
    plain, captured = [], []
    for _ in range(trials):
        plain.append(pgbench(server, "plain", script, seconds))
        captured.append(pgbench(server, "bench", script, seconds))
    return plain, captured


def write_overhead(server: PostgresServer, root: Path, trials: int, seconds: int,
                   env: dict[str, str]) -> dict[str, Any]:
    """pgbench UPDATE tps on a plain database against one set up for capture, then with capture running."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE plain")
    accounts(server, "plain")
    accounts(server, "bench")
    script = root / "update.sql"
    script.write_text("\\set aid random(1, 100000)\n\\set delta random(-5000, 5000)\n"
                      "UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;\n")
    config = write_config(root, table="accounts", target="Account", prefix="account", fields=["abalance"],
                          slot="capture_wo")
    run_timed([sys.executable, "-m", "auditlock", "capture", "--config", str(config), "--setup"], env)
    plain_idle, set_up = interleaved(server, script, trials, seconds)
    child = subprocess.Popen([sys.executable, "-m", "auditlock", "capture", "--config", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        plain_busy, running = interleaved(server, script, trials, seconds)
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=300)
    median = statistics.median
    return {"tps_without": median(plain_idle), "tps_set_up_not_running": median(set_up),
            "write_set_up_vs_without": median(set_up) / median(plain_idle),
            "tps_without_while_capture_runs": median(plain_busy), "tps_with": median(running),
            "write_with_vs_without": median(running) / median(plain_busy),
            "tps_runs": {"without": plain_idle, "set_up": set_up, "without_while_running": plain_busy,
                         "with": running}}


def main() -> None:
    """Run both parts; print a table, then one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-fsync", action="store_true", help="the tests' server settings (fsync and synchronous "
                        "commit off): every write far cheaper, so the trigger's share far larger")
    parser.add_argument("--floor-child", nargs=2, metavar=("DSN", "OUT"))
    args = parser.parse_args()
    if args.floor_child:
        floor_child(*args.floor_child)
        return
    if args.quick:
        args.rows, args.trials, args.seconds = 5000, 1, 3
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres import PostgresServer, postgres_bindir  # the floor child never imports pytest

    bindir = postgres_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found")
    server = PostgresServer(bindir, logical=True, durable=not args.no_fsync).start()
    root = Path(tempfile.mkdtemp(prefix="auditlock-bench-capture-"))
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        env = {**os.environ, "BENCH_CAPTURE_DSN": server.dsn("bench")}
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")  # children start from cached bytecode, as installed
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        warm_ups = (["-m", "auditlock", "capture", "--help"],
                    ["-c", "import psycopg, orjson, auditlock.capture.service"])
        for warm in warm_ups:
            subprocess.run([sys.executable, *warm], env=env, check=True, capture_output=True)
        load_before = os.getloadavg()[0]
        result = {**throughput(server, root, args.rows, env),
                  **write_overhead(server, root, args.trials, args.seconds, env),
                  "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    for key, value in result.items():
        print(f"{key:32} {value:.2f}" if isinstance(value, float) else f"{key:32} {value}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
