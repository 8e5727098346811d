"""The full run: (1), (2), (3) and (4) in that order, the table and the JSON summary."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.floor import MIB
from agentbench.latency import e2e_latency
from agentbench.rss import peak_rss
from agentbench.throughput import throughput
from agentbench.witness import witness_rows, witness_run, witness_summary

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint


def run_benchmark(root: Path, endpoint: S3Endpoint, client: S3Client, *, events: int, rss_gib: float,
                  repeats: int, trials: int, witness_rate: float) -> dict[str, Any]:
    """(1), (2), (3), (4), (5); print the table; return the JSON summary."""
    load_before = os.getloadavg()
    runs, fill = throughput(root, endpoint, client, events, repeats)
    rss_run, rss = peak_rss(root, endpoint, client, rss_gib)
    latencies, e2e = e2e_latency(root, endpoint, client, trials)
    witness = witness_run(root, endpoint, client, events, witness_rate)

    agent = sorted(runs, key=lambda r: r.agent.wall_s)[len(runs) // 2].agent
    floor_run = sorted(runs, key=lambda r: r.floor.wall_s)[len(runs) // 2]
    floor, detail = floor_run.floor, floor_run.floor_detail
    floor_work_s = statistics.median(r.floor_detail.get("work_s", float("nan")) for r in runs)
    agent_eps, floor_eps, floor_work_eps = events / agent.wall_s, events / floor.wall_s, events / floor_work_s
    rss_eps = rss["events"] / rss_run.wall_s
    latency = statistics.median(latencies)
    problems = [p for r in runs for p in r.problems] + rss["problems"] + witness["problems"]
    load_after = os.getloadavg()
    agent_cpu = statistics.median(r.agent.cpu_s for r in runs)
    floor_cpu = statistics.median(r.floor.cpu_s for r in runs)
    same_cpu = statistics.median(r.same.cpu_s for r in runs)
    best_agent, best_floor = min(r.agent.wall_s for r in runs), min(r.floor.wall_s for r in runs)

    event_bytes = fill["bytes"] / events
    print(f"\nauditlock agent benchmark: moto {_moto_version()} on loopback, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, temp dir {root.parent}")
    print(f"(1) {events} events x {event_bytes:.0f} B = {fill['bytes'] / MIB:.1f} MiB, {fill['segments']} segments "
          f"of <= 16 MiB, {fill['batches']} batches of <= 64 MiB; median of {repeats}; "
          f"gzip ratio {detail.get('raw_bytes', 0) / max(detail.get('stored_bytes', 1), 1):.1f}x")
    print(f"{'measurement':<44} {'value':>14} {'target':>12}  notes")
    rows = [
        ("agent --once, events/s", f"{agent_eps:,.0f}", "",
         f"{agent.wall_s:.2f} s wall, {agent.cpu_s:.2f} s cpu, peak RSS {agent.peak_rss_mib:.0f} MiB; runs "
         + ", ".join(f"{r.agent.wall_s:.2f}" for r in runs)),
        ("floor (read+gzip+md5+put), events/s", f"{floor_eps:,.0f}", "",
         f"{floor.wall_s:.2f} s wall incl. {detail.get('startup_s', 0):.2f} s start/import, {floor.cpu_s:.2f} s cpu;"
         f" runs " + ", ".join(f"{r.floor.wall_s:.2f}" for r in runs)),
        ("  floor parts (median run)", "", "",
         ", ".join(f"{k[:-2]} {detail.get(k, 0):.2f} s" for k in ("read_s", "gzip_s", "md5_s", "put_s"))),
        ("floor, work only, events/s", f"{floor_work_eps:,.0f}", "",
         f"{floor_work_s:.2f} s: no interpreter start, imports or client creation"),
        ("agent / floor", f"{agent_eps / floor_eps:.3f}", ">= 0.8", "same boundary: whole subprocess"),
        ("agent / floor (work only)", f"{agent_eps / floor_work_eps:.3f}", "", "the stricter floor"),
        ("agent / floor, best runs", f"{best_floor / best_agent:.3f}", "",
         f"fastest of {repeats}: agent {best_agent:.2f} s, floor {best_floor:.2f} s"),
        ("agent / floor, child CPU time", f"{floor_cpu / agent_cpu:.3f}", "",
         f"median cpu: agent {agent_cpu:.2f} s, floor {floor_cpu:.2f} s (moto's own CPU not included); the agent "
         "gzips with ISA-L level 2, the floor with stdlib zlib level 6"),
        ("agent / same-compressor floor, CPU", f"{same_cpu / agent_cpu:.3f}", "",
         f"the floor with ISA-L level 2 like the agent: median cpu {same_cpu:.2f} s"),
        (f"(2) peak RSS, {rss['bytes'] / MIB:.0f} MiB backlog", f"{rss_run.peak_rss_mib:.1f} MiB", "<= 150 MiB",
         f"{rss['events']} events, {rss['segments']} segments drained in {rss_run.wall_s:.1f} s "
         f"({rss_eps:,.0f} events/s, {rss_run.cpu_s:.1f} s cpu); VmHWM of the child"),
        ("(3) end-to-end latency, median", f"{latency:.3f} s", "",
         "batch_max_age_s = 1, segment_max_age_s = 1; trials " + ", ".join(f"{x:.2f}" for x in latencies)
         + f"; agent exit {e2e.get('agent_exit_code')}"),
        *witness_rows(witness, events),
    ]
    for name, value, target, notes in rows:
        print(f"{name:<44} {value:>14} {target:>12}  {notes}")
    print(f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs"
          + ("  -- WARNING: the machine is busy; wall-clock figures are inflated and noisy"
             if max(load_before[0], load_after[0]) > (os.cpu_count() or 1) else ""))
    if problems:
        print("PROBLEMS: " + "; ".join(problems))
    return {
        "agent_events_per_s": round(agent_eps), "floor_events_per_s": round(floor_eps),
        "agent_vs_floor": round(agent_eps / floor_eps, 3), "peak_rss_mib": round(rss_run.peak_rss_mib, 1),
        "e2e_latency_s": round(latency, 3),
        "floor_work_events_per_s": round(floor_work_eps), "agent_vs_floor_work": round(agent_eps / floor_work_eps, 3),
        "agent_vs_floor_best": round(best_floor / best_agent, 3), "agent_vs_floor_cpu": round(floor_cpu / agent_cpu, 3),
        "agent_vs_same_floor_cpu": round(same_cpu / agent_cpu, 3),
        "agent_wall_s": round(agent.wall_s, 3), "agent_cpu_s": round(agent_cpu, 3), "floor_cpu_s": round(floor_cpu, 3),
        "loadavg_before": round(load_before[0], 2), "loadavg_after": round(load_after[0], 2),
        "floor_wall_s": round(floor.wall_s, 3), "floor_startup_s": round(detail.get("startup_s", 0), 3),
        "floor_parts_s": {k: round(detail.get(k, 0), 3) for k in ("read_s", "gzip_s", "md5_s", "put_s")},
        "rss_backlog_mib": round(rss["bytes"] / MIB), "rss_events_per_s": round(rss_eps),
        "e2e_trials_s": [round(x, 3) for x in latencies], "events": events, "event_bytes": round(event_bytes),
        "segments": fill["segments"], "batches": fill["batches"], "repeats": repeats,
        "fill_events_per_s": round(events / fill["fill_s"]), "problems": problems,
        "witness_rate": witness["rate"], "witness_lag_p50_ms": round(witness["lag_p50_s"] * 1000, 1),
        "witness_lag_p99_ms": round(witness["lag_p99_s"] * 1000, 1), "witness_lag_reads": witness["lag_samples"],
        **witness_summary(witness),
    }


def _moto_version() -> str:
    import moto

    return str(moto.__version__)
