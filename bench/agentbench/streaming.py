"""(5) streaming: a large backlog at two segment sizes, free and pinned to one CPU, against a chunked floor."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.children import SCRIPT, check_drained, child_env, run_child, same_compressor_floor
from agentbench.floor import MIB, sealed_in_order
from agentbench.spools import BATCH_MAX_BYTES, Part, fill_fast

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint

STREAM_SEGMENT_SIZES = (16 * MIB, 512 * MIB)


def streaming(root: Path, endpoint: S3Endpoint, client: S3Client, gib: float, cpu: str) -> dict[str, Any]:
    """Per segment size: fill a ~`gib` GiB backlog, then drain a copy of it with the floor and with `agent --once`,
    once free and once both pinned to `cpu` (taskset). The floor reads in chunks (`gzip_chunked`), so a 512 MiB
    batch is not held raw in memory by the floor either."""
    results: dict[str, Any] = {}
    for size in STREAM_SEGMENT_SIZES:
        batch = max(BATCH_MAX_BYTES, size)  # a segment larger than a batch is refused by the config
        master = Part.create(root, endpoint, client, f"stream-{size // MIB}m", segment_max_bytes=size,
                             batch_max_bytes=batch)
        fill_s, events, written = fill_fast(master.config_path, int(gib * 1024 * MIB))
        segments = len(sealed_in_order(master.spool))
        print(f"(5) backlog of {size // MIB} MiB segments: {events} events, {written / MIB:.0f} MiB in {segments} "
              f"segments ({fill_s:.1f} s)", flush=True)
        for pin in (None, cpu):
            label = f"seg{size // MIB}m" + (f"_cpu{pin}" if pin is not None else "")
            results[label] = stream_run(root, endpoint, client, master, label, pin=pin, batch=batch, events=events)
            results[label].update(segments=segments, events=events, backlog_mib=round(written / MIB))
        shutil.rmtree(master.root)
    return results


def stream_run(root: Path, endpoint: S3Endpoint, client: S3Client, master: Part, label: str, *, pin: str | None,
               batch: int, events: int) -> dict[str, Any]:
    """The floor over `master`'s spool, then the agent over a copy of it (same segments, same mtimes)."""
    size = int(master.config_path.read_text().split("segment_max_bytes = ")[1].split()[0])
    part = Part.create(root, endpoint, client, f"{label}-agent", segment_max_bytes=size, batch_max_bytes=batch)
    shutil.copytree(master.spool, part.spool)
    floor_bucket = f"bench-floor-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=floor_bucket, ObjectLockEnabledForBucket=True)
    env = child_env(endpoint)
    spec = {"endpoint": endpoint.url, "region": endpoint.region, "bucket": floor_bucket, "spool": str(master.spool),
            "batch_max_bytes": batch, "chunked": True}
    floor = run_child([sys.executable, str(SCRIPT), "--floor-child", json.dumps(spec)], env,
                      part.root, timeout=3600, cpu=pin)
    agent = run_child(part.agent_argv("--once"), env, part.root, timeout=3600, cpu=pin)
    same = same_compressor_floor(client, spec, env, part.root, cpu=pin)
    problems = check_drained(part, client, agent, events)
    if floor.returncode != 0:
        problems.append(f"floor exit code {floor.returncode}: {floor.stderr[-2000:]}")
    shutil.rmtree(part.root)
    result = {"agent_wall_s": round(agent.wall_s, 2), "agent_cpu_s": round(agent.cpu_s, 2),
              "agent_peak_rss_mib": round(agent.peak_rss_mib, 1), "floor_wall_s": round(floor.wall_s, 2),
              "floor_cpu_s": round(floor.cpu_s, 2), "floor_peak_rss_mib": round(floor.peak_rss_mib, 1),
              "agent_vs_floor": round(floor.wall_s / agent.wall_s, 3),
              "agent_vs_floor_cpu": round(floor.cpu_s / agent.cpu_s, 3),
              "same_floor_wall_s": round(same.wall_s, 2), "same_floor_cpu_s": round(same.cpu_s, 2),
              "agent_vs_same_floor": round(same.wall_s / agent.wall_s, 3),
              "agent_vs_same_floor_cpu": round(same.cpu_s / agent.cpu_s, 3), "problems": problems}
    if same.returncode != 0:
        problems.append(f"same-compressor floor exit code {same.returncode}: {same.stderr[-2000:]}")
    print(f"    {label}: agent {agent.wall_s:.1f} s ({agent.cpu_s:.1f} s cpu, peak RSS {agent.peak_rss_mib:.1f} MiB), "
          f"floor {floor.wall_s:.1f} s ({floor.cpu_s:.1f} s cpu, {floor.peak_rss_mib:.0f} MiB): "
          f"{result['agent_vs_floor']:.3f} wall, {result['agent_vs_floor_cpu']:.3f} cpu; against the floor with "
          f"the agent's compressor ({same.wall_s:.1f} s, {same.cpu_s:.1f} s cpu): "
          f"{result['agent_vs_same_floor']:.3f} wall, {result['agent_vs_same_floor_cpu']:.3f} cpu"
          + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""), flush=True)
    return result


def stream_summary(runs: dict[str, Any]) -> dict[str, Any]:
    """(5)'s JSON: every run's figures, and the goal's three (peak RSS per segment size, floor ratios)."""
    summary: dict[str, Any] = {"stream": runs, "loadavg_after_stream": round(os.getloadavg()[0], 2)}
    for label, run in runs.items():
        summary[f"stream_peak_rss_mib_{label}"] = run["agent_peak_rss_mib"]
        summary[f"stream_agent_vs_floor_{label}"] = run["agent_vs_floor"]
        summary[f"stream_agent_vs_floor_cpu_{label}"] = run["agent_vs_floor_cpu"]
        summary[f"stream_agent_vs_same_floor_cpu_{label}"] = run["agent_vs_same_floor_cpu"]
    print("\n(5) streaming: " + "; ".join(
        f"{label}: peak RSS {r['agent_peak_rss_mib']:.1f} MiB, agent/floor {r['agent_vs_floor']:.3f} wall "
        f"{r['agent_vs_floor_cpu']:.3f} cpu (same-compressor floor: {r['agent_vs_same_floor']:.3f} wall, "
        f"{r['agent_vs_same_floor_cpu']:.3f} cpu)" for label, r in runs.items()))
    print("    the agent gzips with ISA-L (isal, level 2); the floor uses stdlib zlib level 6; the same-compressor "
          "floor uses ISA-L level 2 like the agent")
    return summary
