"""`import auditlock` in a fresh interpreter: wall time over `python -c pass`, and -X importtime's heaviest imports."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def import_ms(repeats: int) -> tuple[float, float, float, list[tuple[str, float]]]:
    """`import auditlock` in a fresh interpreter.

    Returns wall ms minus `pass`, wall ms when structlog and orjson are already imported (as in an app that
    logs with them), the -X importtime cumulative ms, and the heaviest imports auditlock's modules make.
    """
    def wall(code: str) -> float:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        return statistics.median(samples)

    wall("import auditlock")  # warm the page cache
    delta = wall("import auditlock") - wall("pass")
    deps = "import structlog, orjson"
    delta_after_deps = wall(f"{deps}; import auditlock") - wall(deps)
    totals: list[float] = []
    heavy: dict[str, list[float]] = {}
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import auditlock"], check=True,
                             capture_output=True, text=True).stderr
        for name, cumulative_ms in _foreign_imports(out):
            heavy.setdefault(name, []).append(cumulative_ms)
            if name == "auditlock":
                totals.append(cumulative_ms)
    top = sorted(((k, statistics.median(v)) for k, v in heavy.items() if k != "auditlock"), key=lambda kv: -kv[1])
    return delta, delta_after_deps, statistics.median(totals) if totals else float("nan"), top[:8]


def _foreign_imports(importtime: str) -> list[tuple[str, float]]:
    """`auditlock` itself and each non-auditlock module imported directly by an auditlock module (ms, cumulative).

    `-X importtime` prints a module after its children, indented two spaces per level.
    """
    rows = []
    for row in importtime.splitlines():
        parts = row.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            rows.append((name.strip(), (len(name) - len(name.lstrip())) // 2, int(parts[1]) / 1000))
    found = []
    for i, (name, depth, cumulative_ms) in enumerate(rows):
        parent = next((r[0] for r in rows[i + 1:] if r[1] < depth), None)
        if name == "auditlock" or (parent is not None and parent.startswith("auditlock")
                                   and not name.startswith("auditlock")):
            found.append((name, cumulative_ms))
    return found
