"""The spool writer: line format, chain, rotation, sealing, durability modes, file modes."""

from __future__ import annotations

import calendar
import hashlib
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.config import Config
from auditlock.errors import EventError, SpoolError
from auditlock.handler.core import AuditCore
from auditlock.spool.chain import EventChain, check_stampable, uuid7_str
from auditlock.spool.format import EVENT_KEYS, OPEN_SUFFIX, SEALED_SUFFIX, ZERO_HASH, parse_segment_name
from auditlock.spool.reader import scan_segment
from auditlock.spool.space import spool_size
from auditlock.spool.writer import SpoolWriter
from tests.support.spool_child import run_to_end, start_child
from tests.support.spool_files import segment_paths, spool_events, spool_lines
from tests.support.waiting import wait_for


def emit_orders(core: AuditCore, count: int, **extra: Any) -> None:
    """Emit `count` order.updated events as user#1."""
    for n in range(count):
        core.emit("order.updated", {"actor_id": "user#1", "target_type": "Order", "target_id": n,
                                    "before": {"status": "new"}, "after": {"status": "paid"}, **extra})


def writer_for(config: Config, closing: Callable[[Any], Any], **kwargs: Any) -> SpoolWriter:
    """A writer on the config's spool that is closed at teardown."""
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes, **kwargs)
    return closing(writer)  # type: ignore[no-any-return]


