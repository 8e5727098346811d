"""The fast and the slow path of `spool.lines` give one verdict, and the shipping reader (`stream_lines`, chunked)
finds the same bad line, with the same reason, as the line-by-line reader (`scan_segment`).

`valid_event` (the fast path every shipped line goes through) proves a line valid with one parse, one type-tuple
lookup and one re-encode; `check_rule_by_rule` (what `parse_line` falls back to) checks the rules one at a time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings

from auditlock.spool.format import EVENT_KEYS, ZERO_HASH
from auditlock.spool.lines import (
    MAX_LINE_BYTES,
    MAX_LINE_DEPTH,
    check_rule_by_rule,
    checked_event,
    parse_line,
    valid_event,
)
from auditlock.spool.reader import CHUNK_BYTES, DamagedSegmentError, scan_segment, stream_lines
from tests.support.hostile_spool import PLANTED_WRITER, planted_name
from tests.test_hostile_spool_shapes import crafted_lines


def base_event(seq: int = 0, prev: str = ZERO_HASH, occurred_at: str = "2026-05-01T10:00:00.000000Z",
               retention: str = "standard") -> dict[str, Any]:
    """A valid event of the planted writer, in the writer's key order."""
    return {
        "schema": "auditlock/1", "event_id": f"{seq:032x}", "event_type": "order.updated", "occurred_at": occurred_at,
        "actor_id": "user:82", "actor_type": "user", "actor_ip": None, "target_type": "Order", "target_id": str(seq),
        "payload": {"status": "shipped", "total": 12.5, "items": [1, 2]}, "service": "shop", "host": "vm",
        "retention": retention, "trace_id": None, "span_id": None, "writer": PLANTED_WRITER, "seq": seq, "prev": prev,
    }


BASE = orjson.dumps(base_event())


def with_field(key: str, value: object) -> bytes:
    """The base line with one field set (still in the writer's JSON form)."""
    event = base_event()
    event[key] = value
    return orjson.dumps(event)


def nested(depth: int) -> object:
    """A value `depth` objects deep."""
    value: object = 0
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_lists(depth: int) -> object:
    """A value `depth` lists deep."""
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def reordered() -> bytes:
    """The base event with its keys in reverse order (canonical: orjson keeps a dict's order)."""
    return orjson.dumps(dict(reversed(list(base_event().items()))))


# Lines an attacker with write access to the spool can craft, around the base line (ids name what each breaks).
HOSTILE: dict[str, bytes] = {
    "valid": BASE,
    "valid-keys-reordered": reordered(),
    "valid-40-deep": with_field("payload", {"deep": nested(MAX_LINE_DEPTH - 2)}),
    "valid-null-optional-text": with_field("actor_id", None),
    "whitespace-after-colon": BASE.replace(b'":', b'": ', 1),
    "leading-space": b" " + BASE,
    "trailing-space": BASE + b" ",
    "trailing-garbage": BASE + b"x",
    "two-objects": BASE + b"," + BASE,
    "duplicate-top-key": BASE.replace(b'"event_type":', b'"event_type":"x","event_type":', 1),
    "duplicate-payload-key": BASE.replace(b'"status":', b'"status":"x","status":', 1),
    "re-encoded-escape": BASE.replace(b'"order.updated"', b'"\\u006frder.updated"', 1),
    "escaped-slash": BASE.replace(b'"shop"', b'"sh\\/op"', 1),
    "float-form": BASE.replace(b"12.5", b"1.25e1", 1),
    "huge-int-in-payload": BASE.replace(b"12.5", b"123456789012345678901234567890", 1),
    "seq-over-64-bits": BASE.replace(b'"seq":0', b'"seq":9223372036854775808', 1),
    "seq-negative-over-64-bits": BASE.replace(b'"seq":0', b'"seq":-9223372036854775809', 1),
    "seq-float": BASE.replace(b'"seq":0', b'"seq":0.0', 1),
    "seq-bool": with_field("seq", True),
    "seq-string": with_field("seq", "0"),
    "nan": BASE.replace(b"12.5", b"NaN", 1),
    "infinity": BASE.replace(b"12.5", b"Infinity", 1),
    "bad-utf8": BASE.replace(b"user:82", b"user:\xff\xfe", 1),
    "lone-surrogate": BASE.replace(b"user:82", b"user:\\ud800", 1),
    "41-deep": with_field("payload", {"deep": nested(MAX_LINE_DEPTH - 1)}),
    "deep-list": with_field("payload", {"deep": nested_lists(MAX_LINE_DEPTH - 1)}),
    "payload-list": with_field("payload", [1]),
    "payload-string": with_field("payload", "x"),
    "payload-null": with_field("payload", None),
    "missing-key": orjson.dumps({k: v for k, v in base_event().items() if k != "host"}),
    "extra-key": orjson.dumps({**base_event(), "extra": 1}),
    "optional-text-int": with_field("actor_id", 82),
    "optional-text-list": with_field("actor_ip", ["127.0.0.1"]),
    "required-text-null": with_field("event_type", None),
    "writer-int": with_field("writer", 1),
    "schema-other": with_field("schema", "auditlock/2"),
    "month-13": with_field("occurred_at", "2026-13-01T00:00:00.000000Z"),
    "february-30": with_field("occurred_at", "2026-02-30T00:00:00.000000Z"),
    "hour-24": with_field("occurred_at", "2026-05-01T24:00:00.000000Z"),
    "leap-second": with_field("occurred_at", "2026-05-01T23:59:60.000000Z"),
    "fullwidth-digits": with_field("occurred_at", "２０２６-05-01T10:00:00.000000Z"),
    "fullwidth-fraction": with_field("occurred_at", "2026-05-01T10:00:00.００００００Z"),
    "no-z": with_field("occurred_at", "2026-05-01T10:00:00.000000+"),
    "short-fraction": with_field("occurred_at", "2026-05-01T10:00:00.00000Z"),
    "path-in-time": with_field("occurred_at", "2026-12!/../../../x"),
    "retention-path": with_field("retention", "../evil"),
    "retention-empty": with_field("retention", ""),
    "top-level-list": b"[1]",
    "top-level-string": b'"x"',
    "empty": b"",
    "over-max-line-bytes": with_field("payload", {"x": "a" * MAX_LINE_BYTES}),
}


