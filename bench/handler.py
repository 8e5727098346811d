"""Benchmark of the application-side cost of auditlock (not a test: it reports, it never asserts).

    uv run python bench/handler.py                      # 200k events, median of 5 repeats
    uv run python bench/handler.py --events 2000 --repeats 1 --sync-events 320    # smoke run
    uv run python bench/handler.py --profile 50000      # cProfile of variant (a) + micro costs

Variants (each repeat writes to a fresh directory under one temp dir, so all on one filesystem):

(a) audit:     structlog [AuditProcessor(group, keep_in_app_log=false), TimeStamper, JSONRenderer(orjson)]
               + BytesLoggerFactory; the timing includes the final `processor.flush()` (an fdatasync).
(b) structlog: the same pipeline without AuditProcessor - what users run today without an audit trail.
(c) floor:     per event, build the equivalent record dict by hand, orjson.dumps it, a UUIDv7 string,
               sha256 of the previous line, os.write to an O_APPEND fd.
(sN) sync:     (a) with durability "sync" from N threads at once (N = 1, 4, 16; each logging call returns once its
               line is fdatasync'd), against
(gN) the group-commit floor: (c) appended under a lock by N threads, each returning once an fdatasync that began
               after its write completed (one fdatasync covers every line written before it: leader/follower), and
(pN) PostgreSQL: N connections, each INSERT (the same JSON line) + COMMIT with fsync and synchronous_commit on, on a
               throwaway server in the same temp dir (skipped when no PostgreSQL server binaries are installed).
(e0)/(e2) erasable fields (issue #19): a customer event through AuditProcessor, plain against two erasable fields
               sealed under the subject's cached key (bench/erasure.py builds both; goal e2 <= 1.5 x e0 in CPU time).

Fairness: the variants run in a new shuffled order each repeat (seed printed, `--seed`), each in a fresh directory;
nothing is deleted until the end (an fdatasync right after deleting 100 MB was measured 2x slower), and
`os.sync()` before each timed run writes back what the previous one left dirty.

A readable table goes to stdout; the LAST line is exactly one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

import auditlock
from auditlock.config import build_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SYNC_THREADS = (1, 4, 16)

EVENT = "order.updated"
ACTOR_ID = "user:82"
ACTOR_IP = "203.0.113.7"
SERVICE = "billing-api"
ALLOWED = ("status", "total", "currency", "items", "reason")
POOL = 4096  # distinct (target_id, before, after) argument sets, cycled
STATUSES = ("pending", "paid", "shipped", "delivered", "refunded")
REASON = "support_request"
DROPPED_KWARG = "customer_email"  # not allowlisted: auditlock must drop it before serialising


# --- the events --------------------------------------------------------------------------------------


def make_pool() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Argument sets: a str target id and before/after dicts of 4 allowlisted fields, `status` changing."""
    pool = []
    for i in range(POOL):
        before = {"status": STATUSES[i % 5], "total": f"{100 + i % 900}.90", "currency": "EUR", "items": 1 + i % 7}
        after = {**before, "status": STATUSES[(i + 1) % 5]}
        pool.append((str(4_100_000 + i * 7919), before, after))
    return pool


