"""Benchmark of erasable fields on the application side (not a test: it reports, it never asserts).

    uv run python bench/erasure.py                       # 100k events per variant, median of 5 repeats
    uv run python bench/erasure.py --events 2000 --repeats 1      # smoke run

Each event is emitted through structlog with `AuditProcessor` in front (durability "group", a file key store,
keep_in_app_log = false), into a fresh spool each repeat, under two configs:

(p) plain:    `[targets.Customer] fields = ["name", "email", "tier"]`, nothing erasable;
(e) erasable: the same with `erasable = ["name", "email"]`: values sealed (AES-256-GCM) under the subject's data
              key — cached, so the key store is read once per subject, not per event.

Events: `created` — name and email in the payload (two erasable fields, two values sealed: the goal's case);
`updated` — name and email both changed (four values sealed, both sides of both changes).

The goal (issue #19) is (e) ≤ 1.5 × (p), compared on the process's CPU time (all its threads): the cost the
application pays, and steady on a loaded machine where wall time swings with other processes (wall time is
reported too). A readable table goes to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

import auditlock
from auditlock.config import build_config

SUBJECTS = 64  # distinct customers, cycled: every key is cached after the first 64 events
GOAL = 1.5


def config(root: Path, *, erasable: bool) -> auditlock.Config:
    """The benchmark config: one Customer target, its name and email erasable or not."""
    target: dict[str, Any] = {"fields": ["name", "email", "tier"]}
    if erasable:
        target["erasable"] = ["name", "email"]
    return build_config({
        "service": "bench", "spool": {"dir": str(root / "spool"), "durability": "group"},
        "events": {"include": ["customer.*"]}, "targets": {"Customer": target},
        "erasure": {"store": "file", "dir": str(root / "keys")},
        "retention": {"default": "standard", "classes": {"standard": {"days": 400}}},
    })


def emit_created(emit: Any, i: int) -> None:
    """customer.created with two erasable fields (name, email) and a plain one: two values sealed."""
    emit("customer.created", target_type="Customer", target_id=i % SUBJECTS, tier="gold", name="Jane Doe",
         email="jane.doe@example.com")


def emit_updated(emit: Any, i: int) -> None:
    """customer.updated changing name and email: four values sealed (both sides of both changes)."""
    emit("customer.updated", target_type="Customer", target_id=i % SUBJECTS, tier="gold",
         before={"name": "Jane Roe", "email": "jane@example.com"},
         after={"name": "Jane Doe", "email": "jane.doe@example.com"})


EVENTS = {"created": emit_created, "updated": emit_updated}


def run(root: Path, n: int, *, erasable: bool, event: str = "created") -> tuple[float, float]:
    """(wall, CPU) seconds to emit `n` events and flush them (the pipeline built and the keys cached first)."""
    processor = auditlock.AuditProcessor(config(root, erasable=erasable))
    structlog.configure(processors=[processor, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=True)
    log = structlog.get_logger()
    emit = log.info
    with auditlock.actor("user:82"):
        for i in range(SUBJECTS):  # warm: plans built, every subject's key created and cached
            EVENTS[event](emit, i)
        processor.flush()
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            EVENTS[event](emit, i)
        processor.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    processor.close()
    structlog.reset_defaults()
    return elapsed, cpu


def main() -> None:
    """Run both variants `--repeats` times, alternating, and report the medians per event."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    variants = [(event, erasable) for event in EVENTS for erasable in (False, True)]
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="auditlock-bench-erasure-") as tmp:
        for repeat in range(args.repeats):  # alternating, so a change in the machine's load hits every variant
            for (event, erasable), runs in times.items():
                root = Path(tmp) / f"{event}-{erasable}-{repeat}"
                runs.append(run(root, args.events, erasable=erasable, event=event))
    wall = {v: statistics.median(w for w, _ in runs) / args.events * 1e6 for v, runs in times.items()}
    cpu = {v: statistics.median(c for _, c in runs) / args.events * 1e6 for v, runs in times.items()}
    print(f"{'event':<10} {'variant':<10} {'wall µs/event':>14} {'CPU µs/event':>14}")
    for event, erasable in variants:
        name = "erasable" if erasable else "plain"
        print(f"{event:<10} {name:<10} {wall[event, erasable]:>14.2f} {cpu[event, erasable]:>14.2f}")
    ratio = {event: cpu[event, True] / cpu[event, False] for event in EVENTS}
    print(f"erasable / plain (CPU): created {ratio['created']:.2f} (the goal, ≤ {GOAL}), "
          f"updated {ratio['updated']:.2f}")
    print(json.dumps({"bench": "erasure", "events": args.events, "repeats": args.repeats,
                      "plain_us": round(cpu["created", False], 2), "erasable_us": round(cpu["created", True], 2),
                      "plain_wall_us": round(wall["created", False], 2),
                      "erasable_wall_us": round(wall["created", True], 2), "ratio": round(ratio["created"], 3),
                      "updated_ratio": round(ratio["updated"], 3), "goal_ratio": GOAL,
                      "within_goal": ratio["created"] <= GOAL}))


if __name__ == "__main__":
    main()
