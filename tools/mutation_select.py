"""Per-mutant test selection by coverage for the mutation runner (see docs/testing.md, "Test selection").

    python tools/mutation_select.py map MAP.json MODULE... -- PYTEST-ARGS...    (tools/mutation_runner.py runs it)

`map` runs the group's tests once under `coverage`, switching the coverage context to each test's node id, and
writes which tests executed each line of the group's modules. Code run by a subprocess a test starts is measured
too: a `.pth` hook in the tree's virtualenv starts coverage in every Python child while `MUTRUN_COV_DIR` is set,
under the context of the test running at the time. A child that cannot save its data (SIGKILLed, or a fork — of the test
process or of a child — that ends with `os._exit`) makes its test one that runs for *every* mutant ("always"
tests).

`Selection` (used by the fork server) compares the group's modules with their pristine text, finds the statements
a mutant changed and returns the tests to run for it:
- every test of the group when a changed statement runs outside any test (import time: module constants, class
  bodies, decorators, `def` lines with their defaults), or when no statement can be found for a changed line;
- none when no test runs the changed statements and no "always" test exists: the mutant survives untested;
- otherwise the tests that ran any line of the changed statements, plus the "always" tests, in collection order.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import json
import os
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMPORT_TIME = ""  # the context of everything run outside a test (collection, imports)
HOOK_MODULE = "mutrun_cov_hook"
HOOK_SOURCE = '''"""From tools/mutation_select.py: coverage in every Python child while MUTRUN_COV_DIR is set."""
import os

_dir = os.environ.get("MUTRUN_COV_DIR")
if _dir:
    import atexit
    import json

    import coverage

    with open(os.path.join(_dir, "config.json")) as _f:
        _config = json.load(_f)
    with open(os.path.join(_dir, "context")) as _f:
        _context = _f.read()
    _pid = os.getpid()
    with open(os.path.join(_dir, f"child-{_pid}.json"), "w") as _f:
        json.dump({"context": _context}, _f)
    _cov = coverage.Coverage(data_file=os.path.join(_dir, f"cov-{_pid}"), include=_config["include"],
                             context=_context, config_file=False)
    _cov.start()

    def _save() -> None:
        if os.getpid() == _pid:
            _cov.stop()
            _cov.save()

    atexit.register(_save)

    def _forked() -> None:  # a fork of this child ends without saving: its test runs for every mutant
        with open(os.path.join(_dir, f"fork-{os.getpid()}.json"), "w") as f:
            json.dump({"context": _context}, f)

    os.register_at_fork(after_in_child=_forked)
'''


def _install_hook() -> Path:
    """The `.pth` hook in this interpreter's site-packages (the tree's own virtualenv)."""
    packages = Path(site.getsitepackages()[0])
    (packages / f"{HOOK_MODULE}.py").write_text(HOOK_SOURCE)
    (packages / f"{HOOK_MODULE}.pth").write_text(f"import {HOOK_MODULE}\n")
    return packages


def build_map(out: Path, modules: list[str], pytest_args: list[str]) -> int:
    """Run the tests once under coverage with a context per test; write the line -> tests map to `out`."""
    import coverage  # noqa: PLC0415 - only the map builder needs it
    import pytest  # noqa: PLC0415

    work = out.parent / "coverage-run"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.iterdir():
        stale.unlink()
    include = [str(Path(m).resolve()) for m in modules]
    (work / "config.json").write_text(json.dumps({"include": include}))
    (work / "context").write_text(IMPORT_TIME)
    _install_hook()
    cov = coverage.Coverage(data_file=str(work / "cov-main"), include=include, config_file=False)
    state = _Recorder(cov, work)
    os.register_at_fork(after_in_child=state.forked)
    os.environ["MUTRUN_COV_DIR"] = str(work)
    cov.start()
    try:
        _import_at_import_time(modules)
        code = pytest.main(["-q", "-p", "no:cacheprovider", *pytest_args], plugins=[state])
    finally:
        cov.stop()
        os.environ.pop("MUTRUN_COV_DIR", None)
    cov.save()
    mapping = _collect(work, include, state)
    mapping["exit_code"] = int(code)
    out.write_text(json.dumps(mapping))
    return int(code)


def _import_at_import_time(modules: list[str]) -> None:
    """Import the group's modules before any test, so their top-level lines are measured as import time (the code
    under test may import them lazily, inside whichever test comes first)."""
    for module in modules:
        parts = Path(module).with_suffix("").parts
        importlib.import_module(".".join(parts[parts.index("src") + 1:] if "src" in parts else parts))


class _Recorder:
    """A pytest plugin: each test's node id as the coverage context, written down for the children it starts."""

    def __init__(self, cov: Any, work: Path) -> None:
        self.cov, self.work = cov, work
        self.order: list[str] = []
        self.context = IMPORT_TIME
        self.forked_in: set[str] = set()

    def _switch(self, context: str) -> None:
        self.context = context
        (self.work / "context").write_text(context)
        self.cov.switch_context(context)

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        self.order = [item.nodeid for item in items]

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self._switch(nodeid)

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self._switch(IMPORT_TIME)

    def forked(self) -> None:
        """In a forked child of the test process: its lines are never saved, so its test always runs."""
        (self.work / f"fork-{os.getpid()}.json").write_text(json.dumps({"context": self.context}))


