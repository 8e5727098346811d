"""The events every variant emits, the benchmark's config, and the timing harness (a run, its directory, threads)."""

from __future__ import annotations

import gc
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import auditlock
from auditlock.config import build_config

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
