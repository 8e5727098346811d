"""A spool that cannot take an event: a full disk (a small tmpfs, filled up), a spool over `max_bytes`, a failing fsync.

Fail-closed by default (the logging call raises `SpoolError`, the spool stays intact and the failed events get no
seq), and with `on_error = "drop"` the loss is counted and later written into the trail itself.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import auditlock
from auditlock.config import build_config
from auditlock.spool.drops import read_drop_totals
from auditlock.spool.format import OPEN_SUFFIX
from tests.support.held_fsync import HeldFdatasync, emit_from_threads
from tests.support.spool_child import SpoolContents, read_spool, scan_spool
from tests.support.waiting import wait_for

SERVICE = "enospc-test"
CI_ENV = "CI"


def _unavailable(reason: str) -> None:
    # In CI the full-disk tests must run: a runner that cannot mount would otherwise hide them silently.
    if os.environ.get(CI_ENV) == "true":
        pytest.fail(f"{reason} [{CI_ENV}=true, so this is a failure, not a skip]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted for the test and always unmounted after it."""
    if os.geteuid() != 0:
        _unavailable("needs root to mount a 256 KiB tmpfs to fill up")
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError:
        _unavailable("no mount command")
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)


def _fill(fs: Path) -> Path:
    """Write a filler file until the filesystem has no free block left; returns its path."""
    filler = fs / "filler"
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    assert os.statvfs(fs).f_bavail == 0
    return filler


class Audit:
    """A structlog logger whose only processor is an `AuditProcessor` writing to `spool` (no global config)."""

    def __init__(self, spool: Path, **spool_options: Any) -> None:
        config = build_config({
            "service": SERVICE,
            "spool": {"dir": str(spool), "durability": "sync", "segment_max_bytes": 4096, **spool_options},
            # keep_in_app_log: the call returns the record's view, so the test sees each event_id
            "events": {"include": ["order.*"], "keep_in_app_log": True},
            "targets": {"Order": {"fields": ["status", "n"]}},
            "retention": {"default": "std", "classes": {"std": {"days": 1}}},
        })
        self.spool = spool
        self.processor = auditlock.AuditProcessor(config)
        self.core = self.processor.core
        self.log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[self.processor])
        self.returned: list[str] = []  # event_ids of the events written, in call order
        self.n = 0

    def event(self) -> str | None:
        """Log one audit event; its event_id, or None when it was dropped (`on_error = "drop"`)."""
        self.n += 1
        with auditlock.actor("user#1"):
            _, view = self.log.info("order.updated", target_type="Order", target_id=self.n,
                                    after={"status": "paid", "n": self.n})
        event_id: str | None = view.get("event_id")
        if event_id is not None:
            self.returned.append(event_id)
        return event_id

    def events(self, count: int) -> None:
        """Log `count` events, each of which must be written."""
        for _ in range(count):
            assert self.event() is not None

    def until_error(self, limit: int = 2000) -> auditlock.SpoolError:
        """Log events until one raises `SpoolError` (within `limit` calls) and return that error."""
        for _ in range(limit):
            try:
                self.event()
            except auditlock.SpoolError as exc:
                return exc
        raise AssertionError(f"no SpoolError within {limit} events")

    def contents(self, *, complete: bool = True) -> SpoolContents:
        """The spool, checked: no damage, no torn tail (the writer truncates back), unbroken chains."""
        return read_spool(self.spool, complete=complete)

    def assert_spool_holds_exactly_the_returned_events(self) -> SpoolContents:
        """The spool holds each returned event once, nothing else of ours, with seq 0..n-1 and no gap."""
        contents = self.contents()
        ours = [event for event in contents.events if event["event_type"] == "order.updated"]
        assert [event["event_id"] for event in ours] == self.returned
        writer = self.core.writer.writer_id
        assert contents.seqs(writer) == list(range(len(contents.events)))
        return contents

    def close(self) -> None:
        """Seal the open segment."""
        self.processor.close()


