"""(3) end-to-end latency: from emit() in a live AuditCore to the object listed in the bucket of a live agent."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.children import REPO, agent_port, child_env, list_keys, wait_ready
from agentbench.spools import ACTOR, EVENT, PREFIX, Part

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint


def e2e_latency(root: Path, endpoint: S3Endpoint, client: S3Client, trials: int) -> tuple[list[float], dict[str, Any]]:
    """Emit one event per trial into a live agent's spool; seconds until its object is listable."""
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore

    part = Part.create(root, endpoint, client, "e2e", durability="group", segment_max_age_s=1, batch_max_age_s=1)
    err_path = part.root / "agent.err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(part.agent_argv(), env=child_env(endpoint), stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=REPO)
    core = AuditCore(load_config(part.config_path))
    latencies: list[float] = []
    extra: dict[str, Any] = {}
    try:
        started = time.monotonic()
        wait_ready(agent_port(err_path, proc, 60), 60)
        extra["agent_ready_s"] = time.monotonic() - started
        seen: set[str] = set()
        prefix = f"{PREFIX}/events/"
        with auditlock.actor(ACTOR):
            for trial in range(trials):
                start = time.monotonic()
                core.emit(EVENT, {"target_type": "Order", "target_id": trial, "status": "shipped"})
                while True:
                    keys = set(list_keys(client, part.bucket, prefix)) - seen
                    if keys:
                        break
                    if time.monotonic() - start > 60:
                        raise RuntimeError(f"trial {trial}: no object after 60 s")
                    time.sleep(0.01)
                latencies.append(time.monotonic() - start)
                seen |= keys
                print(f"(3) trial {trial + 1}/{trials}: {latencies[-1]:.3f} s", flush=True)
    finally:
        core.writer.close()
        proc.send_signal(signal.SIGTERM)
        try:
            extra["agent_exit_code"] = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            extra["agent_exit_code"] = "killed"
    shutil.rmtree(part.root)
    return latencies, extra
