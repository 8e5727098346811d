"""Benchmark of the shipping agent against a local moto S3 server (not a test: it reports, it never asserts).

    uv run python bench/agent.py                         # 500k events, 1 GiB RSS backlog, 5 latency trials
    uv run python bench/agent.py --quick                 # smoke run (small sizes)
    uv run python bench/agent.py --profile agent.prof    # cProfile (CPU clock) of one `agent --once` drain instead
    uv run python bench/agent.py --witness-only          # (4) alone: 100k events at --witness-rate 10000
    uv run python bench/agent.py --stream-only           # (5) alone: a 1 GiB backlog at 16 and 512 MiB segments

One moto server (ThreadedMotoServer on 127.0.0.1, in this process) serves every part; each part ships to a fresh
Object Lock bucket.

(1) throughput: a spool of `--events` order.updated events (~490 B each) written with auditlock's own AuditCore +
    SpoolWriter (durability "process", segment_max_bytes 16 MiB) is drained by `python -m auditlock agent --once`
    (batch_max_bytes 64 MiB); the whole subprocess is timed, nothing subtracted. The floor drains a byte-identical
    copy of that spool (copied before the agent runs, mtimes kept) with the least work the archive needs: read the
    same segment files in the same (mtime, name) order, cut the same <= 64 MiB batches, gzip each (level 6,
    mtime=0), Content-MD5, put_object in a loop with the agent's boto3 client config. The floor runs as a
    subprocess too (this script with --floor-child), so it does not share a GIL with moto and pays the same
    interpreter start and `import boto3`; `floor_work_events_per_s` leaves those out (the stricter floor).
(2) peak RSS: a ~`--rss-gib` backlog of valid segments (EventChain + orjson, written directly in the spool's file
    format for speed) drained by `agent --once`; peak RSS is the child's VmHWM, polled from /proc every 5 ms.
(3) end-to-end latency: a long-running `python -m auditlock agent` (batch_max_age_s = 1) and a long-lived
    AuditCore here (durability "group", segment_max_age_s = 1): time from emit() to the object being listed by
    list_objects_v2 (polled every 10 ms); median of `--trials`. The agent is stopped with SIGTERM.
(4) the witness (issue #16): a long-running `python -m auditlock agent` (batch_max_age_s = 3600: nothing ships)
    follows a spool that an AuditCore here (durability "process") fills at `--witness-rate` events/s (paced every
    10 ms) with `--events` events. Witness lag p50/p99 come from the agent's `auditlock_witness_lag_seconds`
    histogram (occurred_at of the oldest line of each read → its copy fsync'd; interpolated within buckets, as
    Prometheus' histogram_quantile does). Once every segment's copy is complete the agent is SIGKILLed and the
    spool drained by `agent --once`, which compares every segment with its copy before shipping, against the floor
    on the same spool: the drain ratio with witnessing on; and against `agent --once` on a copy of the spool
    without the witness's copies (nothing to compare): the cost of the check itself.
(5) streaming (issue #17): a ~`--stream-gib` backlog of 16 MiB and of 512 MiB segments drained by `agent --once`,
    free and pinned to one CPU (`taskset -c --cpu`), against a chunked read+gzip+MD5+PUT floor: peak RSS per
    segment size and the agent/floor wall and CPU ratios.

The agent gzips with ISA-L (`isal`, level 2: auditlock.agent.batch); the floor above stays the issue's floor, stdlib
zlib level 6. Parts (1), (4) and (5) also run the same floor with the agent's compressor ("same-compressor floor",
ISA-L level 2), and report the agent's ratio against it on a line of its own: what is left once both compress alike
is the agent's own per-line work (parse, checks, chain hashes, content hash).

Before timing, the agent and the floor each run once on a tiny spool with a private PYTHONPYCACHEPREFIX, so every
timed child starts from cached bytecode (as an installed agent does) even where PYTHONDONTWRITEBYTECODE is set.
Each child's CPU time (os.wait4) is reported next to its wall time, and the load average around the run: on a
shared machine the CPU ratio (`agent_vs_floor_cpu`) is the steadier comparison.

A readable table goes to stdout; the LAST line is exactly one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from tests.support.s3servers import S3Endpoint

# auditlock and the test support are imported inside the functions that use them, so that the floor child
# (this script with --floor-child) imports nothing but the stdlib and boto3, like a minimal shipper would.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support.s3servers (start_moto, make_lock_bucket)
SEGMENT = re.compile(r"^[0-9a-f]{32}\.[0-9a-f]{16}\.jsonl$")  # a sealed segment (auditlock.spool.format)

MIB = 1024 * 1024
SEGMENT_MAX_BYTES = 16 * MIB
BATCH_MAX_BYTES = 64 * MIB
GZIP_LEVEL = 6  # the floor's stdlib gzip level (the floor)
AGENT_GZIP_LEVEL = 2  # the agent's ISA-L level (auditlock.agent.batch.GZIP_LEVEL): the same-compressor floor's
EVENT = "order.updated"
ACTOR = "user:82"
PREFIX = "audit"

CONFIG_TEMPLATE = """
service = "shop"

