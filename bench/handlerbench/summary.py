"""The benchmark run: every variant `repeats` times in a new shuffled order, the table, the JSON line's numbers."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import structlog

from handlerbench.events import SYNC_THREADS, Run
from handlerbench.importtime import import_ms
from handlerbench.postgres import start_postgres
from handlerbench.variants import variants_of


def median_run(runs: list[Run]) -> Run:
    """The run with the median time (its notes and bytes stay with it)."""
    return sorted(runs, key=lambda r: r.ns)[len(runs) // 2]


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