def _collect(work: Path, include: list[str], state: _Recorder) -> dict[str, Any]:
    """{order, always, lines: {module: {line: [test index, or -1 for import time]}}} from the main and child data."""
    import coverage  # noqa: PLC0415

    index = {nodeid: n for n, nodeid in enumerate(state.order)}
    lines: dict[str, dict[int, set[int]]] = {m: {} for m in include}
    always: set[str] = set()
    for marker in sorted(work.glob("fork-*.json")):
        always.add(json.loads(marker.read_text())["context"])
    for marker in sorted(work.glob("child-*.json")):
        pid = marker.stem.removeprefix("child-")
        if not (work / f"cov-{pid}").exists():
            always.add(json.loads(marker.read_text())["context"])
    for data_file in sorted(work.glob("cov-*")):
        data = coverage.CoverageData(basename=str(data_file))
        data.read()
        for module in include:
            for line, contexts in (data.contexts_by_lineno(module) or {}).items():
                slot = lines[module].setdefault(line, set())
                slot.update(index.get(c, -1) for c in contexts)
    always.discard(IMPORT_TIME)
    return {"order": state.order, "always": sorted(index[c] for c in always if c in index),
            "always_outside": sorted(c for c in always if c not in index),
            "lines": {m: {str(k): sorted(v) for k, v in per.items()} for m, per in lines.items()}}


@dataclass(frozen=True)
class Choice:
    """The tests for one mutant: `everything` (all of the group's), or `tests` (empty: no test runs the code)."""

    everything: bool
    tests: list[str]
    why: str


class Selection:
    """The coverage map of a group and the pristine text of its modules, taken when the server starts."""

    def __init__(self, map_file: Path, tree: Path) -> None:
        mapping = json.loads(map_file.read_text())
        self.order: list[str] = mapping["order"]
        self.always: set[int] = set(mapping["always"])
        self.lines = {Path(m): {int(k): set(v) for k, v in per.items()} for m, per in mapping["lines"].items()}
        self.pristine = {m: m.read_text() for m in self.lines}
        self.tree = tree

    def choose(self) -> Choice:
        """The tests for the mutant now in the tree (everything when no module differs: the baseline)."""
        chosen: set[int] = set()
        changed_any = False
        for module, text in self.pristine.items():
            now = module.read_text()
            if now == text:
                continue
            changed_any = True
            for line in _changed_lines(text, now):
                span = _statement_lines(text, line)
                if span is None:
                    return Choice(True, [], f"{module.name}:{line} is in no statement: every test")
                hits = set().union(*(self.lines[module].get(n, set()) for n in span))
                if -1 in hits:
                    return Choice(True, [], f"{module.name}:{line} runs at import time: every test")
                chosen |= hits
        if not changed_any:
            return Choice(True, [], "no module differs (baseline): every test")
        if not chosen:
            why = "no test of the group runs the mutated line"
            chosen = set(self.always)
            if not chosen:
                return Choice(False, [], f"{why}: survived without a test run")
        chosen |= self.always
        return Choice(False, [self.order[n] for n in sorted(chosen)], f"{len(chosen)} of {len(self.order)} tests")


def _changed_lines(old: str, new: str) -> list[int]:
    """1-based line numbers of `old` that `new` replaces or deletes (or inserts next to)."""
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new.splitlines(), autojunk=False)
    changed: list[int] = []
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            changed += range(i1 + 1, i2 + 1)
        elif tag == "insert":
            changed += [max(i1, 1), i1 + 1]
    return changed


def _statement_lines(source: str, line: int) -> range | None:
    """The lines of the innermost statement (or except clause) holding `line`; of a compound one, its header
    (decorators included) — None when the line is in no statement."""
    best: ast.AST | None = None
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt | ast.excepthandler):
            continue
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        end = node.end_lineno or node.lineno
        if start <= line <= end and (best is None or start >= _start(best)) and node is not best:
            best = node
    if best is None:
        return None
    body = getattr(best, "body", None)
    end = (body[0].lineno - 1) if body and isinstance(body, list) and body[0].lineno > best.lineno else (
        best.end_lineno or best.lineno)
    if body and isinstance(body, list):
        end = max(end, best.lineno)
    return range(_start(best), end + 1)


def _start(node: ast.AST) -> int:
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    if argv[0] == "map":
        split = argv.index("--")
        return build_map(Path(argv[1]), argv[2:split], argv[split + 1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

