"""Fuzzing the input boundary: any event dict gives a valid spool line or an EventError, never a broken spool."""

from __future__ import annotations

import datetime as dt
import decimal
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlock import EventError
from auditlock.config import build_config
from auditlock.handler.core import AuditCore
from auditlock.spool.format import EVENT_KEYS
from auditlock.spool.reader import scan_segment
from auditlock.spool.writer import SpoolWriter
from tests.conftest import config_dict
from tests.support.spool_files import segment_paths, spool_lines

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(max_size=8),
    st.decimals(), st.datetimes(timezones=st.none() | st.just(dt.UTC)), st.dates(), st.uuids(),
    st.sampled_from([object(), "\ud800", {1: 2}]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner,
                                                                                           max_size=3), max_leaves=8)
field_names = st.sampled_from(["status", "total", "customer_email", "secret", "payload", "before", "after",
                               "target_id", "target_type", "actor_id", "actor_type", "actor_ip", "reason"])
event_types = st.sampled_from(["order.updated", "auth.login_failed", "Order.Bad", "order", "customer.updated",
                               "data.accessed"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.tuples(event_types, st.dictionaries(field_names, values, max_size=6)), max_size=8))
def test_any_event_dict_gives_a_line_or_an_event_error(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Every input either becomes one schema-valid line or raises EventError; the spool stays intact."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        config = build_config(config_dict(spool, events={"max_event_bytes": 2048},
                                          spool={"segment_max_bytes": 4096}))
        writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
        core = AuditCore(config, writer=writer)
        written = 0
        try:
            for event_type, fields in events:
                try:
                    core.emit(event_type, {"actor_id": "user#1", **fields})
                    written += 1
                except EventError:
                    pass
        finally:
            writer.close()
        assert_spool_intact(spool, written)


def assert_spool_intact(spool: Path, written: int) -> None:
    """The spool holds exactly `written` schema-valid lines plus the writer's clean-end record, chained, untorn."""
    if written == 0:
        return
    for path in segment_paths(spool):
        scan = scan_segment(path)
        assert scan.damage is None
        assert not scan.torn_tail
    lines = spool_lines(spool)
    assert len(lines) == written + 1
    events = [orjson.loads(line) for line in lines]
    assert all(tuple(e) == EVENT_KEYS for e in events)
    assert [e["seq"] for e in events] == list(range(written + 1))
    assert events[-1]["event_type"] == "auditlock.writer_closed"


def test_decimal_strategy_sanity() -> None:
    """Decimal NaN is one of the values the fuzzer feeds (guards the strategy itself)."""
    assert not decimal.Decimal("NaN").is_finite()
