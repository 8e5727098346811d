"""(c) the floor and (gN) the group-commit floor: the least work an audit line needs, written directly."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from handlerbench.events import (
    ACTOR_ID,
    ACTOR_IP,
    ALLOWED,
    EVENT,
    POOL,
    REASON,
    SERVICE,
    Run,
    fresh_dir,
    in_threads,
    settle,
)


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
