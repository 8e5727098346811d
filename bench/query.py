"""Benchmark of `auditlock query` against a hand-written DuckDB `read_json` query (it reports, never asserts).

    uv run python bench/query.py                  # 1M events over 12 months
    uv run python bench/query.py --events 100000  # quicker

Setup: `--events` auditlock/1 events, evenly spread over 12 months (2025-12 .. 2026-11), ~1000 actors, stamped
by auditlock's own `EventChain` (real event_id/occurred_at/seq/prev), cut into gzip JSONL objects of at most
`--object-events` events per month exactly as the agent names them (`layout.object_key`), written into a
local directory laid out like the bucket and uploaded to a moto S3 server running in this process.

Measured (in this process, best of `--repeat` runs, the cache warm — a first, cold run fills it and is
reported on its own):
- selective: one actor, one month — `auditlock query --actor A --since 2026-03 --until 2026-03 --format
  jsonl` (the command's code path: list the month's prefix in S3, check the cache, DuckDB, write JSONL);
- scan: a full-scan aggregate — `auditlock query --sql "SELECT event_type, count(*) ... GROUP BY 1"`
  over all 12 months (partitions discovered by listing);
- the floor for each: a hand-written DuckDB query over the same cached files (`read_json` with the same
  explicit columns, a glob over the month directory / the whole archive), rows fetched into Python.

A readable table goes to stdout; the LAST line is exactly one JSON object with the keys selective_s, scan_s,
selective_vs_duckdb and scan_vs_duckdb.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditlock.archive import layout
from auditlock.config.model import SinkConfig
from auditlock.spool.chain import EventChain

PREFIX = "audit"
MONTH = "2026-03"
ACTOR = "user:42"
SCAN_SQL = "SELECT event_type, count(*) AS n FROM {source} GROUP BY 1 ORDER BY 2 DESC"
START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
TYPES = ("order.updated", "order.created", "auth.login_succeeded", "auth.login_failed", "data.accessed",
         "access.role_granted")


def write_archive(root: Path, events: int, object_events: int) -> list[Path]:
    """Stamp `events` events over 12 months and write them as archive objects under `root`."""
    step = (END - START).total_seconds() * 1e9 / events
    times = iter(int(START.timestamp() * 1e9 + i * step) for i in range(events))
    chain = EventChain("0" * 20 + "bench0000000", max_event_bytes=65536, clock=lambda: next(times))
    files: list[Path] = []
    lines: list[bytes] = []
    month = -1
    for n in range(events):
        line, line_month = chain.stamp(_record(n))
        chain.advance(line)
        if lines and (line_month != month or len(lines) >= object_events):
            files.append(_write_object(root, lines))
            lines = []
        month = line_month
        lines.append(line)
    files.append(_write_object(root, lines))
    return files


def _record(n: int) -> dict[str, Any]:
    return {"schema": "auditlock/1", "event_id": None, "event_type": TYPES[n % len(TYPES)], "occurred_at": None,
            "actor_id": f"user:{n * 7919 % 1000}", "actor_type": "user", "actor_ip": f"203.0.113.{n % 250}",
            "target_type": "Order", "target_id": str(n % 50_000),
            "payload": {"changes": {"status": ["new", "paid"]}, "total": n % 1000},
            "service": "shop", "host": "shop-7d9f", "retention": "standard", "trace_id": None, "span_id": None}


def _write_object(root: Path, lines: list[bytes]) -> Path:
    content = b"".join(lines)
    first = json.loads(lines[0])["occurred_at"]
    path = root / layout.object_key(PREFIX, first, "standard", hashlib.sha256(content).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content, compresslevel=6, mtime=0))
    return path


def upload(root: Path, files: list[Path], client: Any, bucket: str) -> None:
    """Put every archive file under its key (relative to `root`)."""
    client.create_bucket(Bucket=bucket)
    for path in files:
        client.put_object(Bucket=bucket, Key=str(path.relative_to(root)), Body=path.read_bytes())


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    """Build the archive, run both queries both ways, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--object-events", type=int, default=25_000, help="events per object at most")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise

    from moto.server import ThreadedMotoServer

    with tempfile.TemporaryDirectory(prefix="auditlock-bench-query-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        files = write_archive(root / "bucket", args.events, args.object_events)
        result: dict[str, Any] = {
            "events": args.events, "objects": len(files), "write_archive_s": round(time.perf_counter() - started, 2),
            "archive_mib": round(sum(p.stat().st_size for p in files) / 2**20, 1)}
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            result |= measure(root, files, f"http://{host}:{port}", args.repeat)
        finally:
            server.stop()
    result |= {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps({key: result[key] for key in ("selective_s", "scan_s", "selective_vs_duckdb",
                                                    "scan_vs_duckdb")}))


def measure(root: Path, files: list[Path], endpoint_url: str, repeat: int) -> dict[str, Any]:
    """Upload the archive, fill the cache (cold runs), then time both queries both ways, warm."""
    import boto3

    from auditlock.query.cache import make_client

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    sink = SinkConfig(bucket="bench", prefix=PREFIX, region="us-east-1", endpoint_url=endpoint_url)
    upload(root / "bucket", files, boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1"), "bench")
    ours_selective, ours_scan = _ours(make_client(sink), _config(sink, root), root / "cache")
    cold_selective_s, cold_scan_s = best(ours_selective, 1), best(ours_scan, 1)
    cached = root / "cache" / "archive" / endpoint_url.removeprefix("http://").replace(":", "_") / "bench"
    duck_selective, duck_scan = _duckdb(cached / PREFIX / "events")
    selective_s, duck_selective_s = best(ours_selective, repeat), best(duck_selective, repeat)
    scan_s, duck_scan_s = best(ours_scan, repeat), best(duck_scan, repeat)
    return {
        "cold_selective_s": round(cold_selective_s, 3), "cold_scan_s": round(cold_scan_s, 3),
        "selective_s": round(selective_s, 3), "duckdb_selective_s": round(duck_selective_s, 3),
        "scan_s": round(scan_s, 3), "duckdb_scan_s": round(duck_scan_s, 3),
        "selective_vs_duckdb": round(selective_s / duck_selective_s, 3),
        "scan_vs_duckdb": round(scan_s / duck_scan_s, 3),
    }


def _ours(client: Any, config: Any, cache: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """`auditlock query`'s code path for both queries (output written to memory)."""
    from auditlock.archive.timerange import TimeRange, parse_time
    from auditlock.query.filters import EventFilter
    from auditlock.query.session import QueryRequest, execute

    now = dt.datetime.now(dt.UTC)
    month = TimeRange(parse_time(MONTH, now), parse_time(MONTH, now, end=True))

    def selective() -> None:
        request = QueryRequest(EventFilter(actor=ACTOR, time_range=month), cache_dir=cache, fmt="jsonl")
        execute(request, config, io.StringIO(), io.StringIO(), client=client)

    def scan() -> None:
        request = QueryRequest(EventFilter(), cache_dir=cache, sql=SCAN_SQL.format(source="audit"), fmt="csv")
        execute(request, config, io.StringIO(), io.StringIO(), client=client)

    return selective, scan


def _duckdb(events: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """The hand-written floor: DuckDB read_json over the same cached files, rows fetched into Python."""
    import duckdb

    from auditlock.query.engine import read_json_sql

    year, month = MONTH.split("-")

    def selective() -> None:
        with duckdb.connect() as con:
            source = read_json_sql([events / f"year={year}" / f"month={month}" / "*.jsonl.gz"])
            con.execute(f"SELECT * FROM {source} WHERE actor_id = ? AND occurred_at >= ? AND occurred_at < ? "
                        "ORDER BY occurred_at DESC",
                        [ACTOR, f"{MONTH}-01T00:00:00.000000Z", "2026-04-01T00:00:00.000000Z"]).fetchall()

    def scan() -> None:
        with duckdb.connect() as con:
            con.execute(SCAN_SQL.format(source=read_json_sql([events / "*" / "*" / "*.jsonl.gz"]))).fetchall()

    return selective, scan


def _config(sink: SinkConfig, root: Path) -> Any:
    from auditlock.config.model import Config, RetentionClass, RetentionConfig, SpoolConfig

    return Config(service="bench", spool=SpoolConfig(dir=root / "spool"), sink=sink,
                  retention=RetentionConfig(default="standard", classes={"standard": RetentionClass(days=1)}))


if __name__ == "__main__":
    main()