[spool]
dir = "{spool}"
durability = "{durability}"
segment_max_bytes = {segment_max_bytes}
segment_max_age_s = {segment_max_age_s}
max_bytes = {spool_max_bytes}

[events]
include = ["order.*"]

[targets.Order]
fields = ["status", "total"]

[retention]
default = "standard"

[retention.classes.standard]
days = 1
mode = "GOVERNANCE"

[sink]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint_url = "{endpoint}"
region = "{region}"
batch_max_bytes = {batch_max_bytes}
batch_max_age_s = {batch_max_age_s}

[agent]
http_port = 0
rescan_interval_s = 30
grace_period_s = 60
"""


# --- set-up --------------------------------------------------------------------------------------------


@dataclass
class Part:
    """One spool + config + bucket that an agent ships between."""

    root: Path
    endpoint: S3Endpoint
    bucket: str
    config_path: Path

    @classmethod
    def create(cls, root: Path, endpoint: S3Endpoint, client: S3Client, name: str, *, durability: str = "process",
               segment_max_age_s: float = 3600, batch_max_age_s: float = 60,
               segment_max_bytes: int = SEGMENT_MAX_BYTES, batch_max_bytes: int = BATCH_MAX_BYTES) -> Part:
        """A fresh directory with `auditlock.toml`, spool under it, and a fresh Object Lock bucket."""
        from tests.support.s3servers import make_lock_bucket

        root = root / name
        root.mkdir()
        bucket = make_lock_bucket(client, f"bench-{name}-{uuid.uuid4().hex[:8]}")
        path = root / "auditlock.toml"
        path.write_text(CONFIG_TEMPLATE.format(
            spool=root / "spool", durability=durability, segment_max_bytes=segment_max_bytes,
            segment_max_age_s=segment_max_age_s, spool_max_bytes=64 * 1024 * MIB, bucket=bucket, prefix=PREFIX,
            endpoint=endpoint.url, region=endpoint.region, batch_max_bytes=batch_max_bytes,
            batch_max_age_s=batch_max_age_s))
        return cls(root, endpoint, bucket, path)

    @property
    def spool(self) -> Path:
        """The spool directory."""
        return self.root / "spool"

    def agent_argv(self, *args: str) -> list[str]:
        """argv of `python -m auditlock agent`."""
        return [sys.executable, "-m", "auditlock", "agent", "--config", str(self.config_path), *args]


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
    run_child([sys.executable, str(Path(__file__).resolve()), "--floor-child", json.dumps(spec)], env, part.root,
              timeout=600)
    run_child(part.agent_argv("--once"), env, part.root, timeout=600)
    shutil.rmtree(part.root)
    return time.perf_counter() - start


def fill_with_core(config_path: Path, n: int) -> tuple[float, int]:
    """Emit `n` events through AuditCore + SpoolWriter (then closed, so every segment is sealed).

    Returns (seconds, bytes written).
    """
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore
    from auditlock.spool.writer import SpoolWriter

    config = load_config(config_path)
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    core = AuditCore(config, writer=writer)
    emit = core.emit
    start = time.perf_counter()
    with auditlock.actor(ACTOR):
        for i in range(n):
            emit(EVENT, {"target_type": "Order", "target_id": 4_100_000 + i, "status": "shipped"})
    writer.close()
    return time.perf_counter() - start, writer.stats["bytes"]


def fill_fast(config_path: Path, target_bytes: int) -> tuple[float, int, int]:
    """Write ~`target_bytes` of valid sealed segments straight in the spool format (one writer's chain).

    Each line is stamped by auditlock's own EventChain (event_id, occurred_at, writer, seq, prev), so the agent
    sees exactly what a SpoolWriter would have left: `<writer>.<first_seq:016x>.jsonl`, seq without gaps, prev =
    sha256 of the previous line, one UTC month per segment, at most segment_max_bytes per segment.
    Returns (seconds, events, bytes).
    """
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore
    from auditlock.spool.chain import EventChain, uuid7_hex
    from auditlock.spool.format import SegmentName

    config = load_config(config_path)
    spool = Path(config.spool.dir)
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    with auditlock.actor(ACTOR):
        template = AuditCore(config).build(EVENT, {"target_type": "Order", "target_id": "0", "status": "shipped"})
    chain = EventChain(uuid7_hex(time.time_ns()), max_event_bytes=config.events.max_event_bytes)
    stamp, advance = chain.stamp, chain.advance
    limit = config.spool.segment_max_bytes
    start = time.perf_counter()
    events = written = 0
    parts: list[bytes] = []
    size, month, first_seq = 0, -1, 0

    def seal() -> None:
        path = spool / SegmentName(chain.writer_id, first_seq).filename
        with path.open("wb") as f:
            f.write(b"".join(parts))
        parts.clear()

    while written < target_bytes:
        record = template.copy()
        record["target_id"] = str(4_100_000 + events)
        line, line_month = stamp(record)
        if parts and (line_month != month or size + len(line) > limit):
            seal()
            size, first_seq = 0, chain.seq
        month = line_month
        parts.append(line)
        advance(line)
        size += len(line)
        written += len(line)
        events += 1
    seal()
    return time.perf_counter() - start, events, written


# --- subprocesses --------------------------------------------------------------------------------------


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
    return run_child([sys.executable, str(Path(__file__).resolve()), "--floor-child", json.dumps(spec)], env, cwd,
                     timeout=3600, cpu=cpu)


# --- (1) throughput: agent vs floor --------------------------------------------------------------------


def sealed_in_order(spool: Path) -> list[tuple[Path, int]]:
    """Sealed segments as the agent orders them (seal mtime, then name), with sizes."""
    found = []
    for path in spool.iterdir():
        if not SEGMENT.match(path.name):
            continue
        stat = path.stat()
        found.append((stat.st_mtime, path.name, path, stat.st_size))
    return [(path, size) for _mtime, _name, path, size in sorted(found)]


def plan_batches(segments: list[tuple[Path, int]], max_bytes: int) -> list[list[Path]]:
    """Cut the ordered segments into batches exactly like the agent's plan_batch (whole segments, <= max)."""
    batches: list[list[Path]] = []
    batch: list[Path] = []
    total = 0
    for path, size in segments:
        if batch and total + size > max_bytes:
            batches.append(batch)
            batch, total = [], 0
        batch.append(path)
        total += size
    if batch:
        batches.append(batch)
    return batches


def floor_child(spec: dict[str, Any]) -> None:
    """The floor, in its own process: read, gzip, Content-MD5, put_object; prints one JSON line of timings."""
    t0 = time.perf_counter()
    import boto3
    from botocore.config import Config as BotoConfig

    config = BotoConfig(retries={"mode": "standard", "total_max_attempts": 3},
                        request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        connect_timeout=5, read_timeout=60, s3={"addressing_style": "path"})
    client = boto3.session.Session(region_name=spec["region"]).client("s3", endpoint_url=spec["endpoint"],
                                                                        config=config)
    t1 = time.perf_counter()
    times = {"read_s": 0.0, "gzip_s": 0.0, "md5_s": 0.0, "put_s": 0.0}
    raw = stored = 0
    compress, gzip_file = floor_compressor(spec.get("compressor", "zlib"))
    batches = plan_batches(sealed_in_order(Path(spec["spool"])), spec["batch_max_bytes"])
    for i, batch in enumerate(batches):
        a = time.perf_counter()
        if spec.get("chunked"):  # the large-batch floor: read in chunks, only the gzip bytes in memory
            read_s, data_len, body = gzip_chunked(batch, gzip_file)
            b = a + read_s
        else:
            data = b"".join(path.read_bytes() for path in batch)
            b = time.perf_counter()
            body = compress(data)
            data_len = len(data)
        c = time.perf_counter()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        d = time.perf_counter()
        client.put_object(Bucket=spec["bucket"], Key=f"floor/{i:06d}.jsonl.gz", Body=body, ContentMD5=md5)
        e = time.perf_counter()
        times["read_s"] += b - a
        times["gzip_s"] += c - b
        times["md5_s"] += d - c
        times["put_s"] += e - d
        raw += data_len
        stored += len(body)
    t2 = time.perf_counter()
    print(json.dumps({"compressor": spec.get("compressor", "zlib"),
                      "startup_s": t1 - t0, "work_s": t2 - t1, "batches": len(batches), "raw_bytes": raw,
                      "stored_bytes": stored, **times}))


def floor_compressor(name: str) -> tuple[Callable[[bytes], bytes], Callable[..., gzip.GzipFile]]:
    """The floor's gzip (mtime=0): "zlib", stdlib level 6 (the issue's floor), or "isal", the agent's own
    compressor at the agent's level (the same-compressor floor, imported only then)."""
    if name == "isal":
        from isal import igzip
        return (functools.partial(igzip.compress, compresslevel=AGENT_GZIP_LEVEL, mtime=0),
                functools.partial(igzip.IGzipFile, compresslevel=AGENT_GZIP_LEVEL, mtime=0))
    return (functools.partial(gzip.compress, compresslevel=GZIP_LEVEL, mtime=0),
            functools.partial(gzip.GzipFile, compresslevel=GZIP_LEVEL, mtime=0))


def gzip_chunked(batch: list[Path], gzip_file: Callable[..., gzip.GzipFile],
                 chunk: int = MIB) -> tuple[float, int, bytes]:
    """The floor for large batches: read the segments in `chunk`s into one gzip stream (`gzip_file`) kept in
    memory (compressed only). Returns (seconds spent reading, raw bytes, gzip bytes)."""
    out = io.BytesIO()
    read_s, raw = 0.0, 0
    with gzip_file(fileobj=out, mode="wb") as gz:
        for path in batch:
            with path.open("rb") as f:
                while True:
                    start = time.perf_counter()
                    data = f.read(chunk)
                    read_s += time.perf_counter() - start
                    if not data:
                        break
                    raw += len(data)
                    gz.write(data)
    return read_s, raw, out.getvalue()


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
        floor_argv = [sys.executable, str(Path(__file__).resolve()), "--floor-child", json.dumps(spec)]
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


# --- (2) peak RSS --------------------------------------------------------------------------------------


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


# --- (5) streaming: a large backlog at two segment sizes, free and pinned to one CPU --------------------


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
    floor = run_child([sys.executable, str(Path(__file__).resolve()), "--floor-child", json.dumps(spec)], env,
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


# --- (3) end-to-end latency ----------------------------------------------------------------------------


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


# --- (4) the witness ------------------------------------------------------------------------------------


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
    floor = run_child([sys.executable, str(Path(__file__).resolve()), "--floor-child", json.dumps(spec)], env,
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


# --- profile -------------------------------------------------------------------------------------------


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


# --- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or --profile, or the floor child) and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None, help="events in the throughput spool (500000)")
    parser.add_argument("--rss-gib", type=float, default=None, help="backlog drained for peak RSS, GiB (1.0)")
    parser.add_argument("--repeats", type=int, default=None, help="throughput repeats, median reported (3)")
    parser.add_argument("--trials", type=int, default=None, help="end-to-end latency trials, median reported (5)")
    parser.add_argument("--witness-rate", type=float, default=10_000,
                        help="events/s the writers emit while the witness follows them (10000)")
    parser.add_argument("--witness-only", action="store_true", help="run only (4), the witness")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp dir (default: $TMPDIR)")
    parser.add_argument("--profile", type=Path, default=None, metavar="OUT.prof",
                        help="instead of the benchmark: cProfile one `agent --once` drain of --events, save it here")
    parser.add_argument("--profile-clock", choices=["cpu", "wall"], default="cpu",
                        help="cProfile timer: process CPU time (robust on a busy machine) or wall time")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile tables")
    parser.add_argument("--stream-gib", type=float, default=None,
                        help="(5) backlog drained at 16 and 512 MiB segments, GiB (1.0; 0 skips it)")
    parser.add_argument("--stream-only", action="store_true", help="run only (5)")
    parser.add_argument("--cpu", default="0", help="the CPU list (5) pins its one-core runs to (taskset -c)")
    parser.add_argument("--floor-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_child is not None:
        floor_child(json.loads(args.floor_child))
        return
    quick = args.quick
    events = args.events or (20_000 if quick else 500_000)
    rss_gib = args.rss_gib if args.rss_gib is not None else (0.05 if quick else 1.0)
    repeats = args.repeats or (1 if quick else 3)
    trials = args.trials or (3 if quick else 5)
    stream_gib = args.stream_gib if args.stream_gib is not None else (0.05 if quick else 1.0)

    from tests.support.s3servers import start_moto

    global PYCACHE  # noqa: PLW0603 - one setting for every child of this run
    root = Path(tempfile.mkdtemp(prefix="auditlock-bench-agent-", dir=args.dir))
    PYCACHE = root / "pycache"
    endpoint, stop_moto = start_moto()
    try:
        client = endpoint.client()
        print(f"warm-up (bytecode cache in {PYCACHE}): {warm_up(root, endpoint, client):.1f} s", flush=True)
        if args.witness_only:
            result = run_witness_only(root, endpoint, client, events=args.events or 100_000, rate=args.witness_rate)
        elif args.profile is not None:
            result = profile(root, endpoint, client, events=events, out=args.profile.resolve(), top=args.top,
                             clock=args.profile_clock)
        elif args.stream_only:
            result = stream_summary(streaming(root, endpoint, client, stream_gib, args.cpu))
        else:
            result = run_benchmark(root, endpoint, client, events=events, rss_gib=rss_gib, repeats=repeats,
                                   trials=trials, witness_rate=args.witness_rate)
            if stream_gib > 0:
                result.update(stream_summary(streaming(root, endpoint, client, stream_gib, args.cpu)))
    finally:
        stop_moto()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, separators=(",", ":")))


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


def _moto_version() -> str:
    import moto

    return str(moto.__version__)


if __name__ == "__main__":
    main()