class TestFastAndSlowPathAgree:
    """Invariant (one definition): the fast path and the rule-by-rule path accept exactly the same lines."""

    @pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
    def test_a_hostile_line_gets_one_verdict(self, body: bytes) -> None:
        """Each crafted line is valid on the fast path exactly when the rule-by-rule path finds no problem."""
        fast, slow = valid_event(body), check_rule_by_rule(body)

        assert (fast is not None) == (slow.event is not None), slow.problem
        assert fast == slow.event

    @pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
    def test_the_shipping_reader_s_path_gets_the_same_verdict(self, body: bytes) -> None:
        """`checked_event` (what the shipping reader runs) accepts exactly what `valid_event` accepts, with the
        event's values in schema order."""
        fast, checked = valid_event(body), checked_event(body)

        assert (checked is None) == (fast is None)
        if checked is not None:
            assert checked == (fast, tuple(fast[key] for key in EVENT_KEYS))

    def test_the_table_holds_valid_and_invalid_lines(self) -> None:
        """The table above exercises both verdicts (only the `valid*` lines are valid)."""
        valid = {name for name, body in HOSTILE.items() if valid_event(body) is not None}

        assert valid == {name for name in HOSTILE if name.startswith("valid")}

    @settings(max_examples=300, deadline=None)
    @given(line=crafted_lines(seq=0))
    def test_a_generated_line_gets_one_verdict(self, line: bytes) -> None:
        """Hypothesis: a line close to a valid event, with hostile values, gets the same verdict from both paths."""
        body = line.split(b"\n")[0]

        assert (valid_event(body) is not None) == (check_rule_by_rule(body).event is not None)
        assert (checked_event(body) is not None) == (check_rule_by_rule(body).event is not None)


def chained(count: int, *, months: tuple[str, ...] = ("2026-05",),
            classes: tuple[str, ...] = ("standard",)) -> list[bytes]:
    """`count` lines (newline included) of one writer's valid chain; line n is in months[n % len] and
    classes[n % len]."""
    lines, prev = [], ZERO_HASH
    for seq in range(count):
        occurred_at = f"{months[seq % len(months)]}-01T10:{seq // 60 % 60:02d}:{seq % 60:02d}.000000Z"
        body = orjson.dumps(base_event(seq, prev, occurred_at, classes[seq % len(classes)]))
        lines.append(body + b"\n")
        prev = hashlib.sha256(body).hexdigest()
    return lines


class Sink:
    """A `LineSink` keeping what it is handed."""

    def __init__(self) -> None:
        self.writes: list[tuple[tuple[str, str], bytes, int, str, str]] = []

    def write(self, key: tuple[str, str], lines: bytes | memoryview, count: int, first: str, last: str) -> None:
        self.writes.append((key, bytes(lines), count, first, last))


def write_segment(directory: Path, lines: list[bytes]) -> Path:
    """A sealed segment of the planted writer holding `lines`."""
    path = directory / planted_name(0)
    path.write_bytes(b"".join(lines))
    return path


LINES_PER_CHUNK = CHUNK_BYTES // len(chained(1)[0])
POSITIONS = {"first": 0, "second": 1, "mid-chunk": LINES_PER_CHUNK // 2, "first-of-second-chunk": LINES_PER_CHUNK,
             "last": 2 * LINES_PER_CHUNK + 9}


def scan_reason(path: Path) -> str:
    """The line-by-line reader's damage, without the byte offset it adds."""
    damage = scan_segment(path).damage
    assert damage is not None
    head, rest = damage.split(" (byte ", 1)
    return f"{head}: {rest.split('): ', 1)[1]}"


