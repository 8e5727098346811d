# ruff: noqa: S608 - DDL text from our own column names and validated database/table identifiers
"""Athena DDL for the archive: the external table with partition projection, and a de-duplicating view.

The table reads `s3://<bucket>/<prefix>/events/year=YYYY/month=MM/*.jsonl.gz` (Athena decompresses `.gz`)
with the OpenX JSON SerDe. Columns are the `auditlock/1` fields in schema order (`columns.EVENT_COLUMNS`);
`payload` is declared `string`, so the SerDe hands over the object's JSON text and Athena's JSON functions
(`json_extract_scalar(payload, '$.changes.status[1]')`) work on it. `occurred_at` is a string in one fixed
form, so string comparisons are time comparisons.

Partitions are projected, never registered: `year` an integer range (`--first-year`..`--last-year`), `month`
an integer 1..12 written with two digits, and `storage.location.template` mapping both onto the archive's
Hive-style keys. A query must constrain `year`/`month` for Athena to read only those prefixes.

The view `<table>_unique` keeps one row per `event_id`. The archive holds each event once (the agent's
contract), so this is a guard, not a repair; its window is partitioned by `year, month, event_id` — the same
de-duplication, since an event has one `occurred_at` — so predicates on `year`/`month` pass through the
window to the table scan and partition pruning still works through the view.
"""

from __future__ import annotations

from auditlock.query.columns import EVENT_COLUMNS, EVENT_NAMES, PARTITION_COLUMNS, events_root

DEFAULT_DATABASE = "auditlock"
DEFAULT_TABLE = "events"
DEFAULT_FIRST_YEAR = 2024
DEFAULT_LAST_YEAR = 2099
SERDE = "org.openx.data.jsonserde.JsonSerDe"


def events_location(bucket: str, prefix: str) -> str:
    """`s3://<bucket>/<prefix>/events/`."""
    return f"s3://{bucket}/{events_root(prefix)}"


def projection_properties(bucket: str, prefix: str, first_year: int, last_year: int) -> dict[str, str]:
    """The table properties that switch on partition projection for `year` and `month`."""
    return {
        "projection.enabled": "true",
        "projection.year.type": "integer",
        "projection.year.range": f"{first_year},{last_year}",
        "projection.month.type": "integer",
        "projection.month.range": "1,12",
        "projection.month.digits": "2",
        "storage.location.template": events_location(bucket, prefix) + "year=${year}/month=${month}",
    }


def create_table(bucket: str, prefix: str, *, database: str = DEFAULT_DATABASE, table: str = DEFAULT_TABLE,
                 first_year: int = DEFAULT_FIRST_YEAR, last_year: int = DEFAULT_LAST_YEAR) -> str:
    """`CREATE EXTERNAL TABLE` for the archive (Hive DDL, as Athena expects for tables)."""
    columns = ",\n".join(f"  `{name}` {athena_type}" for name, _, athena_type in EVENT_COLUMNS)
    partitions = ", ".join(f"`{name}` string" for name in PARTITION_COLUMNS)
    properties = ",\n".join(f"  {_string(k)} = {_string(v)}"
                            for k, v in projection_properties(bucket, prefix, first_year, last_year).items())
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{table}` (\n{columns}\n)\n"
        f"PARTITIONED BY ({partitions})\n"
        f"ROW FORMAT SERDE {_string(SERDE)}\n"
        f"LOCATION {_string(events_location(bucket, prefix))}\n"
        f"TBLPROPERTIES (\n{properties}\n)"
    )


def create_unique_view(*, database: str = DEFAULT_DATABASE, table: str = DEFAULT_TABLE) -> str:
    """`CREATE OR REPLACE VIEW <table>_unique`: one row per event_id (Trino SQL, as Athena expects for views)."""
    names = ", ".join(f'"{name}"' for name in (*EVENT_NAMES, *PARTITION_COLUMNS))
    return (
        f'CREATE OR REPLACE VIEW "{database}"."{table}_unique" AS\n'
        f"SELECT {names}\n"
        f"FROM (\n"
        f'  SELECT *, row_number() OVER (PARTITION BY "year", "month", "event_id") AS "copy"\n'
        f'  FROM "{database}"."{table}"\n'
        f')\n'
        f'WHERE "copy" = 1'
    )


def athena_ddl(bucket: str, prefix: str, *, database: str = DEFAULT_DATABASE, table: str = DEFAULT_TABLE,
               first_year: int = DEFAULT_FIRST_YEAR, last_year: int = DEFAULT_LAST_YEAR,
               ocsf_product_version: str | None = None) -> str:
    """The statements, each ending in `;` (Athena's console runs one statement at a time); with
    `ocsf_product_version`, also the OCSF view `<table>_ocsf` (`query.ocsf_view`)."""
    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}`",
                  create_table(bucket, prefix, database=database, table=table, first_year=first_year,
                               last_year=last_year),
                  create_unique_view(database=database, table=table)]
    if ocsf_product_version is not None:
        from auditlock.query.ocsf_view import create_ocsf_view  # noqa: PLC0415 - only with --ocsf

        statements.append(create_ocsf_view(ocsf_product_version, database=database, table=table))
    return ";\n\n".join(statements) + ";\n"


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
