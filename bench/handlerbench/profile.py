"""--profile: cProfile of variant (a), then the per-call cost of each piece of an audit event without the profiler."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog

import auditlock
from handlerbench.events import ACTOR_ID, ACTOR_IP, EVENT, REASON, config, drive, fresh_dir
from handlerbench.variants import renderers, structlog_configure


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


def run_profile(root: Path, pool: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """--profile: cProfile tables, then the unprofiled per-call cost of each part."""
    result = profile(root, args.profile, pool, args.top)
    print("-- per-call cost without the profiler (best of 5 x 20k calls)")
    costs = micro(pool, root)
    for name, ns in costs:
        print(f"{name:<48} {ns / 1000:>8.3f} us")
    result["micro_us"] = {name: round(ns / 1000, 3) for name, ns in costs}
    return result
