"""Several writers in one spool: separate processes, prefork children, and threads of one process."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock.config import build_config
from tests.support.held_fsync import HeldFdatasync, emit_from_threads
from tests.support.spool_child import LineReader, check_reported, read_spool, run_to_end, start_child

TwoRun = tuple[Path, list[dict[str, Any]]]  # spool, report lines
ForkRun = tuple[Path, list[dict[str, Any]], int]  # spool, report lines, pid of the parent


def _by_pid(lines: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        grouped.setdefault(line["pid"], []).append(line)
    return grouped


def _writer_of(lines: list[dict[str, Any]]) -> str:
    writers: set[str] = {line["writer"] for line in lines}
    assert len(writers) == 1, f"one process used several writer ids: {writers}"
    return writers.pop()


def _can_lock(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> TwoRun:
    """Two processes that wrote 400 events each into one spool, started together; (spool, report lines)."""
    spool = tmp_path_factory.mktemp("two") / "spool"
    procs = [start_child(spool, "--mode", "plain", "--count", "400", "--api", api, "--gate", stdin=subprocess.PIPE)
             for api in ("structlog", "core")]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"g")
        proc.stdin.close()
    lines = [line for proc in procs for line in run_to_end(proc)]
    return spool, lines


@pytest.fixture(scope="module")
def prefork(tmp_path_factory: pytest.TempPathFactory) -> ForkRun:
    """A parent that wrote 20 events, forked 3 children (300 events each) and wrote 300 more meanwhile."""
    spool = tmp_path_factory.mktemp("prefork") / "spool"
    proc = start_child(spool, "--mode", "fork", "--count", "20", "--children", "3", "--child-events", "300",
                       "--after-events", "300")
    return spool, run_to_end(proc), proc.pid


class TestTwoProcessesOneSpool:
    """Two independent processes append to one spool directory at the same time."""

    def test_every_event_is_in_the_spool_exactly_once(self, two_processes: TwoRun) -> None:
        """Every event both processes wrote is in the spool exactly once, and nothing else is."""
        spool, lines = two_processes
        contents = read_spool(spool)
        check_reported(contents, lines)
        assert len(contents.events) == len(lines) == 800

    def test_lines_never_interleave(self, two_processes: TwoRun) -> None:
        """Every line of every segment is one whole event; no segment is torn or damaged."""
        spool, _ = two_processes
        contents = read_spool(spool)  # fails on a damaged line, a torn tail, or a line of another writer
        assert sum(scan.lines for scan in contents.scans) == 800 + 2  # each writer ends with its clean-end record
        assert len(contents.closings) == 2

    def test_each_process_has_its_own_writer_and_unbroken_chain(self, two_processes: TwoRun) -> None:
        """The two processes have different writer ids, each with seq 0..399 chained across its segments."""
        spool, lines = two_processes
        contents = read_spool(spool)
        writers = {_writer_of(group) for group in _by_pid(lines).values()}
        assert len(writers) == 2
        assert set(contents.writers) == writers
        for writer in writers:
            assert contents.seqs(writer) == list(range(400))
            assert len(contents.writers[writer]) > 1, "the test needs segment rotations"

    def test_no_segment_is_shared_and_all_are_sealed_at_exit(self, two_processes: TwoRun) -> None:
        """Each segment file holds only its own writer's lines, and a normal exit seals every segment."""
        spool, _ = two_processes
        contents = read_spool(spool)
        assert not contents.foreign
        assert not [scan.path.name for scan in contents.scans if scan.name.is_open]


