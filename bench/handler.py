"""Benchmark of the application-side cost of auditlock (not a test: it reports, it never asserts).

    uv run python bench/handler.py                      # 200k events, median of 5 repeats
    uv run python bench/handler.py --events 2000 --repeats 1 --sync-events 320    # smoke run
    uv run python bench/handler.py --profile 50000      # cProfile of variant (a) + micro costs

Variants (each repeat writes to a fresh directory under one temp dir, so all on one filesystem):

(a) audit:     structlog [AuditProcessor(group, keep_in_app_log=false), TimeStamper, JSONRenderer(orjson)]
               + BytesLoggerFactory; the timing includes the final `processor.flush()` (an fdatasync).
(b) structlog: the same pipeline without AuditProcessor - what users run today without an audit trail.
(c) floor:     per event, build the equivalent record dict by hand, orjson.dumps it, a UUIDv7 string,
               sha256 of the previous line, os.write to an O_APPEND fd.
(sN) sync:     (a) with durability "sync" from N threads at once (N = 1, 4, 16; each logging call returns once its
               line is fdatasync'd), against
(gN) the group-commit floor: (c) appended under a lock by N threads, each returning once an fdatasync that began
               after its write completed (one fdatasync covers every line written before it: leader/follower), and
(pN) PostgreSQL: N connections, each INSERT (the same JSON line) + COMMIT with fsync and synchronous_commit on, on a
               throwaway server in the same temp dir (skipped when no PostgreSQL server binaries are installed).
(e0)/(e2) erasable fields (issue #19): a customer event through AuditProcessor, plain against two erasable fields
               sealed under the subject's cached key (bench/erasure.py builds both; goal e2 <= 1.5 x e0 in CPU time).

Fairness: the variants run in a new shuffled order each repeat (seed printed, `--seed`), each in a fresh directory;
nothing is deleted until the end (an fdatasync right after deleting 100 MB was measured 2x slower), and
`os.sync()` before each timed run writes back what the previous one left dirty.

A readable table goes to stdout; the LAST line is exactly one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

from handlerbench.events import make_pool
from handlerbench.profile import run_profile
from handlerbench.summary import run_benchmark

# The parts live in bench/handlerbench/ (this directory is sys.path[0] when the script runs).


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with --profile, the profile) and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events per repeat of (a), (b), (c)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the median is reported")
    parser.add_argument("--sync-events", type=int, default=3200, help="events per repeat of each sync variant")
    parser.add_argument("--seed", type=int, default=None, help="seed of the variants' order (default: random)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL variants")
    parser.add_argument("--import-repeats", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp dir (default: $TMPDIR)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of the benchmark: cProfile (a) over N events and time its parts")
    parser.add_argument("--top", type=int, default=25, help="rows of the profile tables")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)

    root = Path(tempfile.mkdtemp(prefix="auditlock-bench-", dir=args.dir))
    pool = make_pool()
    try:
        result = run_profile(root, pool, args) if args.profile else run_benchmark(root, pool, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