class TestLineFormat:
    def test_keys_in_schema_order(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """A spool line has exactly the DESIGN.md keys, in order, compact, one per line."""
        core = AuditCore(config, writer=writer_for(config, closing))
        emit_orders(core, 1)
        [line] = spool_lines(config.spool.dir)
        event = orjson.loads(line)
        assert tuple(event) == EVENT_KEYS
        assert line == orjson.dumps(event)
        assert event["schema"] == "auditlock/1"
        assert event["occurred_at"].endswith("Z")
        assert len(event["occurred_at"]) == len("2026-11-26T20:14:50.123456Z")

    def test_event_id_is_uuid7(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """event_id is a version-7, RFC 9562 variant UUID, distinct per event and time-ordered."""
        core = AuditCore(config, writer=writer_for(config, closing))
        emit_orders(core, 50)
        ids = [e["event_id"] for e in spool_events(config.spool.dir)]
        assert len(set(ids)) == 50
        assert all(i[14] == "7" and i[19] in "89ab" for i in ids)
        assert ids == sorted(ids)


class TestChain:
    def test_seq_and_prev_chain_across_rotations(self, make_config: Callable[..., Config],
                                                 closing: Callable[[Any], Any]) -> None:
        """seq counts without gaps and prev hashes the previous line, across segment rotations."""
        config = make_config(spool={"segment_max_bytes": 4096})
        core = AuditCore(config, writer=writer_for(config, closing))
        emit_orders(core, 100)
        assert len(segment_paths(config.spool.dir)) > 3
        lines = spool_lines(config.spool.dir)
        events = [orjson.loads(line) for line in lines]
        assert [e["seq"] for e in events] == list(range(100))
        assert events[0]["prev"] == ZERO_HASH
        for line, event in zip(lines, events[1:], strict=False):
            assert event["prev"] == hashlib.sha256(line).hexdigest()

    def test_segment_names_carry_first_seq(self, make_config: Callable[..., Config],
                                           closing: Callable[[Any], Any]) -> None:
        """Each segment's name holds its writer and the seq of its first line."""
        config = make_config(spool={"segment_max_bytes": 4096})
        writer = writer_for(config, closing)
        emit_orders(AuditCore(config, writer=writer), 40)
        for path in segment_paths(config.spool.dir):
            name = parse_segment_name(path.name)
            assert name is not None
            first = orjson.loads(path.read_bytes().splitlines()[0])
            assert (name.writer, name.first_seq) == (writer.writer_id, first["seq"])


class TestStamp:
    """The chain's stamp caches what stays the same for a second or a millisecond; the result must not show it."""

    BOUNDARY_NS = calendar.timegm((2027, 1, 1, 0, 0, 0)) * 10**9  # a month, a year, a second and a ms begin

    def test_cached_stamp_equals_a_fresh_one_across_boundaries(self) -> None:
        """event_id's time part, occurred_at and the month are what a fresh computation gives, before and after
        a millisecond, a second and a month (and year) boundary, and for several events within one millisecond."""
        times = [self.BOUNDARY_NS + delta for delta in (-10**9 - 1, -1_000_001, -1_000_000, -1000, -1, 0, 1, 999,
                                                         1000, 999_999, 1_000_000, 10**9, 10**9 + 123_456)]
        clock = iter(times)
        chain = EventChain("f" * 32, max_event_bytes=65536, clock=lambda: next(clock))
        for now in times:
            record: dict[str, Any] = {"event_id": None, "event_type": "order.updated", "occurred_at": None}
            line, month = chain.stamp(record)
            seconds, ns = divmod(now, 10**9)
            tm = time.gmtime(seconds)
            assert record["occurred_at"] == time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f".{ns // 1000:06d}Z"
            assert month == tm.tm_year * 12 + tm.tm_mon - 1
            assert record["event_id"][:19] == uuid7_str(now, 0)[:19]
            assert record["event_id"][19] in "89ab"
            assert orjson.loads(line)["event_id"] == record["event_id"]

    def test_random_tails_differ(self) -> None:
        """2000 stamps in one millisecond still get 2000 different event ids (the pool refills past 512)."""
        chain = EventChain("f" * 32, max_event_bytes=65536, clock=lambda: self.BOUNDARY_NS)
        ids = set()
        for _ in range(2000):
            record: dict[str, Any] = {"event_id": None}
            chain.stamp(record)
            ids.add(record["event_id"])
        assert len(ids) == 2000


class TestStampableCheck:
    def test_a_record_that_passes_is_never_refused_for_size(self) -> None:
        """check_stampable at the limit lets stamp() through even at the largest seq; a byte less, it refuses."""
        record: dict[str, Any] = {"event_id": None, "event_type": "order.updated", "occurred_at": None,
                                  "actor_id": "user#1", "payload": {"status": "x" * 500}}
        widest = {**record, "event_id": "0" * 36, "occurred_at": "0" * 27, "writer": "0" * 32, "seq": 2**63 - 1,
                  "prev": ZERO_HASH}
        limit = len(orjson.dumps(widest, option=orjson.OPT_APPEND_NEWLINE))
        check_stampable(record, limit)
        chain = EventChain("f" * 32, max_event_bytes=limit)
        chain.seq = 2**63 - 1
        line, _month = chain.stamp(dict(record))
        assert len(line) <= limit
        with pytest.raises(EventError, match=r"over \[events\] max_event_bytes"):
            check_stampable(record, limit - 1)


class TestSealing:
    def test_rotation_seals_previous_segments(self, make_config: Callable[..., Config],
                                              closing: Callable[[Any], Any]) -> None:
        """Only the newest segment is open; full ones are sealed and scan clean."""
        config = make_config(spool={"segment_max_bytes": 4096})
        emit_orders(AuditCore(config, writer=writer_for(config, closing)), 60)
        names = [parse_segment_name(p.name) for p in segment_paths(config.spool.dir)]
        assert [n.is_open for n in names if n] == [False] * (len(names) - 1) + [True]
        for path in segment_paths(config.spool.dir):
            scan = scan_segment(path)
            assert scan.damage is None
            assert not scan.torn_tail
            assert path.stat().st_size <= 4096

    def test_close_seals_and_is_idempotent(self, config: Config) -> None:
        """close() seals the open segment; a second close() does nothing."""
        writer = SpoolWriter(config.spool)
        emit_orders(AuditCore(config, writer=writer), 3)
        writer.close()
        writer.close()
        [path] = segment_paths(config.spool.dir)
        assert not parse_segment_name(path.name).is_open  # type: ignore[union-attr]

    def test_write_after_close_reopens(self, config: Config) -> None:
        """An event after close() goes to a new segment, continuing the chain."""
        writer = SpoolWriter(config.spool)
        core = AuditCore(config, writer=writer)
        emit_orders(core, 2)
        writer.close()
        emit_orders(core, 2)
        writer.close()
        events = spool_events(config.spool.dir)
        assert [e["seq"] for e in events] == [0, 1, 2, 3, 4, 5]
        closed = "auditlock.writer_closed"
        assert [e["event_type"] for e in events] == ["order.updated"] * 2 + [closed] + ["order.updated"] * 2 + [closed]
        assert len(segment_paths(config.spool.dir)) == 2

    def test_close_records_a_clean_end(self, config: Config) -> None:
        """close() writes an auditlock.writer_closed event counting the writer's events, once."""
        writer = SpoolWriter(config.spool)
        emit_orders(AuditCore(config, writer=writer), 3)
        writer.close()
        writer.close()
        last = spool_events(config.spool.dir)[-1]
        assert (last["event_type"], last["seq"], last["payload"]) == ("auditlock.writer_closed", 3, {"events": 3})
        assert (last["actor_id"], last["actor_type"]) == ("svc:shop", "service")

    def test_month_boundary_seals(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """Events on both sides of a UTC month boundary land in different segments."""
        end_of_november = calendar.timegm((2026, 11, 30, 23, 59, 59)) * 10**9
        times = itertools.chain([end_of_november, end_of_november + 999_999_000],
                                itertools.count(end_of_november + 10**9))
        writer = writer_for(config, closing, clock=lambda: next(times))
        emit_orders(AuditCore(config, writer=writer), 4)
        segments = segment_paths(config.spool.dir)
        assert len(segments) == 2
        months = [{e["occurred_at"][:7] for e in map(orjson.loads, p.read_bytes().splitlines())} for p in segments]
        assert months == [{"2026-11"}, {"2026-12"}]

    def test_age_seals_without_new_events(self, make_config: Callable[..., Config]) -> None:
        """The flusher seals a segment older than segment_max_age_s even when no event follows."""
        config = make_config(spool={"durability": "group", "segment_max_age_s": 0.05, "flush_interval_ms": 10})
        writer = SpoolWriter(config.spool)
        try:
            emit_orders(AuditCore(config, writer=writer), 1)
            wait_for(lambda: all(not p.name.endswith(".open.jsonl") for p in segment_paths(config.spool.dir)))
        finally:
            writer.close()


class TestStats:
    """`SpoolWriter.stats` (exported by the app's metrics): zero at the start, then each event, byte and sealed
    segment counted once."""

    def test_counts_of_a_writer_closed_after_three_events(self, config: Config) -> None:
        """A fresh writer counts nothing; after 3 events and close(): the lines and bytes of its one segment
        (the clean-end record included), 1 segment sealed, no error."""
        writer = SpoolWriter(config.spool)
        assert writer.stats == {"events": 0, "bytes": 0, "segments_sealed": 0, "errors": 0, "sync_failures": 0}
        emit_orders(AuditCore(config, writer=writer), 3)
        writer.close()
        [path] = segment_paths(config.spool.dir)
        assert writer.stats == {"events": len(path.read_bytes().splitlines()), "bytes": path.stat().st_size,
                                "segments_sealed": 1, "errors": 0, "sync_failures": 0}


class TestExitWithoutClose:
    """A process that never calls close() still exits, and its writer's `atexit` hook seals the segment."""

    @pytest.mark.parametrize("durability", ["sync", "group"])
    def test_process_returning_from_main_exits_and_seals(self, tmp_path: Path, durability: str) -> None:
        """The flusher is a daemon thread: it never holds the interpreter's exit (joined before `atexit` runs);
        three events written, the process exits by itself, one sealed segment holds them and the clean end."""
        spool = tmp_path / "spool"
        child = start_child(spool, "--mode", "crash", "--count", "3", "--durability", durability)
        try:
            lines = run_to_end(child)
        finally:
            if child.poll() is None:  # only when the test failed: a child stuck at exit
                child.kill()
                child.wait()
        assert len(lines) == 3
        names = [parse_segment_name(path.name) for path in segment_paths(spool)]
        assert [name.is_open for name in names if name] == [False]
        assert spool_events(spool)[-1]["event_type"] == "auditlock.writer_closed"


class TestWriterEdges:
    """A writer closed without events writes nothing; `flush()` before any event, and under durability "sync",
    succeeds (and keeps the writer); the clock stepping back a month rotates."""

    def test_close_without_events_writes_nothing(self, config: Config) -> None:
        """close() of a writer (with its core's clean-end record set up) that wrote no event records no clean end
        and creates no segment: a process that never audited leaves nothing in the spool."""
        writer = SpoolWriter(config.spool)
        AuditCore(config, writer=writer)
        writer.close()
        assert list(Path(config.spool.dir).glob("*.jsonl")) == []

    def test_flush_before_any_event_succeeds(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """flush() with nothing written (no segment yet) has nothing to make durable: True."""
        assert writer_for(config, closing).flush() is True

    def test_clock_stepping_back_a_month_rotates(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """Events of December, then of November (the clock set back): each month's events in their own segment."""
        december = calendar.timegm((2026, 12, 1, 0, 0, 1)) * 10**9
        november = calendar.timegm((2026, 11, 30, 23, 0, 0)) * 10**9
        times = itertools.chain([december, december + 10**6], itertools.count(november, 10**6))
        writer = writer_for(config, closing, clock=lambda: next(times))
        emit_orders(AuditCore(config, writer=writer), 4)
        months = [{e["occurred_at"][:7] for e in map(orjson.loads, p.read_bytes().splitlines())}
                  for p in segment_paths(config.spool.dir)]
        assert sorted(months, key=sorted) == [{"2026-11"}, {"2026-12"}]

    def test_flush_in_sync_mode_keeps_the_writer(self, make_config: Callable[..., Config],
                                                 closing: Callable[[Any], Any]) -> None:
        """flush() under durability "sync" returns True and does not abandon the segment."""
        config = make_config(spool={"durability": "sync"})
        writer = writer_for(config, closing)
        emit_orders(AuditCore(config, writer=writer), 2)
        first = writer.writer_id
        assert writer.flush() is True
        assert writer.writer_id == first


class TestDurabilityModes:
    @pytest.mark.parametrize("mode", ["sync", "group", "process"])
    def test_every_mode_writes_before_returning(self, make_config: Callable[..., Config],
                                                closing: Callable[[Any], Any], mode: str) -> None:
        """In every mode the line is in the file when the call returns."""
        config = make_config(spool={"durability": mode})
        emit_orders(AuditCore(config, writer=writer_for(config, closing)), 5)
        assert len(spool_lines(config.spool.dir)) == 5

    def test_flush_returns_true(self, make_config: Callable[..., Config], closing: Callable[[Any], Any]) -> None:
        """flush() makes group-mode writes durable and reports success."""
        config = make_config(spool={"durability": "group", "flush_interval_ms": 60000})
        writer = writer_for(config, closing)
        emit_orders(AuditCore(config, writer=writer), 5)
        assert writer.flush(timeout=5) is True


class TestFiles:
    def test_modes_are_the_two_identities_ones(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """The spool directory is created 3770 and segments 0640 (the agent's group reads them), whatever the umask."""
        old = os.umask(0o077)
        try:
            emit_orders(AuditCore(config, writer=writer_for(config, closing)), 1)
        finally:
            os.umask(old)
        assert stat.S_IMODE(config.spool.dir.stat().st_mode) == 0o3770
        [path] = segment_paths(config.spool.dir)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640

    def test_an_existing_spool_keeps_its_mode(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """A spool directory that exists (a single-user deployment's 0700) is left as it is."""
        config.spool.dir.mkdir(mode=0o700)
        emit_orders(AuditCore(config, writer=writer_for(config, closing)), 1)
        assert stat.S_IMODE(config.spool.dir.stat().st_mode) == 0o700

    def test_descriptor_is_close_on_exec(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """The open segment's descriptor is not inherited by exec'd children."""
        writer = writer_for(config, closing)
        emit_orders(AuditCore(config, writer=writer), 1)
        fd = writer._segment.fd  # type: ignore[union-attr]
        assert not os.get_inheritable(fd)


FLUSHER_THREAD = "auditlock-spool-flusher"
HOLD_TIMEOUT_S = 10.0


class HeldScan:
    """The writer's spool measurement (`measure=`), whose next flusher scan, once armed, is held until resumed.

    `hold="after_scan"`: the scan completes, then waits — its result goes stale while the test writes.
    `hold="after_listing"`: the segment names are listed, then it waits before stat'ing them (as `os.scandir`
    reads a batch of names before each is stat'ed) — a segment renamed meanwhile is not found.
    Later flusher scans wait for `release`, so no later tick corrects what the held one stored. Scans in other
    threads (the writer's own rescan under its lock) run straight through.
    """

    def __init__(self, hold: str) -> None:
        self.hold = hold
        self.armed, self.held, self.resume = threading.Event(), threading.Event(), threading.Event()
        self.next_scan_started, self.release = threading.Event(), threading.Event()

    def __call__(self, directory: Path) -> int:
        if threading.current_thread().name != FLUSHER_THREAD or not self.armed.is_set():
            return spool_size(directory)
        if self.held.is_set():  # the held scan has been settled: keep every later one out of the way
            self.next_scan_started.set()
            self.release.wait(HOLD_TIMEOUT_S)
            return spool_size(directory)
        if self.hold == "after_scan":
            size = spool_size(directory)
            self._wait_for_resume()
            return size
        names = [path for path in directory.iterdir() if path.name.endswith((OPEN_SUFFIX, SEALED_SUFFIX))]
        self._wait_for_resume()
        return sum(path.stat().st_size for path in names if path.exists())

    def _wait_for_resume(self) -> None:
        self.held.set()
        self.resume.wait(HOLD_TIMEOUT_S)


def write_during_held_scan(core: AuditCore, scan: HeldScan, count: int) -> None:
    """Arm the scan, write `count` events while the flusher holds it, then let the flusher settle its result."""
    scan.armed.set()
    assert scan.held.wait(HOLD_TIMEOUT_S), "the flusher did not scan the spool"
    emit_orders(core, count)
    scan.resume.set()
    assert scan.next_scan_started.wait(HOLD_TIMEOUT_S), "the flusher did not settle its scan"


def fill_until_refused(core: AuditCore, limit: int = 2000) -> SpoolError:
    """Emit events until the spool refuses one; that SpoolError."""
    for _ in range(limit):
        try:
            emit_orders(core, 1)
        except SpoolError as exc:
            return exc
    raise AssertionError(f"no SpoolError within {limit} events")


class TestCapacityAccounting:
    """Invariant: the writer's count of the spool's bytes is never below what the spool holds, so it never
    writes past `[spool] max_bytes` — whatever it writes while the flusher measures the spool."""

    MAX_BYTES = 65536

    def _over_max_bytes_after(self, make_config: Callable[..., Config], hold: str, *, segment_max_bytes: int,
                              before: int, during: int, durability: str = "sync") -> int:
        """Write `before` events, `during` more while the flusher's scan is held, then fill the spool until an event
        is refused; the bytes by which the spool then is over max_bytes (0 or less: within it)."""
        config = make_config(spool={"max_bytes": self.MAX_BYTES, "segment_max_bytes": segment_max_bytes,
                                    "flush_interval_ms": 1, "durability": durability})
        scan = HeldScan(hold)
        writer = SpoolWriter(config.spool, measure=scan)
        core = AuditCore(config, writer=writer)
        try:
            emit_orders(core, before)
            sealed = writer.stats["segments_sealed"]
            write_during_held_scan(core, scan, during)
            assert (writer.stats["segments_sealed"] > sealed) == (segment_max_bytes < self.MAX_BYTES)
            error = fill_until_refused(core)
            assert "max_bytes" in str(error)
            return spool_size(config.spool.dir) - self.MAX_BYTES
        finally:
            scan.release.set()
            scan.resume.set()
            writer.close()

    def test_events_written_while_the_flusher_measures_are_counted(
        self, make_config: Callable[..., Config]
    ) -> None:
        """Invariant: lines written after the flusher's scan read the directory still count against max_bytes."""
        over = self._over_max_bytes_after(make_config, "after_scan", segment_max_bytes=65536, before=1, during=30)
        assert over <= 0, f"the spool went {over} bytes over max_bytes"

    def test_a_segment_sealed_while_the_flusher_measures_is_counted(
        self, make_config: Callable[..., Config]
    ) -> None:
        """Invariant: a segment sealed (renamed) while the flusher's scan runs still counts against max_bytes."""
        over = self._over_max_bytes_after(make_config, "after_listing", segment_max_bytes=4096, before=8, during=4)
        assert over <= 0, f"the spool went {over} bytes over max_bytes"

    def test_an_overcount_from_the_flusher_never_refuses_an_event_that_fits(
        self, make_config: Callable[..., Config]
    ) -> None:
        """Invariant: an event is refused only when the spool, measured exactly, has no room for its line."""
        over = self._over_max_bytes_after(make_config, "after_listing", segment_max_bytes=65536, before=1, during=30,
                                          durability="process")  # fast writes: the refusal comes within 50 ms
        line_size = max(len(line) + 1 for line in spool_lines(make_config().spool.dir))
        assert over <= 0, f"the spool went {over} bytes over max_bytes"
        assert over + line_size > 0, f"refused with {-over} bytes of max_bytes still free"