class TestPreforkChildren:
    """The prefork pattern: the parent writes, forks, then parent and children write concurrently."""

    def test_every_event_is_in_the_spool_exactly_once(self, prefork: ForkRun) -> None:
        """Every event of the parent (before and after the fork) and of each child is in the spool once."""
        spool, lines, _ = prefork
        assert len(lines) == 20 + 300 + 3 * 300
        contents = read_spool(spool)
        check_reported(contents, lines)
        assert len(contents.events) == len(lines)

    def test_children_get_new_writer_ids(self, prefork: ForkRun) -> None:
        """A forked child writes under a writer id of its own; the parent keeps its id across the fork."""
        _, lines, parent_pid = prefork
        groups = _by_pid(lines)
        assert len(groups) == 4
        parent_writer = _writer_of(groups.pop(parent_pid))
        child_writers = [_writer_of(group) for group in groups.values()]
        assert parent_writer not in child_writers
        assert len(set(child_writers)) == 3

    def test_every_writer_chain_is_intact(self, prefork: ForkRun) -> None:
        """The parent's chain continues across the fork (0..319); each child's starts afresh at seq 0."""
        spool, lines, parent_pid = prefork
        contents = read_spool(spool)  # fails on any chain break
        for pid, group in _by_pid(lines).items():
            writer = _writer_of(group)
            expected = 320 if pid == parent_pid else 300
            assert contents.seqs(writer) == list(range(expected))
            assert [line["seq"] for line in group] == list(range(expected))

    def test_no_segment_is_written_by_two_writers(self, prefork: ForkRun) -> None:
        """Every line's writer equals its file name's writer: parent and children never share a segment."""
        spool, _, _ = prefork
        contents = read_spool(spool)
        assert not contents.foreign
        assert len(contents.writers) == 4


class TestForkAndLocks:
    """The flock of a segment belongs to its writer only, never to a forked child."""

    def test_dead_parent_segment_is_not_kept_locked_by_a_live_child(self, tmp_path: Path) -> None:
        """After the parent dies, its open segment's lock is free although its forked children still run."""
        spool = tmp_path / "spool"
        proc = start_child(spool, "--mode", "fork", "--count", "5", "--children", "2", "--child-events", "5",
                           "--after-events", "5", "--hold", stdin=subprocess.PIPE)
        assert proc.stdin is not None
        reader = LineReader(proc)
        try:
            reader.until_count(5 + 5 + 2 * 5)
            assert proc.wait(timeout=30) == 0  # the parent left with os._exit; the children wait on stdin
            groups = _by_pid(reader.lines)
            parent_writer = _writer_of(groups.pop(proc.pid))
            open_segments = {path.name.split(".")[0]: path for path in spool.glob("*.open.jsonl")}
            assert set(open_segments) == {parent_writer} | {_writer_of(group) for group in groups.values()}
            assert _can_lock(open_segments.pop(parent_writer)), "a live child holds the dead parent's segment lock"
            for writer, path in open_segments.items():
                assert not _can_lock(path), f"live child {writer}'s open segment is not locked"
        finally:
            proc.stdin.close()  # the children's EOF: they close their writers and exit
        reader.until_eof(timeout=30)
        contents = read_spool(spool)
        check_reported(contents, reader.lines)
        assert len([scan for scan in contents.scans if scan.name.is_open]) == 1  # only the dead parent's


def _config(spool: Path, **spool_options: Any) -> auditlock.Config:
    return build_config({
        "service": "concurrency",
        "spool": {"dir": str(spool), **spool_options},
        "events": {"include": ["order.*"]},
        "targets": {"Order": {"fields": ["status", "n"]}},
        "retention": {"default": "std", "classes": {"std": {"days": 1}}},
    })


