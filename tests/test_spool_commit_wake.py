"""Durability "sync"'s group commit wakes a waiting caller only when it is answered — its line made durable or
taken back — or when it is to lead the next fdatasync, and then exactly one (issue #17).

Real threads, real files, the real `os.fdatasync` — held or failed on cue by `StagedFdatasync`, as a slow or failing
disk would. Caller 0 leads the first fdatasync; the 7 others start once it has begun, so its fdatasync cannot
cover their lines; each fdatasync is released only once the callers are where the test wants them.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock.handler.core import AuditCore
from tests.support.spool_child import read_spool
from tests.support.waiting import wait_for
from tests.support.writer_probes import audit_core, line_end

HOLD_TIMEOUT_S = 30.0
OTHERS = 7


class StagedFdatasync:
    """os.fdatasync: call k (from 1) first waits until `holds[k]()` is true, and raises EIO if k is `fail`; every
    call that succeeds records the size its file had when it began (all of which it made durable). Records which
    thread made each call and how many ran at once at most."""

    def __init__(self, holds: dict[int, Callable[[], bool]], *, fail: int = 0) -> None:
        self._real = os.fdatasync
        self._holds = holds
        self._fail = fail
        self._lock = threading.Lock()
        self.threads: list[int] = []
        self.running = self.most_at_once = 0
        self.durable_size = 0

    @property
    def calls(self) -> int:
        """How many calls began."""
        return len(self.threads)

    def __call__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        with self._lock:
            self.threads.append(threading.get_ident())
            call = len(self.threads)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if call in self._holds:
                wait_for(self._holds[call], HOLD_TIMEOUT_S, f"the callers in place for fdatasync #{call}")
            if call == self._fail:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self._real(fd)
            with self._lock:
                self.durable_size = max(self.durable_size, size)
        finally:
            with self._lock:
                self.running -= 1


class Callers:
    """Caller 0 emits and leads the first fdatasync; once that has begun, the others emit. Per caller: the record
    its call returned or the exception it raised, and its thread; a returned call is checked, as soon as it
    returns, to have its line within what a completed fdatasync made durable."""

    def __init__(self, core: AuditCore, disk: StagedFdatasync) -> None:
        self.core, self.disk = core, disk
        self.results: list[Any] = [None] * (1 + OTHERS)
        self.idents: list[int | None] = [None] * (1 + OTHERS)
        self.early: list[str] = []

    def run(self) -> None:
        """Start caller 0, the others once its fdatasync began; join them all."""
        threads = [threading.Thread(target=self._work, args=(index,), daemon=True) for index in range(1 + OTHERS)]
        threads[0].start()
        wait_for(lambda: self.disk.calls >= 1, HOLD_TIMEOUT_S, "the first caller's fdatasync")
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 2 * HOLD_TIMEOUT_S  # one for all: a stuck call fails the test in time
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads), "a logging call did not return"
        assert not self.early, f"calls returned before an fdatasync covered their line: {self.early}"

    def _work(self, index: int) -> None:
        self.idents[index] = threading.get_ident()
        try:
            with auditlock.actor(f"user#{index}"):
                self.results[index] = record = self.core.emit(
                    "order.updated", {"target_type": "Order", "target_id": index, "status": "paid"})
        except Exception as exc:  # the test looks at what each caller got
            self.results[index] = exc
            return
        if line_end(self.core.writer.directory, record["event_id"]) > self.disk.durable_size:
            self.early.append(record["event_id"])

    def returned(self, index: int) -> bool:
        """True once caller `index`'s call returned or raised."""
        return self.results[index] is not None


def _core(spool: Path) -> AuditCore:
    return audit_core(spool, commit_delay_us=0, segment_max_bytes=1 << 20)  # one segment throughout, no delay


def all_waiting(core: AuditCore, callers: int) -> Callable[[], bool]:
    """True once `callers` callers have appended and wait for their fdatasync."""
    return lambda: core.writer._commit.waiting == callers


def parked(core: AuditCore, count: int) -> Callable[[], bool]:
    """True once exactly `count` callers are parked (waiting, neither answered nor leading)."""
    return lambda: len(core.writer._commit._parked) == count


