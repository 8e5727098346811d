"""The structlog variants ((a)/(a')/(sN) with AuditProcessor, (b) plain, (r) drop at once), the erasable-field
variants (e0)/(e2), and every timed variant by its table name."""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog

import auditlock
from handlerbench.events import (
    ACTOR_ID,
    ACTOR_IP,
    DROPPED_KWARG,
    SYNC_THREADS,
    Run,
    config,
    drive,
    fresh_dir,
    in_threads,
    settle,
)
from handlerbench.floors import run_floor
from handlerbench.postgres import audit_lines, run_postgres


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