class TestChunkedChainCheck:
    """Invariant (one verdict): the shipping reader, which reads in chunks, refuses a segment at the line, and for
    the reason, the line-by-line reader names."""

    @pytest.mark.parametrize("position", POSITIONS.values(), ids=POSITIONS.keys())
    @pytest.mark.parametrize("name", [name for name in HOSTILE if not name.startswith("valid")
                                      and name != "over-max-line-bytes"])
    def test_a_crafted_line_is_found_where_it_is(self, tmp_path: Path, name: str, position: int) -> None:
        """A crafted line anywhere in a chunk (or at a chunk's edge) is the damage, named by its line number."""
        lines = chained(POSITIONS["last"] + 1)
        lines[position] = HOSTILE[name] + b"\n"
        path = write_segment(tmp_path, lines)

        with pytest.raises(DamagedSegmentError) as raised:
            stream_lines(path, Sink())

        assert raised.value.reason == f"line {position + 1}: {parse_line(HOSTILE[name]).problem}"

    @pytest.mark.parametrize("position", list(POSITIONS.values())[1:], ids=list(POSITIONS)[1:])
    @pytest.mark.parametrize("edit", ["seq-gap", "other-writer", "prev-of-another-line", "line-changed"])
    def test_a_chain_break_is_found_where_it_is(self, tmp_path: Path, edit: str, position: int) -> None:
        """A seq gap, another writer, a wrong prev or a changed earlier line is named at the line a line-by-line
        reader names, for the same reason."""
        lines = chained(POSITIONS["last"] + 1)
        event = orjson.loads(lines[position])
        if edit == "seq-gap":
            event["seq"] += 1
        elif edit == "other-writer":
            event["writer"] = "cd" * 16
        elif edit == "prev-of-another-line":
            event["prev"] = orjson.loads(lines[position - 1])["prev"]
        if edit == "line-changed":  # the line before changed: this line's prev no longer matches its hash
            before = orjson.loads(lines[position - 1])
            before["target_id"] = "changed"
            lines[position - 1] = orjson.dumps(before) + b"\n"
        else:
            lines[position] = orjson.dumps(event) + b"\n"
        path = write_segment(tmp_path, lines)

        with pytest.raises(DamagedSegmentError) as raised:
            stream_lines(path, Sink())

        assert raised.value.reason.startswith(scan_reason(path).split(" does not match")[0])

    def test_a_valid_chain_is_handed_over_whole(self, tmp_path: Path) -> None:
        """Three chunks of one key: every line handed over once, in order, with the chunk's first and last time."""
        lines = chained(POSITIONS["last"] + 1)
        sink = Sink()

        end = stream_lines(write_segment(tmp_path, lines), sink)

        assert b"".join(data for _, data, _, _, _ in sink.writes) == b"".join(lines)
        assert sum(count for _, _, count, _, _ in sink.writes) == len(lines)
        assert {key for key, *_ in sink.writes} == {("2026-05", "standard")}
        assert (end.lines, end.last_seq, end.last_hash) == (len(lines), len(lines) - 1,
                                                            hashlib.sha256(lines[-1][:-1]).hexdigest())

    def test_mixed_keys_in_a_chunk_are_split_in_file_order(self, tmp_path: Path) -> None:
        """Lines of two months and two classes interleaved in one chunk go to their keys, each in file order, with
        each key's earliest and latest time."""
        lines = chained(40, months=("2026-05", "2026-06"), classes=("standard", "standard", "legal"))
        sink = Sink()

        stream_lines(write_segment(tmp_path, lines), sink)

        expected: dict[tuple[str, str], list[bytes]] = {}
        for line in lines:
            event = orjson.loads(line)
            expected.setdefault((event["occurred_at"][:7], event["retention"]), []).append(line)
        assert {key: data for key, data, *_ in sink.writes} == {key: b"".join(group) for key, group in expected.items()}
        for key, _, count, first, last in sink.writes:
            times = [orjson.loads(line)["occurred_at"] for line in expected[key]]
            assert (count, first, last) == (len(expected[key]), min(times), max(times))

    def test_times_out_of_order_give_each_key_its_earliest_and_latest(self, tmp_path: Path) -> None:
        """A clock stepping back inside a key's runs (A B A in one chunk; the earliest time inside the first run,
        the latest inside the second): the key's earliest and latest time, not its first and last line's."""
        times = ["2026-05-01T10:00:05.000000Z", "2026-05-01T10:00:00.000000Z", "2026-05-01T10:00:09.000000Z",
                 "2026-06-01T10:00:00.000000Z",
                 "2026-05-01T10:00:03.000000Z", "2026-05-01T10:00:11.000000Z", "2026-05-01T10:00:04.000000Z"]
        lines, prev = [], ZERO_HASH
        for seq, occurred_at in enumerate(times):
            body = orjson.dumps(base_event(seq, prev, occurred_at))
            lines.append(body + b"\n")
            prev = hashlib.sha256(body).hexdigest()
        sink = Sink()

        stream_lines(write_segment(tmp_path, lines), sink)

        assert [(key, data, count, first, last) for key, data, count, first, last in sink.writes] == [
            (("2026-05", "standard"), b"".join(lines[:3] + lines[4:]), 6, "2026-05-01T10:00:00.000000Z",
             "2026-05-01T10:00:11.000000Z"),
            (("2026-06", "standard"), lines[3], 1, times[3], times[3])]
