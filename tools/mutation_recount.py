"""Re-test the survivors of a mutation run against another tree: today's sources and today's tests.

    python tools/mutation_recount.py SURVIVORS TREE [--timeout S] [--only N,N...] -- PYTEST-ARGS...
    python tools/mutation_recount.py SURVIVORS TREE --runner SOCKET [--only N,N...]

SURVIVORS is a group's `survivors.txt` (tools/mutation.sh writes it: every surviving mutant as a diff). TREE is a
checkout with its own virtualenv (`git archive HEAD | tar -x -C TREE && (cd TREE && uv sync --locked
--all-extras)`); never the work tree someone is editing: each mutant is written into TREE's sources while its tests
run. For each survivor: the diff is applied with `patch` (which finds the hunk again when lines moved since the
run), `pytest -x PYTEST-ARGS` runs in TREE (with `--runner`: the fork server tools/mutation_runner.py serves from
TREE runs the tests, seconds a mutant instead of pytest's start-up), and the file is put back byte for byte.
One line a mutant on stdout,
tab-separated: the survivor's number in the file, its verdict (`killed`, `survived`, `stale`: the code the diff
mutates is no longer there; `error`: pytest could not run; `timeout`), module, operator and occurrence, and the
mutated line. A run whose group tests were added to after it started is recounted this way without rerunning
the mutants that were killed already.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_BLOCK = re.compile(r"^\[job-id\] \S+\n(?P<module>\S+) (?P<operator>\S+) (?P<occurrence>\d+)\n.*?"
                    r"--- mutation diff ---\n(?P<diff>.*?)^============$", re.S | re.M)


@dataclass(frozen=True)
class Survivor:
    """One surviving mutant of a run: where, which operator, and its diff."""

    number: int
    module: str
    operator: str
    occurrence: str
    diff: str

    @property
    def mutated_line(self) -> str:
        """The `+` line of the diff: what the mutant made of the code."""
        plus = [line[1:].strip() for line in self.diff.splitlines() if line.startswith("+") and
                not line.startswith("+++")]
        return plus[0] if plus else ""


def read_survivors(path: Path) -> list[Survivor]:
    """Every mutant of a `survivors.txt`, numbered from 1 in file order."""
    return [Survivor(n, m["module"], m["operator"], m["occurrence"], m["diff"])
            for n, m in enumerate(_BLOCK.finditer(path.read_text()), 1)]


def recount(survivor: Survivor, tree: Path, command: list[str], timeout: float) -> str:
    """Apply the mutant to `tree`, run the tests, restore the module; the verdict."""
    module = tree / survivor.module
    original = module.read_bytes()
    patch = subprocess.run(["patch", "-p1", "--forward", "--silent", "--no-backup-if-mismatch", "-r", "-"],
                           input=survivor.diff, text=True, cwd=tree, capture_output=True, check=False)
    if patch.returncode != 0:
        module.write_bytes(original)
        return "stale"
    try:
        return _run_tests(tree, command, timeout)
    finally:
        module.write_bytes(original)


def _test_command(tree: Path, runner: str | None, pytest_args: list[str]) -> list[str]:
    python = str(tree / ".venv/bin/python")
    if runner is not None:
        return [python, str(tree / "tools/mutation_runner.py"), "run", runner]
    return [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args]


def _run_tests(tree: Path, command: list[str], timeout: float) -> str:
    child = subprocess.Popen(command, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        status = child.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the tests' agent and writer subprocesses with it
        child.wait()
        return "timeout"
    except BaseException:  # stopped (SIGTERM, Ctrl-C): the tests go too, before the module is restored
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    return {0: "survived", 1: "killed"}.get(status, "error")


def main() -> int:
    """Recount every survivor of SURVIVORS in TREE; one tab-separated line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("survivors", type=Path)
    parser.add_argument("tree", type=Path)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--only", type=lambda text: {int(n) for n in text.split(",")},
                        help="survivor numbers to recount, comma-separated (default: all)")
    parser.add_argument("--runner", help="socket of a mutation_runner.py server started in TREE")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)  # PYTEST-ARGS: everything after `--`, as given
    args = parser.parse_args(argv[:split])
    tree = args.tree.resolve()
    # SIGTERM as SystemExit, so that `recount`'s `finally` restores the mutated module (as Ctrl-C does).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    subprocess.run([str(tree / ".venv/bin/python"), str(Path(__file__).with_name("mutation_exception_name.py"))],
                   check=True, stdout=subprocess.DEVNULL)  # Cosmic Ray's exception name, defined in TREE's processes
    command = _test_command(tree, args.runner, argv[split + 1:])
    for survivor in read_survivors(args.survivors):
        if args.only and survivor.number not in args.only:
            continue
        verdict = recount(survivor, tree, command, args.timeout)
        print(survivor.number, verdict, survivor.module, survivor.operator, survivor.occurrence,
              survivor.mutated_line, sep="\t", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
