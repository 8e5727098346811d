"""(1) throughput: `agent --once` against the floor on byte-identical copies of one spool filled via AuditCore."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.children import (
    CLEAN_END_RECORDS,
    SCRIPT,
    ChildRun,
    check_drained,
    child_env,
    list_keys,
    run_child,
    same_compressor_floor,
)
from agentbench.floor import MIB, plan_batches, sealed_in_order
from agentbench.spools import BATCH_MAX_BYTES, Part, fill_with_core

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint


@dataclass
class Throughput:
    """One repeat of (1)."""

    agent: ChildRun
    floor: ChildRun
    floor_detail: dict[str, Any]
    problems: list[str]
    same: ChildRun  # the floor with the agent's compressor


def throughput(root: Path, endpoint: S3Endpoint, client: S3Client, events: int,
               repeats: int) -> tuple[list[Throughput], dict[str, Any]]:
    """Fill one spool, then per repeat: copy it for the agent, drain it with the floor and with the agent."""
    master = Part.create(root, endpoint, client, "tp-master")
    fill_s, fill_bytes = fill_with_core(master.config_path, events)
    segments = sealed_in_order(master.spool)
    fill = {"fill_s": fill_s, "bytes": fill_bytes, "segments": len(segments),
            "batches": len(plan_batches(segments, BATCH_MAX_BYTES))}
    print(f"(1) spool filled: {events} events, {fill_bytes / MIB:.1f} MiB in {len(segments)} segments, "
          f"{events / fill_s:,.0f} events/s through AuditCore", flush=True)
    runs = []
    env = child_env(endpoint)
    for repeat in range(repeats):
        part = Part.create(root, endpoint, client, f"tp-agent-{repeat}")
        shutil.copytree(master.spool, part.spool)  # copy2: contents and mtimes, so the same batches
        floor_bucket = f"bench-floor-{repeat}-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=floor_bucket, ObjectLockEnabledForBucket=True)
        spec = {"endpoint": endpoint.url, "region": endpoint.region, "bucket": floor_bucket,
                "spool": str(master.spool), "batch_max_bytes": BATCH_MAX_BYTES}
        floor_argv = [sys.executable, str(SCRIPT), "--floor-child", json.dumps(spec)]
        if repeat % 2:  # alternate the order, so drifting load from other processes hits both alike
            agent = run_child(part.agent_argv("--once"), env, part.root, timeout=1800)
            floor = run_child(floor_argv, env, part.root, timeout=1800)
        else:
            floor = run_child(floor_argv, env, part.root, timeout=1800)
            agent = run_child(part.agent_argv("--once"), env, part.root, timeout=1800)
        same = same_compressor_floor(client, spec, env, part.root)
        problems = check_drained(part, client, agent, events + CLEAN_END_RECORDS)
        if floor.returncode != 0:
            problems.append(f"floor exit code {floor.returncode}: {floor.stderr[-2000:]}")
        detail = json.loads(floor.stdout.strip().splitlines()[-1]) if floor.returncode == 0 else {}
        if detail and len(list_keys(client, floor_bucket, "floor/")) != detail["batches"]:
            problems.append("floor objects missing")
        runs.append(Throughput(agent, floor, detail, problems, same))
        print(f"    repeat {repeat + 1}/{repeats}: agent {agent.wall_s:.2f} s, floor {floor.wall_s:.2f} s"
              + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""), flush=True)
        shutil.rmtree(part.root)
    shutil.rmtree(master.root)
    return runs, fill
