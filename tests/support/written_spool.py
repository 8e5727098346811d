"""Spools written by the real writer and then edited on disk, for the reader, shipping-check and recovery tests.

A pytest plugin (listed in tests/conftest.py): the `rotated` fixture is defined here once for every module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.config import Config
from auditlock.handler.core import AuditCore
from auditlock.spool.format import SegmentName, parse_segment_name
from auditlock.spool.writer import SpoolWriter
from tests.support.spool_files import segment_paths


def write_orders(config: Config, count: int) -> list[Path]:
    """Write `count` order.updated events with the real writer, close it; the sealed segments in chain order."""
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    core = AuditCore(config, writer=writer)
    try:
        for n in range(count):
            core.emit("order.updated", {"actor_id": "user#1", "target_type": "Order", "target_id": n,
                                        "before": {"status": "new"}, "after": {"status": "paid"}})
    finally:
        writer.close()
    return segment_paths(config.spool.dir)


def edit_line(path: Path, index: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite line `index` (0-based) of a segment in place after `change` edited its parsed event."""
    lines = path.read_bytes().splitlines(keepends=True)
    event = orjson.loads(lines[index])
    change(event)
    lines[index] = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    path.write_bytes(b"".join(lines))


def reopen(path: Path) -> Path:
    """Give a sealed segment its `.open` name back: an open segment whose writer is gone."""
    name = parse_segment_name(path.name)
    assert name is not None
    target = path.with_name(SegmentName(name.writer, name.first_seq, is_open=True).filename)
    path.rename(target)
    return target


def lines_of(path: Path) -> list[bytes]:
    """The raw lines of a segment, newlines kept."""
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def rotated(make_config: Callable[..., Config]) -> list[Path]:
    """A writer's chain over several 4 KiB segments; only the last one ends with the clean-end record."""
    paths = write_orders(make_config(spool={"segment_max_bytes": 4096}), 40)
    assert len(paths) >= 3
    return paths
