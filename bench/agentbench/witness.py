"""(4) the witness: a live agent's witness lag under paced writers, then the drain of the witnessed spool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.children import (
    CLEAN_END_RECORDS,
    REPO,
    SCRIPT,
    agent_port,
    check_drained,
    child_env,
    run_child,
    same_compressor_floor,
    wait_ready,
)
from agentbench.floor import sealed_in_order
from agentbench.spools import ACTOR, BATCH_MAX_BYTES, EVENT, Part

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint


def paced_fill(config_path: Path, events: int, rate: float) -> tuple[float, int]:
    """Emit `events` through AuditCore + SpoolWriter at about `rate` events/s (a burst every 10 ms), then close;
    returns (seconds, events/s achieved)."""
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore
    from auditlock.spool.writer import SpoolWriter

    config = load_config(config_path)
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    emit = AuditCore(config, writer=writer).emit
    burst = max(int(rate / 100), 1)
    start = time.perf_counter()
    with auditlock.actor(ACTOR):
        for i in range(events):
            if i % burst == 0:
                ahead = start + i / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            emit(EVENT, {"target_type": "Order", "target_id": 4_100_000 + i, "status": "shipped"})
    seconds = time.perf_counter() - start
    writer.close()
    return seconds, round(events / seconds)


def copies_complete(spool: Path) -> bool:
    """Every sealed segment has a sealed witness copy of its size (the agent's default state directory)."""
    witness = spool / ".agent" / "witness"
    segments = sealed_in_order(spool)
    return bool(segments) and all((witness / path.name).exists() and (witness / path.name).stat().st_size == size
                                  for path, size in segments)


def histogram_quantiles(metrics_text: str, name: str, quantiles: tuple[float, ...]) -> tuple[list[float], int]:
    """Quantiles of a Prometheus histogram (linear within a bucket, like histogram_quantile), and its count."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics_text):
        buckets += [(float(s.labels["le"]), s.value) for s in family.samples if s.name == f"{name}_bucket"]
    buckets.sort()
    count = buckets[-1][1] if buckets else 0
    results = []
    for q in quantiles:
        target, lower, below = q * count, 0.0, 0.0
        for bound, cumulative in buckets:
            if cumulative >= target and cumulative > below:
                upper = bound if bound != float("inf") else lower
                results.append(lower + (upper - lower) * (target - below) / (cumulative - below))
                break
            lower, below = bound, cumulative
        else:
            results.append(float("nan"))
    return results, int(count)


def witness_run(root: Path, endpoint: S3Endpoint, client: S3Client, events: int, rate: float) -> dict[str, Any]:
    """(4): lag of a live agent's witness under writers at `rate`, then the drain of the witnessed spool."""
    part = Part.create(root, endpoint, client, "witness", batch_max_age_s=3600)
    err_path = part.root / "agent.err"
    env = child_env(endpoint)
    with err_path.open("wb") as err:
        proc = subprocess.Popen(part.agent_argv(), env=env, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        port = agent_port(err_path, proc, 60)
        wait_ready(port, 60)
        write_s, achieved = paced_fill(part.config_path, events, rate)
        deadline = time.monotonic() + 600
        while not copies_complete(part.spool):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"witness copies incomplete: {err_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            (p50, p99), samples = histogram_quantiles(response.read().decode(), "auditlock_witness_lag_seconds",
                                                      (0.5, 0.99))
    finally:
        proc.kill()
        proc.wait()
    print(f"(4) witness: {events} events written at {achieved:,} events/s in {write_s:.1f} s; lag p50 "
          f"{p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {samples} reads", flush=True)
    floor_bucket = f"bench-floor-w-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=floor_bucket, ObjectLockEnabledForBucket=True)
    spec = {"endpoint": endpoint.url, "region": endpoint.region, "bucket": floor_bucket, "spool": str(part.spool),
            "batch_max_bytes": BATCH_MAX_BYTES}
    floor = run_child([sys.executable, str(SCRIPT), "--floor-child", json.dumps(spec)], env,
                      part.root, timeout=1800)
    plain = Part.create(root, endpoint, client, "witness-plain")
    shutil.copytree(part.spool, plain.spool, ignore=shutil.ignore_patterns(".agent"))  # the same spool, no copies
    # What is left to drain: the live agent already shipped every full batch (batch_max_bytes) while the writers ran.
    left_events = sum(path.read_bytes().count(b"\n") for path in plain.spool.glob("*.jsonl"))
    agent = run_child(part.agent_argv("--once"), env, part.root, timeout=1800)
    unwitnessed = run_child(plain.agent_argv("--once"), env, plain.root, timeout=1800)
    same = same_compressor_floor(client, spec, env, part.root)
    problems = check_drained(part, client, agent, events + CLEAN_END_RECORDS)
    problems += check_drained(plain, client, unwitnessed, left_events)
    if "REWRITTEN" in agent.stderr or "MISSING" in agent.stderr:
        problems.append("the witness reported an untouched segment")
    print(f"    drain of the witnessed spool ({left_events} events left after the live agent's full batches): "
          f"agent {agent.wall_s:.2f} s, floor {floor.wall_s:.2f} s; the same spool "
          f"without copies: agent {unwitnessed.wall_s:.2f} s"
          + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""), flush=True)
    shutil.rmtree(part.root)
    shutil.rmtree(plain.root)
    return {"rate": achieved, "write_s": write_s, "lag_p50_s": p50, "lag_p99_s": p99, "lag_samples": samples,
            "agent": agent, "floor": floor, "same_floor": same, "unwitnessed": unwitnessed, "problems": problems}


