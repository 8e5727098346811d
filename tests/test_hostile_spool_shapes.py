"""Hypothesis: spool file shapes an attacker can leave (names, file types, contents) against the agent's recovery and
batch building, `query --include-spool` and `verify --spool`: nothing blocks or crashes, every bad file named like
a segment ends in quarantine with a reason, nothing outside the spool is written, the good segments still build."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import auditlock
from auditlock.agent.batch import build_objects, list_sealed
from auditlock.agent.recovery import quarantine
from auditlock.agent.service import Agent
from auditlock.config import Config, build_config
from auditlock.handler.core import AuditCore
from auditlock.query.spool import count_spool_events
from auditlock.spool.format import QUARANTINE_DIR, ZERO_HASH, parse_segment_name
from auditlock.spool.writer import SpoolWriter
from auditlock.verify.spool import verify_spool
from tests.conftest import config_dict
from tests.support.hostile_spool import PLANTED_WRITER, planted_name

NAMES = ("sealed", "open", "other")
KINDS = ("regular", "symlink-to-file", "symlink-to-dev-zero", "dangling-symlink", "fifo", "directory")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)


@st.composite
def crafted_lines(draw: st.DrawFn, seq: int) -> bytes:
    """A line close to a valid event of the planted writer, with hostile values where readers break."""
    event: dict[str, Any] = {
        "schema": "auditlock/1", "event_id": "0" * 32, "event_type": "order.updated",
        "occurred_at": draw(st.sampled_from(["2026-05-01T00:00:00.000000Z", "2026-12!/../../../x",
                                             "2026-13-01T00:00:00.000000Z", ""]) | st.text(max_size=30)),
        "payload": draw(st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_values),
        "retention": draw(st.sampled_from(["standard", "../evil", "Standard", ""])),
        "writer": PLANTED_WRITER, "seq": seq, "prev": ZERO_HASH,
    }
    line = orjson.dumps(event)
    if draw(st.booleans()):
        line = line.replace(b'"event_type":', b'"event_type":"x","event_type":', 1)  # a duplicate key
    return line + draw(st.sampled_from([b"\n", b"", b"\n\n", b" \n"]))


@st.composite
def entries(draw: st.DrawFn) -> list[tuple[str, str, bytes]]:
    """Up to five planted entries: (name kind, file kind, content)."""
    count = draw(st.integers(0, 5))
    return [(draw(st.sampled_from(NAMES)), draw(st.sampled_from(KINDS)),
             draw(crafted_lines(seq=n * 16) | st.binary(max_size=200))) for n in range(count)]


def plant(spool: Path, outside: Path, n: int, shape: tuple[str, str, bytes]) -> tuple[str, Path | None]:
    """Put one entry into the spool; returns its name and the outside file it points to (if any)."""
    name_kind, kind, content = shape
    name = f"note{n}.jsonl" if name_kind == "other" else planted_name(n * 16, is_open=name_kind == "open")
    path = spool / name
    target = None
    if kind == "regular":
        path.write_bytes(content)
    elif kind == "symlink-to-file":
        target = outside / f"target{n}"
        target.write_bytes(content)
        path.symlink_to(target)
    elif kind == "symlink-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling-symlink":
        path.symlink_to(outside / "nothing-here")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return name, target


def one_pass(agent: Agent) -> None:
    """What one agent pass does before any upload: guard and recovery, then each sealed segment built, the damaged
    ones quarantined (as `Shipper.ship_batch` does)."""
    shipper = agent.shipper
    shipper.recover()
    for segment in list_sealed(shipper.spool):
        built = build_objects([segment], "audit", agent.config.retention.classes,
                              max_segment_bytes=shipper.max_segment_bytes)
        for path, reason in built.damaged.items():
            quarantine(shipper.spool, path, f"damaged sealed segment: {reason}")


class TestSpoolShapes:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(shapes=entries())
    def test_no_shape_blocks_crashes_or_escapes(self, shapes: list[tuple[str, str, bytes]]) -> None:
        """Any mix of planted names, file types and contents: quarantined with a reason, or a valid segment; the
        good writer's segments build; files outside the spool keep their bytes; query and verify read around it."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            spool, outside = root / "spool", root / "outside"
            outside.mkdir()
            config = build_config(config_dict(spool, sink={"bucket": "b", "endpoint_url": "http://127.0.0.1:9"},
                                              spool={"dir": str(spool), "durability": "sync",
                                                     "segment_max_bytes": 4096}))
            write_good_events(config)
            good = {p.name for p in list_sealed(spool)}
            planted = [plant(spool, outside, n, shape) for n, shape in enumerate(shapes)]
            before = {t: t.read_bytes() for _, t in planted if t is not None}
            one_pass(Agent(config, serve_http=False))
            count_spool_events(spool)
            verify_spool(spool)
            assert {t: t.read_bytes() for t in before} == before
            assert good <= {p.name for p in list_sealed(spool)}
            for name, _ in planted:
                check_outcome(spool, name)


def check_outcome(spool: Path, name: str) -> None:
    """A planted entry named like a segment is in quarantine with a reason, or is a regular segment that builds."""
    parsed = parse_segment_name(name)
    if parsed is None:
        return  # not a segment name: never read, never moved
    quarantined = spool / QUARANTINE_DIR / name
    if os.path.lexists(quarantined):
        assert (spool / QUARANTINE_DIR / f"{name}.reason.txt").read_text().strip()
        return
    sealed = spool / parsed.sealed().filename
    if not os.path.lexists(sealed):
        assert not os.path.lexists(spool / name), f"{name} left in the spool"
        return  # an empty dead writer's segment, removed by recovery
    assert sealed.is_file()
    assert not sealed.is_symlink()


def write_good_events(config: Config) -> None:
    """A real writer's sealed segments."""
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    core = AuditCore(config, writer=writer)
    with auditlock.actor("user:1"):
        for n in range(12):
            core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
    writer.close()
