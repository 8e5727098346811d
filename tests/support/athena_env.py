"""DuckDB standing in for Athena: the archive as `auditlock.events`, with the views from our own DDL on it.

Athena's SQL (Trino) is transpiled by sqlglot; where DuckDB lacks a Trino function the views use, `duckdb_sql`
rewrites it into DuckDB's equivalent (one place, so every test runs the same translation).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlglot

from auditlock.archive.timerange import ALL_TIME
from auditlock.query import ddl
from auditlock.query.cache import ArchiveCache, make_client
from auditlock.query.engine import AuditDatabase
from tests.support.query_env import QueryEnv

_TRANSFORM_VALUES = "TRANSFORM_VALUES("


def duckdb_sql(athena_sql: str) -> str:
    """Athena SQL as DuckDB runs it: sqlglot's transpilation, then Trino's `transform_values(m, (k, v) -> e)`
    (which DuckDB lacks) as `map_from_entries(list_transform(map_entries(m), ...))`."""
    sql = sqlglot.transpile(athena_sql, read="athena", write="duckdb")[0]
    while (start := sql.find(_TRANSFORM_VALUES)) >= 0:
        end = _closing(sql, start + len(_TRANSFORM_VALUES) - 1)
        inner = sql[start + len(_TRANSFORM_VALUES):end]
        match = re.fullmatch(r"(.*), LAMBDA (\w+), (\w+) : (.*)", inner, flags=re.DOTALL)
        assert match is not None, f"unexpected transform_values form: {inner[:200]}"
        mapping, key, value, body = match.groups()
        body = re.sub(rf"\b{key}\b", "e.key", re.sub(rf"\b{value}\b", "e.value", body))
        rewritten = (f"MAP_FROM_ENTRIES(LIST_TRANSFORM(MAP_ENTRIES({mapping}), "
                     f"LAMBDA e : {{'key': e.key, 'value': {body}}}))")
        sql = sql[:start] + rewritten + sql[end + 1:]
    return sql


def _closing(sql: str, open_at: int) -> int:
    depth = 0
    for index in range(open_at, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[index], 0)
        if depth == 0:
            return index
    raise AssertionError("unbalanced parentheses in transpiled SQL")


@pytest.fixture
def athena(story: QueryEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditDatabase]:
    """DuckDB standing in for Athena: `auditlock.events` over the whole archive, the views from the DDL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", story.archive.endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", story.archive.endpoint.secret_key)
    sink = story.config.sink
    files, _ = ArchiveCache(make_client(sink), sink, tmp_path / "athena-cache").fetch(ALL_TIME)
    database = AuditDatabase(files)
    database.connection.execute("CREATE SCHEMA auditlock")
    database.connection.execute("CREATE VIEW auditlock.events AS SELECT * FROM audit")
    database.connection.execute(duckdb_sql(ddl.create_unique_view()))
    yield database
    database.close()
