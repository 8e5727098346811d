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
import json
import shutil
import sys
import tempfile
from pathlib import Path

from agentbench import children
from agentbench.children import warm_up
from agentbench.floor import floor_child
from agentbench.profile import profile
from agentbench.report import run_benchmark
from agentbench.streaming import stream_summary, streaming
from agentbench.witness import run_witness_only

# The parts live in bench/agentbench/ (this directory is sys.path[0] when the script runs). auditlock and the test
# support are imported inside the functions that use them, so that the floor child (this script with
# --floor-child) imports nothing but the stdlib and boto3, like a minimal shipper would.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support.s3servers (start_moto, make_lock_bucket)


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

    root = Path(tempfile.mkdtemp(prefix="auditlock-bench-agent-", dir=args.dir))
    children.PYCACHE = root / "pycache"  # one setting for every child of this run
    endpoint, stop_moto = start_moto()
    try:
        client = endpoint.client()
        print(f"warm-up (bytecode cache in {children.PYCACHE}): {warm_up(root, endpoint, client):.1f} s", flush=True)
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


if __name__ == "__main__":
    main()
