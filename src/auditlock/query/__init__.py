"""Querying the archive: locally with DuckDB (`auditlock query`) and in Athena (`auditlock athena-ddl`).

Room map (imports flow one way: cli → query → archive/config/spool; nothing outside imports this room):

- `columns`   the `auditlock/1` columns with their DuckDB and Athena types (one table, two engines)
- `filters`   the command's filters as one parameterised WHERE clause
- `cache`     list only the month partitions in range, download into a local cache keyed by key and ETag
- `eviction`  bound the cache: stale entries, then the least recently used go; never one a query is reading
- `spool`     events not yet shipped, read from the spool (`--include-spool`)
- `engine`    DuckDB: the `audit` view with explicit column types, filter queries, raw SQL
- `output`    table, JSONL and CSV writers
- `ddl`       Athena `CREATE EXTERNAL TABLE` with partition projection, and the de-duplicating view

Only `cache` (boto3) and `engine` (duckdb) import the `query` extra; this package's `__init__` imports nothing.
"""
