"""--profile: cProfile (CPU or wall clock) of one `agent --once` drain; the hottest functions."""

from __future__ import annotations

import os
import pstats
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.children import CLEAN_END_RECORDS, check_drained, child_env, run_child
from agentbench.spools import Part, fill_with_core

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint

PROFILE_CHILD = """
import cProfile, runpy, sys, time
out, clock = sys.argv[1], sys.argv[2]
sys.argv = ["auditlock", "agent", *sys.argv[3:]]
profiler = cProfile.Profile(time.process_time if clock == "cpu" else time.perf_counter)
profiler.enable()
try:
    runpy.run_module("auditlock", run_name="__main__", alter_sys=True)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def profile(root: Path, endpoint: S3Endpoint, client: S3Client, *, events: int, out: Path, top: int,
            clock: str) -> dict[str, Any]:
    """cProfile one `agent --once` drain of an `events` spool; print the hottest functions."""
    part = Part.create(root, endpoint, client, "profile")
    fill_with_core(part.config_path, events)
    argv = [sys.executable, "-c", PROFILE_CHILD, str(out), clock, "--config", str(part.config_path), "--once"]
    run = run_child(argv, child_env(endpoint), part.root, timeout=3600)
    problems = check_drained(part, client, run, events + CLEAN_END_RECORDS)
    shutil.rmtree(part.root)
    stats = pstats.Stats(str(out))
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"func": f"{_short(file)}:{line}({func})", "ncalls": ncalls, "tottime_s": tottime,
                     "cumtime_s": cumtime})
    total = sum(r["tottime_s"] for r in rows)
    print(f"\ncProfile ({clock} clock) of `agent --once` over {events} events: {total:.2f} s profiled, "
          f"{run.wall_s:.2f} s wall and {run.cpu_s:.2f} s cpu under the profiler"
          + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""))
    for key, title in (("tottime_s", "by own time"), ("cumtime_s", "by cumulative time")):
        print(f"\n-- top {top} {title}")
        print(f"{'function':<90} {'ncalls':>9} {'own s':>8} {'cum s':>8} {'own %':>6} {'own us/ev':>9}")
        for r in sorted(rows, key=lambda r: -r[key])[:top]:
            print(f"{r['func'][:90]:<90} {r['ncalls']:>9} {r['tottime_s']:>8.3f} {r['cumtime_s']:>8.3f} "
                  f"{r['tottime_s'] / total * 100:>6.1f} {r['tottime_s'] / events * 1e6:>9.3f}")
    hot = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    return {"profile_events": events, "profile_clock": clock, "profiled_s": round(total, 3),
            "profiled_wall_s": round(run.wall_s, 3), "profiled_cpu_s": round(run.cpu_s, 3), "profile_file": str(out),
            "hot": [{"func": r["func"], "ncalls": r["ncalls"], "tottime_s": round(r["tottime_s"], 3),
                     "cumtime_s": round(r["cumtime_s"], 3)} for r in hot], "problems": problems}


def _short(file: str) -> str:
    marker = f"src{os.sep}auditlock{os.sep}"
    if marker in file:
        return "auditlock/" + file.split(marker, 1)[1]
    return file.rsplit("site-packages/", 1)[-1] if "site-packages/" in file else file