@pytest.fixture(params=[4096, 65536], ids=["full-at-rotation", "full-mid-line"])
def full_disk_audit(request: pytest.FixtureRequest, small_fs: Path) -> Iterator[tuple[Audit, Path]]:
    """An `Audit` whose spool is on the small tmpfs; yields it and the tmpfs, closing the writer before unmount.

    With 4 KiB segments the disk is found full when a rotation's new, empty segment takes its first line;
    with 64 KiB segments a line straddles a page boundary, is written in part and must be truncated back.
    """
    audit = Audit(small_fs / "spool", segment_max_bytes=request.param)
    try:
        yield audit, small_fs
    finally:
        audit.close()


@pytest.mark.root
class TestDiskFull:
    """The disk holding the spool fills up (on_error = "raise", the default)."""

    def test_logging_call_raises_spool_error_saying_disk_is_full(self, full_disk_audit: tuple[Audit, Path]) -> None:
        """When the disk is full the logging call raises SpoolError whose message says the disk is full."""
        audit, fs = full_disk_audit
        audit.events(5)
        _fill(fs)
        error = audit.until_error()
        assert "No space left on device" in str(error)
        assert "disk holding the spool is full" in str(error)
        assert str(audit.spool) in str(error)
        with pytest.raises(auditlock.SpoolError, match="disk holding the spool is full"):
            audit.event()  # and it keeps failing while the disk is full

    def test_spool_is_not_corrupted_by_a_full_disk(self, full_disk_audit: tuple[Audit, Path]) -> None:
        """A full disk leaves no partial line: every segment scans clean, without a torn tail."""
        audit, fs = full_disk_audit
        audit.events(5)
        _fill(fs)
        for _ in range(5):
            audit.until_error()
        audit.assert_spool_holds_exactly_the_returned_events()

    def test_writing_resumes_with_no_seq_gap_once_space_is_back(self, full_disk_audit: tuple[Audit, Path]) -> None:
        """After the filler is deleted writing resumes; the failed events got no seq, so the chain has no gap."""
        audit, fs = full_disk_audit
        audit.events(5)
        filler = _fill(fs)
        for _ in range(5):
            audit.until_error()
        written_while_full = len(audit.returned)
        filler.unlink()
        audit.events(20)  # 20 more, across segment rotations
        contents = audit.assert_spool_holds_exactly_the_returned_events()
        assert len(contents.events) == written_while_full + 20
        audit.close()
        assert audit.assert_spool_holds_exactly_the_returned_events().events == contents.events


@pytest.mark.root
class TestDiskFullWithDrop:
    """The disk fills up with `on_error = "drop"`: the loss is counted and reported in the trail."""

    @pytest.fixture
    def audit(self, small_fs: Path) -> Iterator[tuple[Audit, Path]]:
        """An `Audit` with on_error = "drop" whose spool is on the small tmpfs."""
        audit = Audit(small_fs / "spool", on_error="drop")
        try:
            yield audit, small_fs
        finally:
            audit.close()

    def test_call_does_not_raise_and_drops_are_counted(self, audit: tuple[Audit, Path]) -> None:
        """With on_error = "drop" a full disk does not raise; core.dropped counts each dropped event."""
        writer, fs = audit
        writer.events(3)
        _fill(fs)
        results = [writer.event() for _ in range(30)]
        dropped = results.count(None)
        assert dropped >= 20  # a few may still fit in the segment's last partly used page
        assert writer.core.dropped == dropped
        writer.assert_spool_holds_exactly_the_returned_events()

    def test_dropped_count_is_written_into_the_trail_once_space_is_back(self, audit: tuple[Audit, Path]) -> None:
        """Once space is back, an auditlock.events_dropped event with payload.count = the drops is in the spool."""
        writer, fs = audit
        writer.events(3)
        filler = _fill(fs)
        dropped = [writer.event() for _ in range(30)].count(None)
        filler.unlink()
        writer.events(3)
        assert writer.core.dropped == dropped

        contents = writer.contents()
        reports = [event for event in contents.events if event["event_type"] == "auditlock.events_dropped"]
        assert len(reports) == 1
        report = reports[0]
        assert report["payload"]["count"] == dropped
        assert "disk holding the spool is full" in report["payload"]["reason"]
        assert report["payload"]["first_dropped_at"] <= report["payload"]["last_dropped_at"]
        assert (report["actor_id"], report["actor_type"]) == (f"svc:{SERVICE}", "service")
        ours = [event["event_id"] for event in contents.events if event["event_type"] == "order.updated"]
        assert ours == writer.returned
        assert contents.seqs(writer.core.writer.writer_id) == list(range(len(contents.events)))


    def test_drop_counts_reach_their_file_once_space_is_back(self, audit: tuple[Audit, Path]) -> None:
        """The drop file cannot be written on the full disk; the flusher writes the totals once space is back."""
        writer, fs = audit
        writer.events(3)
        filler = _fill(fs)
        dropped = [writer.event() for _ in range(30)].count(None)
        assert dropped >= 20
        assert read_drop_totals(writer.spool).get("disk_full", 0) < dropped, "the full disk took the drop file"
        filler.unlink()  # no further event: the flusher's next tick retries the file
        wait_for(lambda: read_drop_totals(writer.spool) == {"disk_full": dropped}, 10, "drop file written")