def drive(log: Any, n: int, pool: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Emit `n` order.updated events through a structlog logger (the same call for (a), (b) and sync)."""
    info = log.info
    mask = POOL - 1
    for i in range(n):
        target_id, before, after = pool[i & mask]
        info(EVENT, target_type="Order", target_id=target_id, before=before, after=after, reason=REASON,
             customer_email="jane.doe@example.com")


def config(spool_dir: Path, durability: str, *, flush_interval_ms: int = 200) -> auditlock.Config:
    """The auditlock config of the benchmark (built in code, as an embedder would)."""
    return build_config({
        "service": SERVICE,
        "spool": {"dir": str(spool_dir), "durability": durability, "flush_interval_ms": flush_interval_ms},
        "events": {"include": ["order.*"], "keep_in_app_log": False},
        "targets": {"Order": {"fields": list(ALLOWED)}},
        "retention": {"default": "standard", "classes": {"standard": {"days": 400}}},
    })


# --- timed variants ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run: wall and CPU nanoseconds, events, bytes written, and notes for the table."""

    ns: int
    cpu_ns: int  # this process's CPU time, every thread (PostgreSQL's server processes not included)
    events: int
    bytes: int
    notes: str = ""

    @property
    def us(self) -> float:
        """Microseconds per event."""
        return self.ns / self.events / 1000

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per event, this process's."""
        return self.cpu_ns / self.events / 1000


def fresh_dir(root: Path, name: str) -> Path:
    """A new empty directory under the benchmark's temp root."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


def structlog_configure(processors: list[Any], app_log: io.BufferedWriter) -> Any:
    """Configure structlog as a service would, and return a (cached-on-first-use) logger."""
    structlog.reset_defaults()
    structlog.configure(processors=processors, logger_factory=structlog.BytesLoggerFactory(app_log),
                        cache_logger_on_first_use=True)
    return structlog.get_logger()


def renderers() -> list[Any]:
    """TimeStamper + JSONRenderer(orjson), the tail of every structlog pipeline here."""
    return [structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps)]


def run_audit(root: Path, n: int, pool: list[Any], durability: str, *, flush_interval_ms: int = 200,
              threads: int = 1) -> Run:
    """(a) / (sN): the structlog pipeline with AuditProcessor in front, from `threads` threads each logging
    n / threads events; the final flush is timed."""
    work = fresh_dir(root, f"audit-{durability}-{threads}")
    processor = auditlock.AuditProcessor(config(work / "spool", durability, flush_interval_ms=flush_interval_ms))
    n -= n % threads
    try:
        with (work / "app.log").open("wb") as app_log:
            log = structlog_configure([processor, *renderers()], app_log)
            settle()

            def drive_share() -> None:
                with auditlock.actor(ACTOR_ID, ip=ACTOR_IP):  # the actor is bound per thread
                    drive(log, n // threads, pool)

            start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
            in_threads(threads, drive_share)
            flushed = processor.flush()
            elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
        stats = dict(processor.core.writer.stats)
    finally:
        processor.close()
        structlog.reset_defaults()
    app_bytes = (work / "app.log").stat().st_size
    check_spool(work / "spool", n)
    notes = f"segments sealed {stats['segments_sealed']}, app log {app_bytes} B"
    if not flushed or stats["events"] != n or app_bytes:
        notes += f" [WARNING flushed={flushed} events={stats['events']}]"
    return Run(elapsed, cpu, n, stats["bytes"], notes)


def in_threads(count: int, work: Callable[[], None]) -> None:
    """Run `work` in `count` threads started together (in this thread when `count` is 1); re-raise a failure."""
    if count == 1:
        work()
        return
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run() -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def settle() -> None:
    """Before a timed run: write back every dirty page (the previous run's), collect garbage."""
    os.sync()
    gc.collect()


def check_spool(spool: Path, n: int) -> None:
    """Spot-check the written trail: n events and the writer's clean-end line, allowlist applied, change recorded
    (prints, never raises)."""
    files = sorted(spool.glob("*.jsonl"))
    data = b"".join(f.read_bytes() for f in files)
    lines = data.count(b"\n")
    closings = data.count(b'"event_type":"auditlock.writer_closed"')
    first = orjson.loads(files[0].read_bytes().split(b"\n", 1)[0]) if files else {}
    payload = first.get("payload", {})
    problems = []
    if lines - closings != n or closings != 1:
        problems.append(f"{lines - closings} event lines and {closings} clean-end lines for {n} events")
    if DROPPED_KWARG in payload or "changes" not in payload or first.get("actor_ip") != ACTOR_IP:
        problems.append(f"unexpected record {first}")
    if problems:
        print("WARNING spool check:", "; ".join(problems))


def run_structlog(root: Path, n: int, pool: list[Any]) -> Run:
    """(b): plain structlog TimeStamper + JSONRenderer(orjson) + BytesLoggerFactory to a file."""
    work = fresh_dir(root, "structlog")
    try:
        with (work / "app.log").open("wb") as app_log:
            log = structlog_configure(renderers(), app_log)
            settle()
            with auditlock.actor(ACTOR_ID, ip=ACTOR_IP):
                start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
                drive(log, n, pool)
                elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
    finally:
        structlog.reset_defaults()
    size = (work / "app.log").stat().st_size
    return Run(elapsed, cpu, n, size, "no fsync")


def run_structlog_drop(root: Path, n: int, pool: list[Any]) -> Run:
    """Reference: structlog's own per-call cost, with a first processor that drops every event at once."""
    work = fresh_dir(root, "drop")
    try:
        with (work / "app.log").open("wb") as app_log:
            log = structlog_configure([_drop_at_once, *renderers()], app_log)
            settle()
            start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
            drive(log, n, pool)
            elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
    finally:
        structlog.reset_defaults()
    return Run(elapsed, cpu, n, 0, "structlog call + DropEvent only: the part of (a) auditlock cannot remove")


def _drop_at_once(_logger: Any, _method: str, _event_dict: Any) -> Any:
    raise structlog.DropEvent


class Floor:
    """(c): the least work an audit line needs, written directly (no structlog, no validation)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.writer = os.urandom(16).hex()
        self.host = os.uname().nodename
        self.seq = 0
        self.prev = "0" * 64
        self._second = -1
        self._prefix = ""
        self.allowed = frozenset(ALLOWED)

    def emit(self, target_id: str, before: dict[str, Any], after: dict[str, Any], **extra: Any) -> None:
        """Build, serialise, chain and append one record."""
        now = time.time_ns()
        second, ns = divmod(now, 1_000_000_000)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        allowed = self.allowed
        payload: dict[str, Any] = {k: v for k, v in extra.items() if k in allowed}
        payload["changes"] = {k: [before.get(k), v] for k, v in after.items() if k in allowed and before.get(k) != v}
        record = {
            "schema": "auditlock/1", "event_id": uuid7(now), "event_type": EVENT,
            "occurred_at": f"{self._prefix}.{ns // 1000:06d}Z", "actor_id": ACTOR_ID, "actor_type": "user",
            "actor_ip": ACTOR_IP, "target_type": "Order", "target_id": target_id, "payload": payload,
            "service": SERVICE, "host": self.host, "retention": "standard", "trace_id": None, "span_id": None,
            "writer": self.writer, "seq": self.seq, "prev": self.prev,
        }
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        os.write(self.fd, line)
        self.last_line = line[:-1]
        self.seq += 1
        self.prev = hashlib.sha256(memoryview(line)[:-1]).hexdigest()


def uuid7(now_ns: int) -> str:
    """A UUIDv7 string: 48 bits of ms, version, 12 bits of sub-ms time, variant, 62 random bits."""
    ms, sub_ns = divmod(now_ns, 1_000_000)
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (sub_ns * 4096 // 1_000_000) << 64 | 0b10 << 62
             | int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class GroupCommitFloor:
    """(gN): the least a durable multi-threaded audit trail needs — (c) appended under a lock, then the caller waits
    until an fdatasync that began after its write completed; one fdatasync covers every line written before it
    (whoever finds none running starts the next one: leader/follower)."""

    def __init__(self, fd: int) -> None:
        self.floor = Floor(fd)
        self.lock = threading.Lock()
        self.cond = threading.Condition()
        self.written = 0  # lines completely written
        self.durable = 0  # lines covered by a completed fdatasync
        self.syncing = False

    def emit(self, target_id: str, before: dict[str, Any], after: dict[str, Any], **extra: Any) -> None:
        """Append one record, return once it is durable."""
        with self.lock:
            self.floor.emit(target_id, before, after, **extra)
            self.written += 1
            mine = self.written
        with self.cond:
            while self.durable < mine:
                if self.syncing:
                    self.cond.wait()
                    continue
                self.syncing, covers = True, self.written
                self.cond.release()
                try:
                    os.fdatasync(self.floor.fd)
                finally:
                    self.cond.acquire()
                    self.syncing = False
                self.durable = max(self.durable, covers)
                self.cond.notify_all()


def run_floor(root: Path, n: int, pool: list[Any], *, threads: int = 0) -> Run:
    """(c); with `threads` the group-commit floor (gN) of the sync variants, from that many threads."""
    work = fresh_dir(root, f"floor-{threads}")
    fd = os.open(work / "floor.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    n -= n % max(threads, 1)
    try:
        emit = GroupCommitFloor(fd).emit if threads else Floor(fd).emit

        def emit_share() -> None:
            mask = POOL - 1
            for i in range(n // max(threads, 1)):
                target_id, before, after = pool[i & mask]
                emit(target_id, before, after, reason=REASON, customer_email="jane.doe@example.com")

        settle()
        start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
        in_threads(max(threads, 1), emit_share)
        elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
        sync_start = time.perf_counter_ns()
        os.fdatasync(fd)
        final_sync_ns = time.perf_counter_ns() - sync_start
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    notes = "group commit" if threads else f"no fsync (a final fdatasync took {final_sync_ns / 1e6:.0f} ms)"
    return Run(elapsed, cpu, n, size, notes)


# --- PostgreSQL --------------------------------------------------------------------------------------


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


# --- import time -------------------------------------------------------------------------------------


def import_ms(repeats: int) -> tuple[float, float, float, list[tuple[str, float]]]:
    """`import auditlock` in a fresh interpreter.

    Returns wall ms minus `pass`, wall ms when structlog and orjson are already imported (as in an app that
    logs with them), the -X importtime cumulative ms, and the heaviest imports auditlock's modules make.
    """
    def wall(code: str) -> float:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        return statistics.median(samples)

    wall("import auditlock")  # warm the page cache
    delta = wall("import auditlock") - wall("pass")
    deps = "import structlog, orjson"
    delta_after_deps = wall(f"{deps}; import auditlock") - wall(deps)
    totals: list[float] = []
    heavy: dict[str, list[float]] = {}
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import auditlock"], check=True,
                             capture_output=True, text=True).stderr
        for name, cumulative_ms in _foreign_imports(out):
            heavy.setdefault(name, []).append(cumulative_ms)
            if name == "auditlock":
                totals.append(cumulative_ms)
    top = sorted(((k, statistics.median(v)) for k, v in heavy.items() if k != "auditlock"), key=lambda kv: -kv[1])
    return delta, delta_after_deps, statistics.median(totals) if totals else float("nan"), top[:8]


def _foreign_imports(importtime: str) -> list[tuple[str, float]]:
    """`auditlock` itself and each non-auditlock module imported directly by an auditlock module (ms, cumulative).

    `-X importtime` prints a module after its children, indented two spaces per level.
    """
    rows = []
    for row in importtime.splitlines():
        parts = row.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            rows.append((name.strip(), (len(name) - len(name.lstrip())) // 2, int(parts[1]) / 1000))
    found = []
    for i, (name, depth, cumulative_ms) in enumerate(rows):
        parent = next((r[0] for r in rows[i + 1:] if r[1] < depth), None)
        if name == "auditlock" or (parent is not None and parent.startswith("auditlock")
                                   and not name.startswith("auditlock")):
            found.append((name, cumulative_ms))
    return found


# --- profile -----------------------------------------------------------------------------------------


def profile(root: Path, n: int, pool: list[Any], top: int) -> dict[str, Any]:
    """cProfile variant (a) over `n` events; print the hottest functions, return the auditlock ones."""
    work = fresh_dir(root, "profile")
    processor = auditlock.AuditProcessor(config(work / "spool", "group"))
    profiler = cProfile.Profile()
    try:
        with (work / "app.log").open("wb") as app_log:
            log = structlog_configure([processor, *renderers()], app_log)
            with auditlock.actor(ACTOR_ID, ip=ACTOR_IP):
                drive(log, 100, pool)  # open the segment, fill caches
                profiler.enable()
                drive(log, n, pool)
                processor.flush()
                profiler.disable()
    finally:
        processor.close()
        structlog.reset_defaults()
        shutil.rmtree(work)
    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"func": f"{_short(file)}:{line}({func})", "ncalls": ncalls, "tottime_s": tottime,
                     "cumtime_s": cumtime, "tot_us_per_call": tottime / ncalls * 1e6,
                     "cum_us_per_call": cumtime / ncalls * 1e6, "tot_us_per_event": tottime / n * 1e6,
                     "cum_us_per_event": cumtime / n * 1e6})
    total = sum(r["tottime_s"] for r in rows)
    print(f"\ncProfile of (a) over {n} events: {total / n * 1e6:.2f} us/event under the profiler\n")
    for key, title in (("tottime_s", "by own time"), ("cumtime_s", "by cumulative time")):
        print(f"-- top {top} {title}")
        print(f"{'function':<72} {'ncalls':>8} {'own us/call':>11} {'cum us/call':>11} {'own us/ev':>9} "
              f"{'cum us/ev':>9}")
        for r in sorted(rows, key=lambda r: -r[key])[:top]:
            print(f"{r['func'][:72]:<72} {r['ncalls']:>8} {r['tot_us_per_call']:>11.3f} {r['cum_us_per_call']:>11.3f} "
                  f"{r['tot_us_per_event']:>9.3f} {r['cum_us_per_event']:>9.3f}")
        print()
    mine = sorted((r for r in rows if r["func"].startswith("auditlock/")), key=lambda r: -r["tottime_s"])
    return {"profile_events": n, "profiled_us_per_event": total / n * 1e6,
            "auditlock_hot": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                               if k in ("func", "ncalls", "tot_us_per_call", "cum_us_per_event")}
                              for r in mine[:top]]}


def _short(file: str) -> str:
    marker = f"src{os.sep}auditlock{os.sep}"
    if marker in file:
        return "auditlock/" + file.split(marker, 1)[1]
    return file.rsplit("site-packages/", 1)[-1] if "site-packages/" in file else file


def micro(pool: list[Any], root: Path) -> list[tuple[str, float]]:
    """Per-call cost (ns, best of 5, no profiler) of the pieces of one audit event."""
    from auditlock.handler import record as record_mod
    from auditlock.handler.encode import encode_value
    from auditlock.spool.chain import UtcClock, uuid7_str
    from auditlock.spool.format import line_hash

    work = fresh_dir(root, "micro")
    cfg = config(work / "spool", "group", flush_interval_ms=3_600_000)
    processor = auditlock.AuditProcessor(cfg)
    core = processor.core
    target_id, before, after = pool[1]
    fields = {"target_type": "Order", "target_id": target_id, "before": before, "after": after, "reason": REASON,
              "customer_email": "jane.doe@example.com", "event": EVENT}
    clock = UtcClock()
    now = time.time_ns()
    cases: list[tuple[str, Callable[[], Any]]] = []
    with auditlock.actor(ACTOR_ID, ip=ACTOR_IP):
        record = core.build(EVENT, fields)
        builder = core._builder
        plan = builder._plans[(EVENT, "Order")]
        core.writer.append(dict(record))  # open the segment
        line, _month = core.writer.chain.stamp(dict(record))
        cases = [
            ("AuditProcessor.__call__ (whole audit path)", lambda: _swallow(processor, fields)),
            ("AuditCore.build", lambda: core.build(EVENT, fields)),
            ("SpoolWriter.append", lambda: core.writer.append(dict(record))),
            ("EventChain.stamp", lambda: core.writer.chain.stamp(dict(record))),
            ("record._actor_of", lambda: record_mod._actor_of(EVENT, fields)),
            ("RecordBuilder._payload", lambda: builder._payload(EVENT, fields, plan)),
            ("RecordBuilder._changes", lambda: builder._changes(EVENT, before, after, plan)),
            ("record._trace_ids", record_mod._trace_ids),
            ("encode_value(str)", lambda: encode_value(REASON, "payload.reason")),
            ("uuid7_str", lambda: uuid7_str(now)),
            ("os.urandom(8)", lambda: os.urandom(8)),
            ("UtcClock.format", lambda: clock.format(now)),
            ("orjson.dumps(record)", lambda: orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)),
            ("line_hash(memoryview(line)[:-1])", lambda: line_hash(memoryview(line)[:-1])),
            ("os.write(O_APPEND) of a line", lambda: os.write(core.writer._segment.fd, line)),  # type: ignore[union-attr]
            ("raise+catch DropEvent", _drop_event),
            ("MAP_SHARED copy of a line + commit byte", MappedAppend(work / "mapped", line).append),
        ]
        results = [(name, _best_ns(fn)) for name, fn in cases]
    processor.close()
    shutil.rmtree(work)
    return results


class MappedAppend:
    """What an append into a preallocated MAP_SHARED segment would cost (docs/architecture.md: not done)."""

    SIZE = 64 * 1024 * 1024

    def __init__(self, path: Path, line: bytes) -> None:
        import mmap

        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.posix_fallocate(fd, 0, self.SIZE)
        self.map = mmap.mmap(fd, self.SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)
        self.line, self.offset = line, 0

    def append(self) -> None:
        """Copy the line, then its commit byte (readers would stop at the first line without one)."""
        end = self.offset + len(self.line)
        if end + 1 > self.SIZE:
            self.offset, end = 0, len(self.line)
        self.map[self.offset:end] = self.line
        self.map[end:end + 1] = b"\x01"
        self.offset = end + 1


def _swallow(processor: Any, fields: dict[str, Any]) -> None:
    with contextlib.suppress(structlog.DropEvent):
        processor(None, "info", dict(fields))


def _drop_event() -> None:
    try:
        raise structlog.DropEvent
    except structlog.DropEvent:
        pass


def _best_ns(fn: Callable[[], Any], number: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / number)
    return best


# --- main --------------------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    """The run with the median time (its notes and bytes stay with it)."""
    return sorted(runs, key=lambda r: r.ns)[len(runs) // 2]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with --profile, the profile) and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events per repeat of (a), (b), (c)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the median is reported")
    parser.add_argument("--sync-events", type=int, default=3200, help="events per repeat of each sync variant")
    parser.add_argument("--seed", type=int, default=None, help="seed of the variants' order (default: random)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL variants")
    parser.add_argument("--import-repeats", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp dir (default: $TMPDIR)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of the benchmark: cProfile (a) over N events and time its parts")
    parser.add_argument("--top", type=int, default=25, help="rows of the profile tables")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)

    root = Path(tempfile.mkdtemp(prefix="auditlock-bench-", dir=args.dir))
    pool = make_pool()
    try:
        result = run_profile(root, pool, args) if args.profile else run_benchmark(root, pool, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, separators=(",", ":")))


def run_profile(root: Path, pool: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """--profile: cProfile tables, then the unprofiled per-call cost of each part."""
    result = profile(root, args.profile, pool, args.top)
    print("-- per-call cost without the profiler (best of 5 x 20k calls)")
    costs = micro(pool, root)
    for name, ns in costs:
        print(f"{name:<48} {ns / 1000:>8.3f} us")
    result["micro_us"] = {name: round(ns / 1000, 3) for name, ns in costs}
    return result


def variants_of(root: Path, pool: list[Any], args: argparse.Namespace, server: Any) -> dict[str, Callable[[], Run]]:
    """Every timed variant by its table name."""
    n, sync_n = args.events, args.sync_events
    variants: dict[str, Callable[[], Run]] = {
        "(a) audit, group": lambda: run_audit(root, n, pool, "group"),
        "(b) structlog": lambda: run_structlog(root, n, pool),
        "(c) floor": lambda: run_floor(root, n, pool),
        "(r) structlog, drop at once": lambda: run_structlog_drop(root, n, pool),
        "(a') audit, group, no flusher": lambda: run_audit(root, n, pool, "group", flush_interval_ms=3_600_000),
    }
    for erasable in (False, True):  # issue #19: two erasable fields (cached key) against the plain event
        name = "(e2) customer, 2 erasable fields" if erasable else "(e0) customer, plain"
        variants[name] = lambda e=erasable: run_erasure(root, n, erasable=e)
    lines = audit_lines(pool)
    for threads in SYNC_THREADS:
        variants[f"(s{threads}) audit, sync"] = lambda t=threads: run_audit(root, sync_n, pool, "sync", threads=t)
        variants[f"(g{threads}) group-commit floor"] = lambda t=threads: run_floor(root, sync_n, pool, threads=t)
        if server is not None:
            variants[f"(p{threads}) postgres sync commit"] = lambda t=threads: run_postgres(server, sync_n, lines, t)
    return variants


def run_erasure(root: Path, n: int, *, erasable: bool) -> Run:
    """A customer event through AuditProcessor (group mode), plain or with two erasable fields sealed under the
    subject's cached key (`bench/erasure.py` builds both; its own script compares them on their own)."""
    import erasure

    wall, cpu = erasure.run(fresh_dir(root, "erasure"), n, erasable=erasable)
    return Run(int(wall * 1e9), int(cpu * 1e9), n, 0, "sealed (AES-GCM)" if erasable else "")


def run_benchmark(root: Path, pool: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run the variants `repeats` times, in a new shuffled order each time; print the table, return the JSON."""
    server = None if args.no_postgres else start_postgres()
    try:
        variants = variants_of(root, pool, args, server)
        rng = random.Random(args.seed)
        runs: dict[str, list[Run]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            order = list(variants)
            rng.shuffle(order)
            for name in order:
                runs[name].append(variants[name]())
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{k.split()[0]} {v[-1].us:.2f}"
                                                                      for k, v in runs.items()), flush=True)
    finally:
        if server is not None:
            server.stop()
    med = {name: median_run(r) for name, r in runs.items()}
    imp_ms, imp_after_deps_ms, imp_self_ms, imp_top = import_ms(args.import_repeats)
    print(f"\nauditlock handler benchmark: {args.events} events (sync variants: {args.sync_events}), median of "
          f"{args.repeats}, order seed {args.seed}, python {sys.version.split()[0]}, structlog "
          f"{structlog.__version__}, temp dir {root.parent}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'variant':<32} {'us/event':>9} {'min':>8} {'max':>8} {'cpu us':>8} {'B/event':>8}  notes")
    for name, r in runs.items():
        m = med[name]
        print(f"{name:<32} {m.us:>9.2f} {min(x.us for x in r):>8.2f} {max(x.us for x in r):>8.2f} "
              f"{statistics.median(x.cpu_us for x in r):>8.2f} {m.bytes / m.events:>8.0f}  {m.notes}")
    result = summary(med, {name: statistics.median(x.cpu_us for x in r) for name, r in runs.items()}, args)
    print(f"\ngroup: a/b = {result['audit_vs_structlog']:.3f} (goal <= 1.5)   a/c = {result['audit_vs_floor']:.3f} "
          f"(goal <= 1.3); in CPU time a/b = {result['audit_vs_structlog_cpu']:.3f}, "
          f"a/c = {result['audit_vs_floor_cpu']:.3f}")
    print(f"erasable: an event with two erasable fields costs {result['erasable_vs_plain_cpu']:.3f}x a plain one in "
          f"CPU time (goal <= 1.5), {result['erasable_vs_plain']:.3f}x in wall time")
    for threads in SYNC_THREADS:
        vs_pg = result.get(f"sync_{threads}t_vs_postgres")
        vs_floor, scaling = result[f"sync_{threads}t_vs_group_floor"], result[f"sync_{threads}t_scaling"]
        postgres = f"{vs_pg:.2f}x PostgreSQL (goal at 16: >= 2)" if vs_pg else "PostgreSQL not measured"
        print(f"sync, {threads:>2} threads: throughput {vs_floor:.2f}x the group-commit floor (goal at 16: >= 0.8), "
              f"{postgres}; {scaling:.2f}x its own 1-thread throughput")
    print(f"import auditlock: {imp_ms:.1f} ms wall over `python -c pass`; -X importtime cumulative "
          f"{imp_self_ms:.1f} ms; {imp_after_deps_ms:.1f} ms when structlog + orjson are already imported")
    print("  heaviest imports made by auditlock modules (cumulative ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in imp_top))
    result.update({"import_ms": round(imp_ms, 1), "import_importtime_ms": round(imp_self_ms, 1),
                   "import_after_structlog_ms": round(imp_after_deps_ms, 1)})
    return result


def summary(med: dict[str, Run], cpu: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON line's numbers: group-mode costs and ratios, sync-mode throughput ratios per thread count (wall
    times of the median runs; CPU times are the medians of every run's)."""
    audit, plain, floor = med["(a) audit, group"], med["(b) structlog"], med["(c) floor"]
    result: dict[str, Any] = {
        "audit_us": round(audit.us, 3), "structlog_us": round(plain.us, 3), "floor_us": round(floor.us, 3),
        "audit_vs_structlog": round(audit.us / plain.us, 3), "audit_vs_floor": round(audit.us / floor.us, 3),
        "audit_cpu_us": round(cpu["(a) audit, group"], 3), "structlog_cpu_us": round(cpu["(b) structlog"], 3),
        "floor_cpu_us": round(cpu["(c) floor"], 3),
        "audit_vs_structlog_cpu": round(cpu["(a) audit, group"] / cpu["(b) structlog"], 3),
        "audit_vs_floor_cpu": round(cpu["(a) audit, group"] / cpu["(c) floor"], 3),
        "audit_no_flusher_us": round(med["(a') audit, group, no flusher"].us, 3),
        "structlog_drop_us": round(med["(r) structlog, drop at once"].us, 3),
        "erasable_us": round(med["(e2) customer, 2 erasable fields"].us, 3),
        "erasable_plain_us": round(med["(e0) customer, plain"].us, 3),
        "erasable_vs_plain": round(med["(e2) customer, 2 erasable fields"].us / med["(e0) customer, plain"].us, 3),
        "erasable_vs_plain_cpu": round(cpu["(e2) customer, 2 erasable fields"] / cpu["(e0) customer, plain"], 3),
    }
    one_thread = med["(s1) audit, sync"].us
    for threads in SYNC_THREADS:
        sync, group_floor = med[f"(s{threads}) audit, sync"], med[f"(g{threads}) group-commit floor"]
        result[f"sync_{threads}t_us"] = round(sync.us, 2)
        result[f"group_floor_{threads}t_us"] = round(group_floor.us, 2)
        result[f"sync_{threads}t_vs_group_floor"] = round(group_floor.us / sync.us, 3)  # throughput ratio
        result[f"sync_{threads}t_scaling"] = round(one_thread / sync.us, 2)
        result[f"sync_{threads}t_cpu_us"] = round(cpu[f"(s{threads}) audit, sync"], 2)
        result[f"group_floor_{threads}t_cpu_us"] = round(cpu[f"(g{threads}) group-commit floor"], 2)
        postgres = med.get(f"(p{threads}) postgres sync commit")
        if postgres is not None:
            result[f"postgres_{threads}t_us"] = round(postgres.us, 2)
            result[f"sync_{threads}t_vs_postgres"] = round(postgres.us / sync.us, 3)
            # The ceiling of the design: the hand-written group-commit floor against PostgreSQL on the same disk.
            result[f"group_floor_{threads}t_vs_postgres"] = round(postgres.us / group_floor.us, 3)
    result.update({"events": args.events, "sync_events": args.sync_events, "repeats": args.repeats,
                   "seed": args.seed, "load_average": round(os.getloadavg()[0], 2),
                   "event_bytes": round(audit.bytes / audit.events),
                   "floor_event_bytes": round(floor.bytes / floor.events),
                   "app_log_event_bytes": round(plain.bytes / plain.events)})
    return result


if __name__ == "__main__":
    main()
