"""(2) peak RSS: `agent --once` draining a large backlog of valid segments; the child's VmHWM."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.children import ChildRun, check_drained, child_env, run_child
from agentbench.floor import MIB, sealed_in_order
from agentbench.spools import Part, fill_fast

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint


def peak_rss(root: Path, endpoint: S3Endpoint, client: S3Client, gib: float) -> tuple[ChildRun, dict[str, Any]]:
    """Drain a ~`gib` GiB backlog with `agent --once`; the child's own peak RSS."""
    part = Part.create(root, endpoint, client, "rss")
    fill_s, events, written = fill_fast(part.config_path, int(gib * 1024 * MIB))
    segments = len(sealed_in_order(part.spool))
    print(f"(2) backlog filled: {events} events, {written / MIB:.0f} MiB in {segments} segments in {fill_s:.1f} s",
          flush=True)
    run = run_child(part.agent_argv("--once"), child_env(endpoint), part.root, timeout=3600)
    problems = check_drained(part, client, run, events)
    print(f"    agent: {run.wall_s:.1f} s, peak RSS {run.peak_rss_mib:.1f} MiB"
          + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""), flush=True)
    shutil.rmtree(part.root)
    return run, {"events": events, "bytes": written, "segments": segments, "fill_s": fill_s, "problems": problems}
