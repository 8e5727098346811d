"""Mark the mutants that cannot change behaviour as skipped in a Cosmic Ray session (see docs/testing.md).

    uvx --from cosmic-ray==8.7.0 python tools/mutation_filter.py SESSION.sqlite TREE [--all-operators]

Run by tools/mutation.sh after `cosmic-ray init`, in the interpreter Cosmic Ray runs in (it uses its WorkDB API).
Two kinds of mutant are skipped as equivalent, each a whole class that is equivalent by construction:

- a mutation inside a type annotation (`int | None` -> `int / None`, ...): every module mutated has
  `from __future__ import annotations`, so annotations are strings that nothing evaluates at run time (the
  filter refuses a module without it rather than skip mutants that would matter there);
- a mutation of an `|` between two names of the `os.O_*`, `fcntl.LOCK_*` or `stat.S_*` flag constants into
  `+` or `^`: the flags are disjoint bits, so the three operators give the same number.

Unless `--all-operators` is given, the two operators that make most of the mutants are also sampled (skipped as
"sampled out"): Cosmic Ray replaces a comparison by each of the seven others and an arithmetic or bitwise operator
by each of the ten others. Kept:

- comparisons: the sufficient subset of Kaminski, Ammann and Offutt ("Better predicate testing", 2011) — a test
  set that kills these kills every other replacement of that operator (their third, `True`/`False` for the whole
  comparison, Cosmic Ray does not make; `AddNot` on the enclosing condition is the nearest): `<` -> `<=`, `!=`;
  `>` -> `>=`, `!=`; `<=` -> `<`, `==`; `>=` -> `>`, `==`; `==` -> `<=`, `>=`; `!=` -> `<`, `>`; plus `==`/`!=`
  -> `is`/`is not` (identity only agrees with equality on small ints and interned strings: a real finding once)
  and `is` <-> `is not`;
- binary operators: one replacement each, the inverse or nearest operation (`+` <-> `-`, `*` <-> `/`, `//` -> `/`,
  `%` -> `//`, `**` -> `*`, `<<` <-> `>>`, `|` <-> `&`, `^` -> `|`). The others differ from it only on operands
  where it is also different from the original (0, 1, equal operands), which no test here relies on.

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

KEPT_COMPARISONS = {
    "Lt": ("LtE", "NotEq"), "Gt": ("GtE", "NotEq"), "LtE": ("Lt", "Eq"), "GtE": ("Gt", "Eq"),
    "Eq": ("LtE", "GtE", "Is"), "NotEq": ("Lt", "Gt", "IsNot"), "Is": ("IsNot",), "IsNot": ("Is",),
    "In": ("NotIn",), "NotIn": ("In",),
}
KEPT_BINARY = {
    "Add": "Sub", "Sub": "Add", "Mul": "Div", "Div": "Mul", "FloorDiv": "Div", "Mod": "FloorDiv", "Pow": "Mul",
    "LShift": "RShift", "RShift": "LShift", "BitOr": "BitAnd", "BitAnd": "BitOr", "BitXor": "BitOr",
}
COMPARISON, BINARY = "core/ReplaceComparisonOperator_", "core/ReplaceBinaryOperator_"

Span = tuple[tuple[int, int], tuple[int, int]]


def _span(node: ast.expr) -> Span:
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


def sampled_out(operator: str) -> bool:
    """A comparison or binary operator replacement outside the kept subset (module docstring)."""
    for prefix, kept in ((COMPARISON, KEPT_COMPARISONS), (BINARY, KEPT_BINARY)):
        if operator.startswith(prefix):
            source, _, target = operator[len(prefix):].partition("_")
            return target not in kept.get(source, (target,))
    return False


def _skip(db: WorkDB, job_id: str, reason: str) -> None:
    db.set_result(job_id, WorkResult(output=reason, worker_outcome=WorkerOutcome.SKIPPED))


def skip_equivalent(db: WorkDB, tree_root: Path, *, sample: bool) -> int:
    """Mark the equivalent classes (and, with `sample`, the sampled-out operators) skipped; return how many."""
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
                _skip(db, item.job_id, "equivalent: " + ("annotation" if in_annotation else "disjoint flag bits"))
                skipped += 1
                break
            if sample and sampled_out(mutation.operator_name):
                _skip(db, item.job_id, "sampled out (run with --all-operators to include)")
                skipped += 1
                break
    return skipped


def main(argv: list[str]) -> int:
    session, tree_root, *flags = argv
    with use_db(session) as db:
        skipped = skip_equivalent(db, Path(tree_root), sample="--all-operators" not in flags)
    print(f"skipped (equivalent or sampled out): {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
