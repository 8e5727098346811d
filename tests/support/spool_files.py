"""Reading a spool directory back in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from auditlock.spool.format import parse_segment_name


def segment_paths(spool: Path) -> list[Path]:
    """Segment files of a spool, ordered by writer then first seq."""
    named = [(parse_segment_name(p.name), p) for p in spool.iterdir() if p.is_file()]
    return [p for name, p in sorted((n, p) for n, p in named if n is not None)]


def spool_lines(spool: Path) -> list[bytes]:
    """Every line of every segment, in writer/seq order, without newlines."""
    return [line for path in segment_paths(spool) for line in path.read_bytes().splitlines()]


def spool_events(spool: Path) -> list[dict[str, Any]]:
    """Every event in the spool, parsed."""
    return [orjson.loads(line) for line in spool_lines(spool)]
