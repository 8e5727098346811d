"""The peak RSS of an `auditlock` command's own process, measured the one way that is not polluted by pytest's.

Not `ru_maxrss` from `wait4`: `subprocess` starts a child with vfork (or fork), and at exec Linux folds the address
space the child replaces — pytest's own, hundreds of MiB late in a full run — into the child's `ru_maxrss`. So the
command runs in-process in a fresh interpreter (`runpy`), which reports `VmHWM` from `/proc/self/status` when it
ends: the peak of the address space made at that interpreter's exec, nothing inherited.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

_REPORTING = """
import runpy, sys
sys.argv = ["auditlock", *sys.argv[1:]]
try:
    runpy.run_module("auditlock", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stdout.flush()
status = open("/proc/self/status").read()
hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")][0]
sys.stderr.write(f"\\nauditlock-peak-rss-kib {hwm} {code}\\n")
"""
_MARK = "auditlock-peak-rss-kib"


@dataclass(frozen=True)
class PeakRun:
    """A finished command: its exit code (as `SystemExit` gave it), stdout, stderr and peak RSS in KiB."""

    code: str
    stdout: bytes
    stderr: str
    peak_kib: int


def run_with_peak(args: list[str], *, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 600,
                  preexec_fn: Callable[[], None] | None = None) -> PeakRun:
    """Run `auditlock ARGS` in a fresh interpreter; its exit code, output and own peak RSS."""
    done = subprocess.run([sys.executable, "-c", _REPORTING, *args], env=dict(env), cwd=cwd, capture_output=True,
                          timeout=timeout, check=False, preexec_fn=preexec_fn)
    stderr = done.stderr.decode(errors="replace")
    head, _, report = stderr.rpartition(_MARK)
    assert report, f"the command did not report its peak (killed?): {stderr[-3000:]}"
    hwm, code = report.split()[:2]
    return PeakRun(code, done.stdout, head, int(hwm))