def _remove_sealed_segments(spool: Path) -> int:
    """Delete the sealed segments, as the agent does once S3 has them; how many bytes that freed."""
    freed = 0
    for path in spool.glob("*.jsonl"):
        if not path.name.endswith(OPEN_SUFFIX):
            freed += path.stat().st_size
            path.unlink()
    return freed


def _until_written(audit: Audit, timeout: float = 10.0) -> None:
    """Log events until one is written: the writer re-measures a full spool at most every 50 ms."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if audit.event() is not None:
                return
        except auditlock.SpoolError:
            pass
        assert time.monotonic() < deadline, "the writer did not resume after segments were removed"


def _size(spool: Path) -> int:
    return sum(path.stat().st_size for path in spool.glob("*.jsonl"))


class TestSpoolOverMaxBytes:
    """The spool grows over `[spool] max_bytes` (the agent is not shipping)."""

    @pytest.fixture
    def audit(self, tmp_path: Path) -> Iterator[Audit]:
        """An `Audit` with max_bytes = 65536 (the smallest allowed)."""
        audit = Audit(tmp_path / "spool", max_bytes=65536)
        try:
            yield audit
        finally:
            audit.close()

    def test_logging_call_raises_spool_error_naming_max_bytes(self, audit: Audit) -> None:
        """Over max_bytes the logging call raises SpoolError naming max_bytes; the spool stays within it, intact."""
        error = audit.until_error()
        assert "max_bytes" in str(error)
        assert "65536" in str(error)
        assert _size(audit.spool) <= 65536
        assert len(audit.returned) > 50
        audit.assert_spool_holds_exactly_the_returned_events()

    def test_a_new_writer_measures_before_its_first_event(self, audit: Audit) -> None:
        """A new writer (another process's, or after a restart) starting on a full spool refuses its first event:
        it measures the spool before writing, instead of counting from zero until its own bytes reach max_bytes;
        the refusal is counted once in `stats["errors"]`."""
        audit.until_error()
        audit.close()
        second = Audit(audit.spool, max_bytes=65536)
        try:
            with pytest.raises(auditlock.SpoolError, match="max_bytes"):
                second.event()
            assert second.core.writer.stats["errors"] == 1  # the refusal counted once
        finally:
            second.close()

    def test_writing_resumes_after_segments_are_removed(self, audit: Audit) -> None:
        """Once the agent removes sealed segments, writing resumes and seq continues without a gap."""
        audit.until_error()
        before = len(audit.returned)
        seq_of_next = before
        assert _remove_sealed_segments(audit.spool) > 0
        _until_written(audit)
        audit.events(10)
        contents = audit.contents(complete=False)  # the chain is checked from the oldest segment left
        writer = audit.core.writer.writer_id
        seqs = contents.seqs(writer)
        assert seqs[-11:] == list(range(seq_of_next, seq_of_next + 11))
        assert seqs == list(range(seqs[0], seq_of_next + 11))

    def test_drop_mode_counts_and_reports_drops_over_max_bytes(self, tmp_path: Path) -> None:
        """With on_error = "drop" an over-full spool drops and counts; the count is reported after it resumes."""
        audit = Audit(tmp_path / "spool", max_bytes=65536, on_error="drop")
        try:
            while audit.event() is not None:
                assert audit.n < 2000
            dropped = 1 + [audit.event() for _ in range(9)].count(None)
            assert audit.core.dropped == dropped == 10
            _remove_sealed_segments(audit.spool)
            while audit.event() is None:  # the writer re-measures a full spool at most every 50 ms
                assert audit.n < 100_000
            events = audit.contents(complete=False).events
            reports = [event for event in events if event["event_type"] == "auditlock.events_dropped"]
            assert [report["payload"]["count"] for report in reports] == [audit.core.dropped]
            assert "max_bytes" in reports[0]["payload"]["reason"]
        finally:
            audit.close()


def _fail_next_fdatasync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next `os.fdatasync` fail with EIO, as a failing disk would; later calls work again."""
    real = os.fdatasync

    def failing(fd: int) -> None:
        monkeypatch.setattr(os, "fdatasync", real)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)


