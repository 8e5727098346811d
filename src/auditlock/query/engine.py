# ruff: noqa: S608 - SQL text is built from our own names and quoted literals; values travel as parameters
"""DuckDB over the cached archive: the `audit` view, filter queries and raw SQL (extra `query`).

The `audit` view has the `auditlock/1` columns with explicit types (see `columns`) plus `year` and `month`
(strings, as in Athena). `year`/`month` are computed from `occurred_at` — the rule the archive is partitioned
by — so they do not depend on where the cache keeps a file. With a time range the view holds only the events
in it. With spool events, an event already in the archive is taken from the archive (de-duplicated by
`event_id`); the archive itself holds every event exactly once (the agent's contract, checked by `verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from auditlock.archive.timerange import ALL_TIME, TimeRange, format_time
from auditlock.query.columns import EVENT_COLUMNS, EVENT_NAMES
from auditlock.query.errors import QueryError, UsageError
from auditlock.query.filters import NEWEST_FIRST, OLDEST_FIRST

VIEW = "audit"
# Reveals an event's erasable values: (payload JSON text, event_id) -> payload JSON text (privacy.erasable).
PayloadRevealer = Callable[[str | None, str | None], str | None]
_PAYLOAD, _EVENT_ID = EVENT_NAMES.index("payload"), EVENT_NAMES.index("event_id")
MAX_OBJECT_BYTES = 16 * 1024 * 1024  # far above [events] max_event_bytes' useful range
_BATCH = 10_000


@dataclass
class Result:
    """Column names and the rows, streamed in batches."""

    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


class AuditDatabase:
    """An in-memory DuckDB connection with the `audit` view over archive files and, optionally, spool events."""

    def __init__(self, archive_files: Sequence[Path], *, spool_file: Path | None = None,
                 time_range: TimeRange = ALL_TIME, reveal: PayloadRevealer | None = None) -> None:
        self.connection = duckdb.connect(":memory:")
        self.connection.execute(audit_view_sql(archive_files, spool_file, time_range))
        self._reveal = reveal

    def events(self, where: str, params: Sequence[Any], limit: int | None = None, *,
               oldest_first: bool = False) -> Result:
        """Whole events matching `where` (a parameterised condition on `audit`), newest first (or oldest).

        Erasable values are revealed (or shown erased) when the database was given a revealer; `--sql` results
        (`sql`) are never: they show the archive's bytes.
        """
        order = OLDEST_FIRST if oldest_first else NEWEST_FIRST
        sql = f"SELECT {', '.join(EVENT_NAMES)} FROM {VIEW} WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, limit]
        result = _result(self._execute(sql, params))
        if self._reveal is not None:
            result.rows = _revealed(result.rows, self._reveal)
        return result

    def count(self, where: str, params: Sequence[Any]) -> int:
        """How many events match `where`."""
        row = self._execute(f"SELECT count(*) FROM {VIEW} WHERE {where}", params).fetchone()
        return int(row[0]) if row else 0

    def _execute(self, sql: str, params: Sequence[Any]) -> duckdb.DuckDBPyConnection:
        try:
            return self.connection.execute(sql, list(params))
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {exc}") from exc

    def sql(self, text: str, params: Sequence[Any] = ()) -> Result:
        """Run the user's SQL (`--sql`); an error in it is a usage error naming `--sql`."""
        try:
            cursor = self.connection.execute(text, list(params))
        except duckdb.Error as exc:
            raise UsageError("--sql", str(exc).strip()) from exc
        if cursor.description is None:
            return Result([], iter(()))
        return _result(cursor)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def _result(cursor: duckdb.DuckDBPyConnection) -> Result:
    columns = [d[0] for d in cursor.description or ()]
    return Result(columns, _batches(cursor))


def _revealed(rows: Iterator[tuple[Any, ...]], reveal: PayloadRevealer) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        payload = row[_PAYLOAD]
        revealed = reveal(payload, row[_EVENT_ID])
        yield row if revealed is payload else (*row[:_PAYLOAD], revealed, *row[_PAYLOAD + 1:])


def _batches(cursor: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    while batch := cursor.fetchmany(_BATCH):
        yield from batch


def audit_view_sql(archive_files: Sequence[Path], spool_file: Path | None, time_range: TimeRange) -> str:
    """`CREATE VIEW audit AS ...` over the files (and spool events), restricted to the range."""
    archive = _select(read_json_sql(archive_files) if archive_files else None, time_range)
    if spool_file is None:
        return f"CREATE VIEW {VIEW} AS {archive}"
    spool = _select(read_json_sql([spool_file]), time_range)
    return (f"CREATE VIEW {VIEW} AS WITH archive AS ({archive}), spool AS ({spool}) "
            "SELECT * FROM archive UNION ALL "
            "SELECT * FROM spool WHERE event_id NOT IN (SELECT event_id FROM archive)")


def read_json_sql(files: Sequence[Path]) -> str:
    """`read_json([...], columns={...}, ...)` with the explicit column types."""
    paths = ", ".join(_literal(str(p)) for p in files)
    columns = ", ".join(f"{_literal(name)}: {_literal(kind)}" for name, kind, _ in EVENT_COLUMNS)
    return (f"read_json([{paths}], columns={{{columns}}}, format='newline_delimited', "
            f"maximum_object_size={MAX_OBJECT_BYTES})")


def _select(source: str | None, time_range: TimeRange) -> str:
    names = ", ".join(EVENT_NAMES)
    partitions = "substr(occurred_at, 1, 4) AS year, substr(occurred_at, 6, 2) AS month"
    if source is None:  # no object in range: an empty relation with the same columns and types
        typed = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind, _ in EVENT_COLUMNS)
        return (f"SELECT *, CAST(NULL AS VARCHAR) AS year, CAST(NULL AS VARCHAR) AS month "
                f"FROM (SELECT {typed}) WHERE FALSE")
    conditions = []
    if time_range.since is not None:
        conditions.append(f"occurred_at >= {_literal(format_time(time_range.since))}")
    if time_range.until is not None:
        conditions.append(f"occurred_at < {_literal(format_time(time_range.until))}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {names}, {partitions} FROM {source}{where}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
