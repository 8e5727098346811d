"""In-process A/B of versions of `spool/commit.py` in durability "sync" (not a test: it reports, it never asserts).

    git worktree add --detach /tmp/commit-base main
    uv run python bench/commit_ab.py --variant base=/tmp/commit-base/src/auditlock/spool/commit.py \
        --variant new=src/auditlock/spool/commit.py --threads 4 8 16 --rounds 9 [--count]

Each round runs every variant at every thread count (in a new shuffled order each round) in a fresh directory,
through the pipeline of bench/handler.py's (sN) variants, the `GroupCommit` of the variant swapped into the spool
writer. Per variant and thread count: the medians and every run of wall and CPU microseconds per event (the final
flush not timed). With --count (instrumented, so compare its timings only among themselves): condition wake-ups
(`threading.Condition.wait` returns) plus parked-slot wake-ups (`_Slot.park` returns) per event, and lines per
fdatasync.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

import auditlock
import auditlock.spool.writer as writer_module
from handlerbench.events import ACTOR_ID, ACTOR_IP, config, drive, fresh_dir, in_threads, make_pool, settle
from handlerbench.variants import renderers, structlog_configure

COUNTS = {"wakes": 0, "fdatasyncs": 0}
REAL_FDATASYNC = os.fdatasync


def load(name: str, path: str) -> ModuleType:
    """The module at `path`, under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"commit_{name}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CountingCondition(threading.Condition):
    """A condition counting its wake-ups."""

    def wait(self, timeout: float | None = None) -> bool:
        """Condition.wait, counted."""
        result = super().wait(timeout)
        COUNTS["wakes"] += 1
        return result


def counting_fdatasync(fd: int) -> None:
    """os.fdatasync, counted."""
    COUNTS["fdatasyncs"] += 1
    REAL_FDATASYNC(fd)


def instrument(module: ModuleType) -> Callable[[Any], None]:
    """Count the module's parked-slot wake-ups; the returned function swaps a group commit's condition(s) for
    counting ones."""
    if hasattr(module, "_Slot"):
        real_park = module._Slot.park

        def park(slot: Any) -> None:
            real_park(slot)
            COUNTS["wakes"] += 1

        module._Slot.park = park

    def swap(commit: Any) -> None:
        for name in ("_cond", "_progress"):
            if hasattr(commit, name):
                condition = getattr(commit, name)
                setattr(commit, name, CountingCondition(condition._lock))

    return swap


def run(root: Path, module: ModuleType, threads: int, n: int, pool: list[Any], *,
        swap: Callable[[Any], None] | None) -> tuple[float, float, float, float]:
    """One timed run: wall and CPU µs per event, wake-ups per event, lines per fdatasync (the last two if counted)."""
    writer_module.GroupCommit = module.GroupCommit  # type: ignore[misc]
    work = fresh_dir(root, f"sync-{threads}")
    processor = auditlock.AuditProcessor(config(work / "spool", "sync"))
    if swap is not None:
        swap(processor.core.writer._commit)
        COUNTS.update(wakes=0, fdatasyncs=0)
        os.fdatasync = counting_fdatasync
    n -= n % threads
    try:
        with (work / "app.log").open("wb") as app_log:
            log = structlog_configure([processor, *renderers()], app_log)
            settle()

            def share() -> None:
                with auditlock.actor(ACTOR_ID, ip=ACTOR_IP):
                    drive(log, n // threads, pool)

            start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
            in_threads(threads, share)
            elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
    finally:
        os.fdatasync = REAL_FDATASYNC
        processor.close()
        structlog.reset_defaults()
    shutil.rmtree(work, ignore_errors=True)
    return elapsed / n / 1000, cpu / n / 1000, COUNTS["wakes"] / n, n / max(COUNTS["fdatasyncs"], 1)


def report(results: dict[tuple[str, int], list[tuple[float, float, float, float]]], names: list[str],
           thread_counts: list[int], counted: bool) -> None:
    """One line per thread count and variant."""
    for threads in thread_counts:
        for name in names:
            rows = results[(name, threads)]
            wall, cpu = [row[0] for row in rows], [row[1] for row in rows]
            line = (f"{threads:>2}t {name:>6}: wall {statistics.median(wall):6.1f} µs/event, "
                    f"CPU {statistics.median(cpu):5.1f}  (walls {' '.join(f'{w:.1f}' for w in wall)}; "
                    f"CPUs {' '.join(f'{c:.1f}' for c in cpu)})")
            if counted:
                line += (f"  wake-ups/event {statistics.median(row[2] for row in rows):.2f}, "
                         f"lines/fdatasync {statistics.median(row[3] for row in rows):.1f}")
            print(line)


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--threads", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--events", type=int, default=3200, help="events per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", action="store_true", help="count wake-ups and fdatasyncs (instrumented runs)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    modules = {name: load(name, path) for name, path in (spec.split("=", 1) for spec in args.variant)}
    swaps = {name: instrument(module) if args.count else None for name, module in modules.items()}
    pool = make_pool()
    root = Path(tempfile.mkdtemp(prefix="commit-ab-"))
    results: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {
        (name, threads): [] for name in modules for threads in args.threads}
    print("load", os.getloadavg())
    try:
        for index in range(args.rounds):
            order = list(results)
            rng.shuffle(order)
            for name, threads in order:
                results[(name, threads)].append(run(root, modules[name], threads, args.events, pool,
                                                           swap=swaps[name]))
            print(f"round {index} done, load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results, list(modules), args.threads, args.count)
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
