"""The parts of `bench/handler.py`, the application-side benchmark (its docstring says what each variant measures).

events: the events, the config and the timing harness; variants: (a), (a'), (b), (r), (e0)/(e2), (sN) and every
timed variant by its table name; floors: (c) and the group-commit floor (gN); postgres: (pN); importtime:
`import auditlock` in a fresh interpreter; profile: --profile (cProfile and the per-call micro costs); summary: the
repeats in shuffled order, the table and the JSON line.
"""