class TestWokenWhenAnswered:
    """A parked caller is woken when an fdatasync covers its line, not by one that did not."""

    def test_callers_an_fdatasync_did_not_cover_stay_parked_until_the_next(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Caller 0's fdatasync completes while 7 callers wait: only caller 0 returns; the others return only once
        the second fdatasync covered their lines, and that one fdatasync covers all 7."""
        core = _core(tmp_path / "spool")
        callers: Callers
        holds = {1: all_waiting(core, 1 + OTHERS), 2: lambda: callers.returned(0)}
        disk = StagedFdatasync(holds)
        monkeypatch.setattr(os, "fdatasync", disk)
        callers = Callers(core, disk)
        try:
            callers.run()
            calls = disk.calls
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in callers.results), callers.results
        assert calls == 2
        contents = read_spool(tmp_path / "spool")
        assert contents.seqs(core.writer.writer_id) == list(range(1 + OTHERS))


class TestLeadershipPasses:
    """When a leader's fdatasync did not cover every waiting caller, exactly one of them leads the next."""

    def test_one_parked_caller_leads_the_next_fdatasync_while_the_others_stay_parked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The second fdatasync runs in the thread of one of the 7 waiting callers, the other 6 stay parked while
        it runs, and no two fdatasyncs ever run at once."""
        core = _core(tmp_path / "spool")
        callers: Callers
        holds = {1: all_waiting(core, 1 + OTHERS), 2: lambda: callers.returned(0) and parked(core, OTHERS - 1)()}
        disk = StagedFdatasync(holds)
        monkeypatch.setattr(os, "fdatasync", disk)
        callers = Callers(core, disk)
        try:
            callers.run()
            threads, most_at_once = list(disk.threads), disk.most_at_once
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in callers.results), callers.results
        assert (len(threads), most_at_once) == (2, 1)
        assert threads[0] == callers.idents[0]
        assert threads[1] in callers.idents[1:]


class TestNoCallerLeftParkedAfterAFailure:
    """A failed fdatasync's take-back answers every caller parked on that segment at once, with the failure."""

    def test_the_take_back_answers_every_parked_caller_before_the_leadership_passes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Caller 0's fdatasync fails with 7 callers parked: by the time the segment is abandoned (the leader still
        leading) none is parked or waiting any more; all 8 raise SpoolError; writing continues as a new writer."""
        core = _core(tmp_path / "spool")
        first_writer = core.writer.writer_id
        disk = StagedFdatasync({1: all_waiting(core, 1 + OTHERS)}, fail=1)
        monkeypatch.setattr(os, "fdatasync", disk)
        at_abandon = AtAbandon(lambda: core.writer._commit.waiting == 1 and parked(core, 0)())
        spool_log = logging.getLogger("auditlock.spool")
        spool_log.addHandler(at_abandon)
        callers = Callers(core, disk)
        try:
            callers.run()
            stats = dict(core.writer.stats)
            with auditlock.actor("user#99"):
                after = core.emit("order.updated", {"target_type": "Order", "target_id": 99, "status": "paid"})
        finally:
            spool_log.removeHandler(at_abandon)
            core.writer.close()
        assert at_abandon.outcome == "answered", at_abandon.outcome
        assert all(isinstance(result, auditlock.SpoolError) and "I/O error" in str(result)
                   for result in callers.results), callers.results
        assert (stats["sync_failures"], stats["events"]) == (1, 0)
        assert (after["writer"] != first_writer, after["seq"]) == (True, 0)
        assert [event["event_id"] for event in read_spool(tmp_path / "spool").events] == [after["event_id"]]


class Interrupted(BaseException):
    """What the test's signal handler raises in the main thread (as KeyboardInterrupt would, on SIGINT)."""


def _raise_interrupted(_signum: int, _frame: Any) -> None:
    raise Interrupted


class TestAnInterruptedCaller:
    """A caller interrupted while parked (a signal whose handler raises) leaves the group commit as if it had never
    parked: the leadership still reaches the callers parked after it."""

    def test_an_interrupted_parked_caller_leaves_no_slot_behind(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The main thread parks first, a second caller after it; the main thread is interrupted; once the first
        fdatasync ends, the second caller leads the next and returns with its line durable."""
        core = _core(tmp_path / "spool")
        left = threading.Event()
        disk = StagedFdatasync({1: left.is_set})
        monkeypatch.setattr(os, "fdatasync", disk)
        previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
        results: dict[str, Any] = {}
        main = threading.main_thread().ident
        assert main == threading.get_ident()

        def caller(name: str, index: int) -> None:
            try:
                results[name] = record = _emit_one(core, index)
            except Exception as exc:  # the test looks at what each caller got
                results[name] = exc
                return
            results[f"{name} early"] = line_end(core.writer.directory, record["event_id"]) > disk.durable_size

        leader, second = (threading.Thread(target=caller, args=(name, index), daemon=True)
                          for name, index in (("leader", 0), ("second", 2)))

        def interrupt_the_main_thread() -> None:
            wait_for(parked(core, 1), HOLD_TIMEOUT_S, "the main thread parked")
            second.start()
            wait_for(parked(core, 2), HOLD_TIMEOUT_S, "the second caller parked after it")
            assert main is not None
            signal.pthread_kill(main, signal.SIGUSR1)

        try:
            leader.start()
            wait_for(lambda: disk.calls >= 1, HOLD_TIMEOUT_S, "the first caller's fdatasync")
            threading.Thread(target=interrupt_the_main_thread, daemon=True).start()
            with pytest.raises(Interrupted):
                _emit_one(core, 1)
            parked_after = len(core.writer._commit._parked)
            left.set()
            deadline = time.monotonic() + 2 * HOLD_TIMEOUT_S
            for thread in (leader, second):
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            alive = [thread.is_alive() for thread in (leader, second)]
            calls = disk.calls  # before close() fdatasyncs its clean-end line
        finally:
            signal.signal(signal.SIGUSR1, previous)
            left.set()
            core.writer.close()
        assert alive == [False, False], "a logging call did not return"
        assert parked_after == 1
        assert isinstance(results["leader"], dict), results
        assert isinstance(results["second"], dict), results
        assert (results["leader early"], results["second early"]) == (False, False)
        assert calls == 2


def _emit_one(core: AuditCore, index: int) -> Any:
    with auditlock.actor(f"user#{index}"):
        return core.emit("order.updated", {"target_type": "Order", "target_id": index, "status": "paid"})


class AtAbandon(logging.Handler):
    """When the writer logs that it abandoned a segment (in the thread abandoning it, leadership not yet passed
    on), wait for `answered()`; `outcome` says whether it came."""

    WAIT_S = 10.0

    def __init__(self, answered: Callable[[], bool]) -> None:
        super().__init__(logging.ERROR)
        self._answered = answered
        self.outcome = "no segment abandoned"

    def emit(self, record: logging.LogRecord) -> None:
        """On the abandon message only."""
        if "abandoned" not in record.getMessage():
            return
        try:
            wait_for(self._answered, self.WAIT_S, "every parked caller answered by the take-back")
        except AssertionError as exc:
            self.outcome = str(exc)
        else:
            self.outcome = "answered"