class TestFsyncFailure:
    """fdatasync reports an I/O error under durability "sync" (the third way a spool cannot take an event)."""

    @pytest.fixture
    def audit(self, tmp_path: Path) -> Iterator[Audit]:
        """An `Audit` with 64 KiB segments, so the failing line is not its segment's first."""
        audit = Audit(tmp_path / "spool", segment_max_bytes=65536)
        try:
            yield audit
        finally:
            audit.close()

    def test_failed_fsync_raises_spool_error_and_writing_continues(
        self, audit: Audit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failed fsync makes the logging call raise SpoolError naming the I/O error; later events are written."""
        audit.events(3)
        _fail_next_fdatasync(monkeypatch)
        with pytest.raises(auditlock.SpoolError, match="I/O error"):
            audit.event()
        audit.events(3)
        written = {event["event_id"] for event in scan_spool(audit.spool).events}
        assert set(audit.returned) <= written

    def test_failed_fsync_never_reuses_a_seq(self, audit: Audit, monkeypatch: pytest.MonkeyPatch) -> None:
        """After a failed fsync the writer continues under a new id: no (writer, seq) appears twice."""
        audit.events(3)
        _fail_next_fdatasync(monkeypatch)
        with pytest.raises(auditlock.SpoolError):
            audit.event()
        audit.events(3)
        audit.close()
        contents = scan_spool(audit.spool)
        positions = [(event["writer"], event["seq"]) for event in contents.events]
        assert len(positions) == len(set(positions)), f"seq used twice: {sorted(positions)}"
        assert len({writer for writer, _seq in positions}) == 2
        assert len(positions) == 6  # the line whose fsync failed was taken back
        assert not contents.chain_breaks()

    def test_a_failed_shared_fsync_fails_every_caller_it_did_not_make_durable(
        self, audit: Audit, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """8 threads wait on one fdatasync that fails: all 8 raise SpoolError, their lines are taken back, the
        events written before stay, and writing continues under a new writer id with no seq used twice."""
        audit.events(2)
        writer = audit.core.writer
        monkeypatch.setattr(os, "fdatasync", HeldFdatasync(lambda: writer.stats["events"] == 2 + 8, fail_first=True))
        results = emit_from_threads(audit.core, 8)
        assert all(isinstance(result, auditlock.SpoolError) and "I/O error" in str(result) for result in results), \
            results
        assert writer.stats["sync_failures"] == 1
        assert writer.stats["events"] == 2
        audit.events(3)
        audit.close()
        contents = scan_spool(audit.spool)
        assert [event["event_id"] for event in contents.events] == audit.returned
        positions = [(event["writer"], event["seq"]) for event in contents.events]
        assert len({writer for writer, _seq in positions}) == 2
        assert [seq for _writer, seq in positions] == [0, 1, 0, 1, 2]
        assert not contents.chain_breaks()
        assert not contents.damage()

    def test_a_line_rotating_while_a_shared_fsync_fails_starts_the_next_chain(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A caller whose line must rotate the segment while another caller's fdatasync is in flight, which then
        fails, writes its line under the new writer id into the new segment — never a stale-stamped foreign line."""
        audit = Audit(tmp_path / "spool", segment_max_bytes=4096, flush_interval_ms=600_000)
        writer = audit.core.writer
        try:
            line_bytes = len(orjson.dumps(_emit_one(audit, 0))) + 1  # the length of a line _emit_one writes
            while 4096 - _open_segment_size(audit.spool) >= 2 * line_bytes:  # room for one more such line, not two
                with auditlock.actor("user#0"):
                    audit.core.emit("order.updated", {"target_type": "Order", "target_id": 0})  # a shorter line
            first_writer = writer.writer_id
            in_flight, rotating = _fail_in_flight_while_one_rotates(audit, monkeypatch)
        finally:
            audit.close()
        assert isinstance(in_flight, auditlock.SpoolError), in_flight
        assert isinstance(rotating, dict), rotating
        assert rotating["writer"] != first_writer
        assert rotating["seq"] == 0
        assert writer.stats["sync_failures"] == 1
        read_spool(audit.spool)  # no foreign line, no damage, every chain intact


class TestFsyncFailureOutsideTheCall:
    """fdatasync fails under durability "process" (an explicit flush) or "group" (the background flusher): the
    failure is counted in `stats["sync_failures"]` and the segment abandoned, as under "sync"."""

    def test_failed_flush_is_counted_and_abandons_the_segment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`flush()` whose fdatasync fails returns False, counts one sync failure, continues as a new writer."""
        audit = Audit(tmp_path / "spool", durability="process", flush_interval_ms=600_000)
        writer = audit.core.writer
        try:
            audit.events(3)
            first = writer.writer_id
            _fail_next_fdatasync(monkeypatch)
            assert writer.flush() is False
            assert (writer.stats["sync_failures"], writer.writer_id != first) == (1, True)
        finally:
            audit.close()

    def test_failed_background_fsync_is_counted_and_abandons_the_segment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The flusher's fdatasync fails: one sync failure counted, and the writer continues under a new id."""
        audit = Audit(tmp_path / "spool", durability="group", flush_interval_ms=10)
        writer = audit.core.writer
        try:
            audit.events(3)
            first = writer.writer_id
            _fail_next_fdatasync(monkeypatch)
            audit.events(1)  # dirty again, whenever the flusher ran before the patch
            wait_for(lambda: writer.writer_id != first, 30, what="the flusher abandoning the segment")
            assert writer.stats["sync_failures"] == 1
        finally:
            audit.close()


def _emit_one(audit: Audit, index: int) -> Any:
    """One order.updated event through the core; the record, or the exception the call raised."""
    try:
        with auditlock.actor(f"user#{index}"):
            return audit.core.emit("order.updated", {"target_type": "Order", "target_id": index,
                                                     "after": {"status": "paid", "n": index}})
    except auditlock.SpoolError as exc:
        return exc


def _open_segment_size(spool: Path) -> int:
    [segment] = spool.glob(f"*{OPEN_SUFFIX}")
    return segment.stat().st_size


def _fail_in_flight_while_one_rotates(audit: Audit, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Caller A's fdatasync is held; caller B's line does not fit, so B (holding the writer lock) waits to seal the
    segment until A's fdatasync is over; then A's fails. What A's and B's calls returned."""
    writer = audit.core.writer
    b_started = threading.Event()

    def b_holds_the_writer_lock() -> bool:
        if not b_started.is_set():
            return False
        if writer._lock.acquire(blocking=False):  # free: B has not reached it yet
            writer._lock.release()
            return False
        return True  # nobody else takes it: the flusher's interval is 10 minutes

    held = HeldFdatasync(b_holds_the_writer_lock, fail_first=True)
    monkeypatch.setattr(os, "fdatasync", held)
    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.update(a=_emit_one(audit, 1)))
    b = threading.Thread(target=lambda: results.update(b=_emit_one(audit, 2)))
    a.start()
    wait_for(lambda: held.calls, 30, "caller A's fdatasync started")
    b_started.set()
    b.start()
    for thread in (a, b):
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in (a, b)), "a logging call did not return"
    return results["a"], results["b"]
