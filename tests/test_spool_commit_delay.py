"""Durability "sync"'s commit delay (`[spool] commit_delay_us`, issue #17): a leader with enough other callers waiting
waits before its fdatasync so that one covers more lines — and every promise of the group commit still holds.

Real threads, real files, the real `os.fdatasync` — held or failed on cue by `ScriptedFdatasync`, as a slow or
failing disk would (tests/support/held_fsync.py does the same for the tests without a delay). Which callers lead
and which wait is made certain by starting the others only once the first caller's fdatasync has begun, and by
releasing that fdatasync only once all of them wait.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock import ConfigError
from auditlock.config import build_config
from auditlock.handler.core import AuditCore
from auditlock.spool.commit import COMMIT_SIBLINGS
from tests.conftest import config_dict
from tests.support.spool_child import read_spool
from tests.support.waiting import wait_for
from tests.support.writer_probes import audit_core, line_end

HOLD_TIMEOUT_S = 30.0
MAX_DELAY_US = 10_000


class ScriptedFdatasync:
    """os.fdatasync: the first call waits until `release()` is true, the second raises EIO if `fail_second`; every
    call that succeeds records the size its file had when it began (all of which it made durable)."""

    def __init__(self, release: Callable[[], bool], *, fail_second: bool = False) -> None:
        self._real = os.fdatasync
        self._release = release
        self._fail_second = fail_second
        self._lock = threading.Lock()
        self.calls = 0
        self.durable_size = 0

    def __call__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        with self._lock:
            self.calls += 1
            call = self.calls
        if call == 1:
            wait_for(self._release, HOLD_TIMEOUT_S, "every caller waiting for the first fdatasync")
        if call == 2 and self._fail_second:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self._real(fd)
        with self._lock:
            self.durable_size = max(self.durable_size, size)


def _core(spool: Path, delay_us: int) -> AuditCore:
    return audit_core(spool, commit_delay_us=delay_us, segment_max_bytes=1 << 20)  # one segment throughout


def _emit(core: AuditCore, index: int) -> Any:
    with auditlock.actor(f"user#{index}"):
        return core.emit("order.updated", {"target_type": "Order", "target_id": index, "status": "paid"})


def first_then_others(core: AuditCore, others: int, disk: ScriptedFdatasync) -> list[Any]:
    """Caller 0 emits and leads the first fdatasync; once that has begun, `others` callers emit. Per caller, the
    record its call returned or the exception it raised; a returned call is checked, as soon as it returns, to have
    its line within what a completed fdatasync made durable."""
    results: list[Any] = [None] * (1 + others)
    early: list[str] = []

    def work(index: int) -> None:
        try:
            results[index] = record = _emit(core, index)
        except Exception as exc:  # the test looks at what each caller got
            results[index] = exc
            return
        if line_end(core.writer.directory, record["event_id"]) > disk.durable_size:
            early.append(record["event_id"])

    threads = [threading.Thread(target=work, args=(index,)) for index in range(1 + others)]
    threads[0].start()
    wait_for(lambda: disk.calls >= 1, HOLD_TIMEOUT_S, "the first caller's fdatasync")
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * HOLD_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a logging call did not return"
    assert not early, f"calls returned before an fdatasync covered their line: {early}"
    return results


def all_waiting(core: AuditCore, callers: int) -> Callable[[], bool]:
    """True once `callers` callers have appended and wait for their fdatasync."""
    return lambda: core.writer._commit.waiting == callers


class TestCommitDelay:
    """With a commit delay, a leader that finds at least COMMIT_SIBLINGS other callers waiting waits before its
    fdatasync; each call still returns only once its own line is durable."""

    def test_a_delayed_fdatasync_covers_every_waiting_caller_before_any_returns(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """7 callers wait behind a held fdatasync: the next leader delays, one fdatasync covers all 7, and no call
        returns before an fdatasync covered its line."""
        core = _core(tmp_path / "spool", MAX_DELAY_US)
        disk = ScriptedFdatasync(all_waiting(core, 8))
        monkeypatch.setattr(os, "fdatasync", disk)
        try:
            results = first_then_others(core, 7, disk)
            calls, delays = disk.calls, core.writer._commit.delays
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in results), results
        assert (calls, delays) == (2, 1)
        contents = read_spool(tmp_path / "spool")
        assert sorted(contents.ids) == sorted(result["event_id"] for result in results)
        assert contents.seqs(core.writer.writer_id) == list(range(8))

    def test_a_failed_fdatasync_after_a_delay_fails_every_caller_it_covered(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The delayed fdatasync fails: all 7 callers it covered raise SpoolError, their lines are taken back, the
        first caller's line stays, and writing continues under a new writer id."""
        core = _core(tmp_path / "spool", MAX_DELAY_US)
        first_writer = core.writer.writer_id
        disk = ScriptedFdatasync(all_waiting(core, 8), fail_second=True)
        monkeypatch.setattr(os, "fdatasync", disk)
        try:
            results = first_then_others(core, 7, disk)
            delays, stats = core.writer._commit.delays, dict(core.writer.stats)
            after = _emit(core, 99)
        finally:
            core.writer.close()
        assert isinstance(results[0], dict), results[0]
        assert all(isinstance(result, auditlock.SpoolError) and "I/O error" in str(result)
                   for result in results[1:]), results
        assert delays == 1
        assert (stats["sync_failures"], stats["events"]) == (1, 1)
        assert (after["writer"] != first_writer, after["seq"]) == (True, 0)
        contents = read_spool(tmp_path / "spool")
        assert [event["event_id"] for event in contents.events] == [results[0]["event_id"], after["event_id"]]

    def test_a_few_waiting_callers_are_not_delayed(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With fewer than COMMIT_SIBLINGS other callers waiting, the next leader fdatasyncs at once."""
        others = COMMIT_SIBLINGS - 1
        core = _core(tmp_path / "spool", MAX_DELAY_US)
        disk = ScriptedFdatasync(all_waiting(core, 1 + others))
        monkeypatch.setattr(os, "fdatasync", disk)
        try:
            results = first_then_others(core, others, disk)
            delays = core.writer._commit.delays
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in results), results
        assert delays == 0

    def test_a_lone_caller_is_never_delayed(self, tmp_path: Path) -> None:
        """One thread logging 20 events: 20 fdatasyncs, none delayed."""
        core = _core(tmp_path / "spool", MAX_DELAY_US)
        try:
            for index in range(20):
                _emit(core, index)
            delays = core.writer._commit.delays
        finally:
            core.writer.close()
        assert delays == 0

    def test_no_delay_when_it_is_zero(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """commit_delay_us = 0: 7 callers waiting, the next leader fdatasyncs at once."""
        core = _core(tmp_path / "spool", 0)
        disk = ScriptedFdatasync(all_waiting(core, 8))
        monkeypatch.setattr(os, "fdatasync", disk)
        try:
            results = first_then_others(core, 7, disk)
            delays = core.writer._commit.delays
        finally:
            core.writer.close()
        assert all(isinstance(result, dict) for result in results), results
        assert delays == 0


class TestCommitDelayKey:
    """`[spool] commit_delay_us`: microseconds, 0 to 10000, checked when the config is loaded."""

    def test_default_and_values(self, tmp_path: Path) -> None:
        """Unset it is 50 µs; 0 (no delay) and 10000 are accepted."""
        assert build_config(config_dict(tmp_path)).spool.commit_delay_us == 50
        for value in (0, 10_000):
            config = build_config(config_dict(tmp_path, spool={"dir": str(tmp_path), "commit_delay_us": value}))
            assert config.spool.commit_delay_us == value

    @pytest.mark.parametrize(("value", "problem"), [
        (-1, "spool.commit_delay_us = -1 is invalid: too small; expected an integer from 0 to 10000"),
        (10_001, "spool.commit_delay_us = 10001 is invalid: too large; expected an integer from 0 to 10000"),
        ("200us", "spool.commit_delay_us = '200us' is invalid: wrong type; expected an integer from 0 to 10000"),
    ])
    def test_a_bad_value_names_the_key(self, tmp_path: Path, value: Any, problem: str) -> None:
        """A negative, too large or non-integer delay is refused, naming the key and the allowed range."""
        with pytest.raises(ConfigError) as info:
            build_config(config_dict(tmp_path, spool={"dir": str(tmp_path), "commit_delay_us": value}))
        assert info.value.problems == [problem]

    def test_environment_override(self, tmp_path: Path) -> None:
        """AUDITLOCK_SPOOL_COMMIT_DELAY_US sets the delay."""
        config = build_config(config_dict(tmp_path), environ={"AUDITLOCK_SPOOL_COMMIT_DELAY_US": "0"})
        assert config.spool.commit_delay_us == 0
