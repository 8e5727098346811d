"""The floor: the least work the archive needs, run as its own process (`bench/agent.py --floor-child SPEC`).

Reads the sealed segments in the agent's (mtime, name) order, cuts the same <= batch_max_bytes batches, gzips each
(stdlib zlib level 6, or the agent's ISA-L level for the same-compressor floor), Content-MD5, put_object in a loop
with the agent's boto3 client config. Imports nothing but the stdlib and boto3 (isal only for the same-compressor
floor), like a minimal shipper would.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEGMENT = re.compile(r"^[0-9a-f]{32}\.[0-9a-f]{16}\.jsonl$")  # a sealed segment (auditlock.spool.format)

MIB = 1024 * 1024
GZIP_LEVEL = 6  # the floor's stdlib gzip level (the floor)
AGENT_GZIP_LEVEL = 2  # the agent's ISA-L level (auditlock.agent.batch.GZIP_LEVEL): the same-compressor floor's


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