def _fds_in_forked_child(path: Path) -> list[str]:
    """Fork this process; the child reports which of its descriptors refer to `path`, then exits at once."""
    target = str(path.resolve())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only lists descriptors and leaves
        try:
            os.close(read_end)
            held = []
            for name in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/self/fd/{name}") == target:
                        held.append(name)
            os.write(write_end, " ".join(held).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    return report.decode().split()


class TestForkedChildDescriptors:
    """A forked child holds no descriptor of its parent's open segment (else it would keep the flock alive)."""

    def test_child_holds_no_descriptor_of_the_parent_segment(self, tmp_path: Path) -> None:
        """A child forked after first use holds no descriptor of the parent's open segment."""
        core = auditlock.AuditProcessor(_config(tmp_path / "spool", durability="sync")).core
        try:
            with auditlock.actor("user#1"):
                core.emit("order.updated", {"target_type": "Order", "target_id": 1})
            segment = next((tmp_path / "spool").glob("*.open.jsonl"))
            assert _fds_in_forked_child(segment) == []
        finally:
            core.writer.close()

    def test_fork_during_a_background_fsync_leaks_no_descriptor(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A child forked while the flusher is in fdatasync holds no descriptor of the parent's segment."""
        core = auditlock.AuditProcessor(_config(tmp_path / "spool", durability="group", flush_interval_ms=10)).core
        in_sync, release = threading.Event(), threading.Event()
        real_fdatasync = os.fdatasync

        def slow_disk(fd: int) -> None:  # the flusher's fsync takes long, as on a busy disk
            in_sync.set()
            release.wait(30)
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", slow_disk)
        try:
            with auditlock.actor("user#1"):
                core.emit("order.updated", {"target_type": "Order", "target_id": 1})
            assert in_sync.wait(30), "the flusher did not fsync"
            segment = next((tmp_path / "spool").glob("*.open.jsonl"))
            held = _fds_in_forked_child(segment)
        finally:
            release.set()
            core.writer.close()
        assert held == []


class TestThreads:
    """Many threads of one process share one writer."""

    def test_threads_share_one_gapless_chain(self, tmp_path: Path) -> None:
        """8 threads x 500 events in one process make one chain, seq 0..3999 without gaps or duplicates."""
        config = _config(tmp_path / "spool", durability="sync", segment_max_bytes=65536)
        core = auditlock.AuditProcessor(config).core
        returned: list[list[dict[str, Any]]] = [[] for _ in range(8)]
        start = threading.Barrier(8)

        def work(index: int) -> None:
            start.wait(timeout=30)
            with auditlock.actor(f"user#{index}"):
                for n in range(500):
                    record = core.emit("order.updated", {"target_type": "Order", "target_id": n,
                                                         "after": {"status": "paid", "n": n}})
                    assert record is not None
                    returned[index].append(record)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        core.writer.close()
        assert all(len(records) == 500 for records in returned)

        contents = read_spool(tmp_path / "spool")
        assert list(contents.writers) == [core.writer.writer_id]
        assert contents.seqs(core.writer.writer_id) == list(range(4000))
        assert sorted(contents.ids) == sorted(record["event_id"] for records in returned for record in records)
        assert max(contents.ids.values()) == 1
        for records in returned:  # each thread saw its own events in increasing seq order
            seqs = [record["seq"] for record in records]
            assert seqs == sorted(seqs)


class TestGroupCommit:
    """Durability "sync" with concurrent callers: each call returns once its line is fdatasync'd, and the callers
    share the fdatasyncs instead of queueing for one each."""

    def test_callers_append_while_an_fdatasync_runs_and_share_the_next(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the first fdatasync is held, the 7 other threads still append; one more fdatasync covers them all."""
        core = auditlock.AuditProcessor(_config(tmp_path / "spool", durability="sync")).core
        held = HeldFdatasync(lambda: core.writer.stats["events"] == 8)
        monkeypatch.setattr(os, "fdatasync", held)
        try:
            results = emit_from_threads(core, 8)
            fdatasyncs = len(held.calls)  # before close() fsyncs its clean-end line
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in results), results
        assert fdatasyncs <= 2, f"{fdatasyncs} fdatasyncs for 8 concurrent events"
        contents = read_spool(tmp_path / "spool")
        assert sorted(contents.ids) == sorted(result["event_id"] for result in results)
        assert contents.seqs(core.writer.writer_id) == list(range(8))

    def test_no_call_returns_before_the_fdatasync_covering_its_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the first fdatasync is held no call returns, though all 8 lines are appended by then."""
        core = auditlock.AuditProcessor(_config(tmp_path / "spool", durability="sync")).core
        released = threading.Event()
        early: list[int] = []

        def release_when_all_appended() -> bool:
            if core.writer.stats["events"] < 8:
                return False
            released.set()
            return True

        monkeypatch.setattr(os, "fdatasync", HeldFdatasync(release_when_all_appended))
        try:
            results = emit_from_threads(core, 8, after_call=lambda: released.is_set() or early.append(1))
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in results), results
        assert not early, f"{len(early)} calls returned before any fdatasync completed"
