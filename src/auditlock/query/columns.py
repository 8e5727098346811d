"""The `auditlock/1` columns as both query engines see them — one table, so DuckDB and Athena agree.

Types are explicit on purpose: DuckDB's JSON auto-detection would read `event_id` as UUID, `seq` as whatever
the first lines suggest and `year` (from a Hive path) as BIGINT; Athena's would not exist. `occurred_at` stays
a string: the archive writes one fixed-width form (`2026-11-26T20:14:50.123456Z`), so string order is time
order and the same comparisons run unchanged on both engines. `payload` is JSON text (DuckDB `JSON`, Athena
`string`), so `json_extract_scalar` / `->>` work on it. `year` and `month` are the partition columns: strings
(`'2026'`, `'11'`), as the archive's `year=YYYY/month=MM` path spells them.
"""

from __future__ import annotations

from auditlock.archive import layout

# (name, DuckDB type, Athena type), in schema order.
EVENT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("schema", "VARCHAR", "string"),
    ("event_id", "VARCHAR", "string"),
    ("event_type", "VARCHAR", "string"),
    ("occurred_at", "VARCHAR", "string"),
    ("actor_id", "VARCHAR", "string"),
    ("actor_type", "VARCHAR", "string"),
    ("actor_ip", "VARCHAR", "string"),
    ("target_type", "VARCHAR", "string"),
    ("target_id", "VARCHAR", "string"),
    ("payload", "JSON", "string"),
    ("service", "VARCHAR", "string"),
    ("host", "VARCHAR", "string"),
    ("retention", "VARCHAR", "string"),
    ("trace_id", "VARCHAR", "string"),
    ("span_id", "VARCHAR", "string"),
    ("writer", "VARCHAR", "string"),
    ("seq", "BIGINT", "bigint"),
    ("prev", "VARCHAR", "string"),
)
PARTITION_COLUMNS = ("year", "month")
EVENT_NAMES = tuple(name for name, _, _ in EVENT_COLUMNS)


def events_root(prefix: str) -> str:
    """`<prefix>/events/`: the key prefix under which the `year=YYYY/month=MM/` partitions live."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{base}{layout.EVENTS_DIR}/"
