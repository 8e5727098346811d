"""Watching this test process's own system calls with strace (attached by pid, every thread followed), to observe
what no Python attribute can show — e.g. that an audit record was fsync'd by the thread that wrote it before a
response arrived.

Skips when strace is missing or may not attach (no ptrace here); fails instead with AUDITLOCK_REQUIRE_STRACE=1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

REQUIRE_STRACE_ENV = "AUDITLOCK_REQUIRE_STRACE"
# "1234 write(7</path>, ..." or "1234 <... fdatasync resumed>) = 0": the thread, the call, the rest
_LINE = re.compile(r"^(\d+) +(?:<\.\.\. )?([a-z_0-9]+)(.*)$")


@dataclass(frozen=True)
class Syscall:
    """One line of strace's log: the thread id, the call's name and the rest (arguments, result)."""

    tid: int
    name: str
    rest: str


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_STRACE_ENV) == "1":
        pytest.fail(f"{reason} [{REQUIRE_STRACE_ENV}=1]", pytrace=False)
    pytest.skip(reason)


@contextmanager
def traced(log: Path, calls: tuple[str, ...]) -> Iterator[list[Syscall]]:
    """Trace `calls` of this process (all threads) while the block runs; the list fills when the block ends."""
    strace = shutil.which("strace")
    if strace is None:
        _unavailable("strace is not installed")
    errors = log.with_suffix(".stderr")
    with errors.open("wb") as stderr:
        tracer = subprocess.Popen([str(strace), "-f", "-y", "-s", "65536", "-e", f"trace={','.join(calls)}",
                                   "-o", str(log), "-p", str(os.getpid())], stderr=stderr)
    try:
        # strace reports "Process N attached with K threads" once it has attached all of them
        wait_for(lambda: "attached" in errors.read_text() or tracer.poll() is not None, timeout=30,
                 what="strace attached")
        if tracer.poll() is not None:
            _unavailable(f"strace cannot attach here: {errors.read_text().strip()}")
        found: list[Syscall] = []
        yield found
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches from every thread
        tracer.wait(timeout=60)
    found.extend(Syscall(int(m[1]), m[2], m[3]) for m in map(_LINE.match, log.read_text().splitlines()) if m)
