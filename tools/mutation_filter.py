"""Mark the mutants that cannot change behaviour as skipped in a Cosmic Ray session (see docs/testing.md).

    uvx --from cosmic-ray==8.7.0 python tools/mutation_filter.py SESSION.sqlite TREE

Run by tools/mutation.sh after `cosmic-ray init`, in the interpreter Cosmic Ray runs in (it uses its WorkDB API).
Two kinds of mutant are skipped, each a whole class that is equivalent by construction:

- a mutation inside a type annotation (`int | None` -> `int / None`, ...): every module mutated has
  `from __future__ import annotations`, so annotations are strings that nothing evaluates at run time (the
  filter refuses a module without it rather than skip mutants that would matter there);
- a mutation of an `|` between two names of the `os.O_*`, `fcntl.LOCK_*` or `stat.S_*` flag constants into
  `+` or `^`: the flags are disjoint bits, so the three operators give the same number.

Everything else is run. Skipped mutants are reported by `cr-report` as skipped, not as killed or survived.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

FUTURE = "from __future__ import annotations"
FLAG_PREFIXES = ("O_", "LOCK_", "S_I")
SAME_ON_DISJOINT_BITS = ("core/ReplaceBinaryOperator_BitOr_Add", "core/ReplaceBinaryOperator_BitOr_BitXor")

Span = tuple[tuple[int, int], tuple[int, int]]


def _span(node: ast.AST) -> Span:
    return ((node.lineno, node.col_offset), (node.end_lineno or node.lineno, node.end_col_offset or 0))


def annotation_spans(tree: ast.AST) -> Iterator[Span]:
    """Every annotation in a module: arguments, return types, annotated assignments."""
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            yield _span(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            yield _span(node.returns)
        elif isinstance(node, ast.AnnAssign):
            yield _span(node.annotation)


def _is_flag(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_flag(node.left) and _is_flag(node.right)
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.startswith(FLAG_PREFIXES)


def flag_or_spans(tree: ast.AST) -> Iterator[Span]:
    """Every `A | B` whose operands are all flag constants (disjoint bits)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and _is_flag(node):
            yield _span(node)


def _inside(pos: tuple[int, int], spans: list[Span]) -> bool:
    return any(start <= pos <= end for start, end in spans)


def skip_equivalent(db: WorkDB, tree_root: Path) -> int:
    """Mark the two equivalent classes skipped; return how many jobs were skipped."""
    annotations: dict[str, list[Span]] = {}
    flags: dict[str, list[Span]] = {}
    skipped = 0
    for item in db.pending_work_items:
        for mutation in item.mutations:
            module = str(mutation.module_path)
            if module not in annotations:
                source = (tree_root / module).read_text()
                if FUTURE not in source:
                    raise SystemExit(f"{module}: no '{FUTURE}'; its annotations are evaluated, "
                                     "so annotation mutants are not equivalent there; add the import or "
                                     "drop the module from the run")
                tree = ast.parse(source)
                annotations[module] = list(annotation_spans(tree))
                flags[module] = list(flag_or_spans(tree))
            start = tuple(mutation.start_pos)
            in_annotation = _inside(start, annotations[module])
            on_flags = mutation.operator_name in SAME_ON_DISJOINT_BITS and _inside(start, flags[module])
            if in_annotation or on_flags:
                reason = "annotation" if in_annotation else "disjoint flag bits"
                db.set_result(item.job_id, WorkResult(output=f"equivalent: {reason}",
                                                      worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
                break
    return skipped


def main(argv: list[str]) -> int:
    session, tree_root = argv
    with use_db(session) as db:
        skipped = skip_equivalent(db, Path(tree_root))
    print(f"skipped as equivalent: {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