def witness_rows(witness: dict[str, Any], events: int) -> list[tuple[str, str, str, str]]:
    """The table rows of (4)."""
    agent, floor, plain, same = witness["agent"], witness["floor"], witness["unwitnessed"], witness["same_floor"]
    return [
        ("(4) witness lag p50", f"{witness['lag_p50_s'] * 1000:.0f} ms", "",
         f"writers at {witness['rate']:,} events/s ({events} events); {witness['lag_samples']} reads"),
        ("(4) witness lag p99", f"{witness['lag_p99_s'] * 1000:.0f} ms", "<= 100 ms",
         "occurred_at of a read's oldest line → its copy fsync'd (histogram, interpolated)"),
        ("(4) agent / floor, witnessed spool", f"{floor.wall_s / agent.wall_s:.3f}", ">= 0.8",
         f"agent --once {agent.wall_s:.2f} s comparing every segment with its copy; floor {floor.wall_s:.2f} s; "
         "one run"),
        ("(4) agent / floor, witnessed, child CPU", f"{floor.cpu_s / agent.cpu_s:.3f}", "",
         f"cpu: agent {agent.cpu_s:.2f} s, floor {floor.cpu_s:.2f} s; the agent gzips with ISA-L, the floor with "
         "stdlib zlib"),
        ("(4) agent / same-compressor floor, CPU", f"{same.cpu_s / agent.cpu_s:.3f}", "",
         f"the floor with ISA-L level 2 like the agent: {same.wall_s:.2f} s wall, {same.cpu_s:.2f} s cpu"),
        ("(4) witnessed / unwitnessed drain, CPU", f"{agent.cpu_s / plain.cpu_s:.3f}", "",
         f"the same spool without copies: {plain.wall_s:.2f} s wall, {plain.cpu_s:.2f} s cpu (the check's cost)"),
    ]


def witness_summary(witness: dict[str, Any]) -> dict[str, Any]:
    """The JSON keys of (4)."""
    agent, floor, plain, same = witness["agent"], witness["floor"], witness["unwitnessed"], witness["same_floor"]
    return {"witness_rate": witness["rate"], "witness_lag_p50_ms": round(witness["lag_p50_s"] * 1000, 1),
            "witness_lag_p99_ms": round(witness["lag_p99_s"] * 1000, 1), "witness_lag_reads": witness["lag_samples"],
            "witnessed_agent_vs_floor": round(floor.wall_s / agent.wall_s, 3),
            "witnessed_agent_vs_floor_cpu": round(floor.cpu_s / agent.cpu_s, 3),
            "witnessed_agent_vs_same_floor_cpu": round(same.cpu_s / agent.cpu_s, 3),
            "witnessed_vs_unwitnessed_cpu": round(agent.cpu_s / plain.cpu_s, 3),
            "witnessed_vs_unwitnessed_wall": round(agent.wall_s / plain.wall_s, 3)}


def run_witness_only(root: Path, endpoint: S3Endpoint, client: S3Client, *, events: int,
                     rate: float) -> dict[str, Any]:
    """(4) alone (`--witness-only`): print its rows; return its JSON summary."""
    load_before = os.getloadavg()
    witness = witness_run(root, endpoint, client, events, rate)
    load_after = os.getloadavg()
    print(f"\n{'measurement':<44} {'value':>14} {'target':>12}  notes")
    for name, value, target, notes in witness_rows(witness, events):
        print(f"{name:<44} {value:>14} {target:>12}  {notes}")
    print(f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs")
    return {**witness_summary(witness), "events": events, "loadavg_before": round(load_before[0], 2),
            "loadavg_after": round(load_after[0], 2), "problems": witness["problems"]}
