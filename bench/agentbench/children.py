"""The agent and the floor as subprocesses: their environment, the warm-up, wall/CPU/peak-RSS of a run, the checks
of a drain, and a long-running agent's port and readiness."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbench.spools import BATCH_MAX_BYTES, PREFIX, Part, fill_with_core

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "agent.py"  # the entry script: its --floor-child runs the floor

PYCACHE: Path | None = None  # set by main: a bytecode cache under the temp dir, shared by every child


def child_env(endpoint: S3Endpoint) -> dict[str, str]:
    """Environment of agent and floor subprocesses: moto's credentials, no AUDITLOCK_* overrides.

    Children write and reuse bytecode in a private PYTHONPYCACHEPREFIX even when PYTHONDONTWRITEBYTECODE is set
    here, as an installed agent would (pip compiles .pyc): otherwise every start compiles boto3 from source.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUDITLOCK_", "AWS_")) and k != "PYTHONDONTWRITEBYTECODE"}
    if PYCACHE is not None:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return {**env, "AWS_ACCESS_KEY_ID": endpoint.access_key, "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
            "AWS_DEFAULT_REGION": endpoint.region, "AWS_EC2_METADATA_DISABLED": "true"}


def warm_up(root: Path, endpoint: S3Endpoint, client: S3Client) -> float:
    """Run the floor and the agent once on a small spool, so both find their bytecode cached; returns seconds."""
    start = time.perf_counter()
    part = Part.create(root, endpoint, client, "warm-up")
    fill_with_core(part.config_path, 100)
    env = child_env(endpoint)
    spec = {"endpoint": endpoint.url, "region": endpoint.region, "bucket": part.bucket, "spool": str(part.spool),
            "batch_max_bytes": BATCH_MAX_BYTES}
    run_child([sys.executable, str(SCRIPT), "--floor-child", json.dumps(spec)], env, part.root,
              timeout=600)
    run_child(part.agent_argv("--once"), env, part.root, timeout=600)
    shutil.rmtree(part.root)
    return time.perf_counter() - start


@dataclass
class ChildRun:
    """A finished subprocess: wall seconds, exit code, peak RSS (VmHWM), CPU (its rusage), its output."""

    wall_s: float
    returncode: int
    peak_rss_mib: float
    cpu_s: float
    stdout: str
    stderr: str


class HwmWatcher(threading.Thread):
    """Polls /proc/<pid>/status for VmHWM (the peak RSS of the process's own address space) until it exits.

    Not ru_maxrss: subprocess starts children with vfork, and Linux folds the address space a child replaces at
    exec (here: the parent's, which holds moto's objects) into the child's ru_maxrss. For the same reason VmHWM
    is only read once /proc/<pid>/cmdline shows the child's own argv (until exec it shares the parent's memory).
    """

    def __init__(self, pid: int, argv: list[str], interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.proc = Path(f"/proc/{pid}")
        self.cmdline = "\0".join(argv).encode() + b"\0"
        self.interval = interval
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        """Keep the highest VmHWM seen after exec; stop when the process is gone or a zombie (no VmHWM)."""
        execed = False
        while not self.done.is_set():
            try:
                execed = execed or (self.proc / "cmdline").read_bytes() == self.cmdline
                status = (self.proc / "status").read_text() if execed else ""
            except OSError:
                return
            if execed:
                hwm = [line for line in status.splitlines() if line.startswith("VmHWM:")]
                if not hwm:
                    return
                self.peak_kib = max(self.peak_kib, int(hwm[0].split()[1]))
            time.sleep(self.interval)


def run_child(argv: list[str], env: dict[str, str], out_dir: Path, *, timeout: float,
              cpu: str | None = None) -> ChildRun:
    """Run argv to completion; time it from spawn to reap; its peak RSS (VmHWM) and CPU (os.wait4 rusage).
    `cpu`: pinned to that CPU list with `taskset -c` (its peak RSS is read once taskset has exec'd argv)."""
    out_path, err_path = out_dir / "child.out", out_dir / "child.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        pinned = ["taskset", "-c", cpu, *argv] if cpu is not None else argv
        proc = subprocess.Popen(pinned, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
        watcher = HwmWatcher(proc.pid, argv)
        watcher.start()
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            watcher.done.set()
        wall = time.perf_counter() - start
        watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    run = ChildRun(wall, proc.returncode, watcher.peak_kib / 1024, usage.ru_utime + usage.ru_stime,
                   out_path.read_text(errors="replace"), err_path.read_text(errors="replace"))
    out_path.unlink()
    err_path.unlink()
    return run


# A spool filled through AuditCore ends with its writer's `auditlock.writer_closed` record, shipped like any event.
CLEAN_END_RECORDS = 1


def check_drained(part: Part, client: S3Client, run: ChildRun, events: int) -> list[str]:
    """Problems with an `agent --once` run: exit code, segments left, events in the bucket != events written."""
    problems = []
    if run.returncode != 0:
        problems.append(f"agent exit code {run.returncode}: {run.stderr[-2000:]}")
    left = list(part.spool.glob("*.jsonl"))
    if left:
        problems.append(f"{len(left)} segments left in the spool")
    shipped = sum(int(client.head_object(Bucket=part.bucket, Key=key)["Metadata"]["auditlock-events"])
                  for key in list_keys(client, part.bucket, f"{PREFIX}/events/"))
    if shipped != events:
        problems.append(f"{shipped} events in the bucket, {events} written; the agent's log ends: "
                        f"{run.stderr[-1500:]}")
    return problems


def list_keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """Every key under prefix."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def same_compressor_floor(client: S3Client, spec: dict[str, Any], env: dict[str, str], cwd: Path, *,
                          cpu: str | None = None) -> ChildRun:
    """The floor of `spec`'s spool with the agent's own compressor (ISA-L at the agent's level) into a fresh bucket:
    what is left of the agent/floor ratio once both compress alike (the agent's own work, not the compressor's)."""
    bucket = f"bench-floor-isal-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    spec = {**spec, "bucket": bucket, "compressor": "isal"}
    return run_child([sys.executable, str(SCRIPT), "--floor-child", json.dumps(spec)], env, cwd,
                     timeout=3600, cpu=cpu)


def agent_port(err_path: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The HTTP port the agent logs in its "listening" line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}: {err_path.read_text(errors='replace')[-2000:]}")
        for line in err_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if "listening" in str(entry.get("event", "")) and "port" in entry:
                    return int(entry["port"])
        time.sleep(0.02)
    raise RuntimeError(f"agent did not log its port within {timeout} s")


def wait_ready(port: int, timeout: float) -> None:
    """Poll /readyz until the agent's initial scan is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",
                                                                  timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"agent not ready within {timeout} s")
