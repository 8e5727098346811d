"""Capture's side of PostgreSQL: the checks that refuse to start, reading the slot, advancing it.

Reading uses the SQL interface of logical decoding (psycopg 3, no replication protocol):
`pg_logical_slot_peek_binary_changes(slot, upto_lsn, upto_nchanges, 'proto_version', '1', 'publication_names', pub,
'messages', 'true')` through a server-side cursor — PostgreSQL keeps a batch in a tuplestore (spilling to disk past
`work_mem`) and capture fetches it `FETCH_ROWS` at a time, so a transaction of any size is never held whole in
capture's memory. Peeking consumes nothing: the slot advances (`pg_replication_slot_advance`) only once the batch's
events are durable (see `capture.position`). The price is that each peek decodes again from the slot's restart
point; batches of `[capture] batch_changes` keep that bounded (docs/capture-postgres.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from auditlock.capture import privileges
from auditlock.capture.pgoutput import format_lsn, parse_lsn
from auditlock.capture.position import CaptureError
from auditlock.capture.tables import CapturedTable

FETCH_ROWS = 2000
_PEEK = ("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, 'proto_version', '1', "
         "'publication_names', %s, 'messages', 'true')")


@dataclass(frozen=True)
class SlotState:
    """What `pg_replication_slots` says about capture's slot."""

    confirmed_flush_lsn: int
    wal_status: str | None


def connect(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection named `auditlock-capture` (its own changes are nobody's)."""
    try:
        return psycopg.connect(dsn, autocommit=True, application_name="auditlock-capture")
    except psycopg.Error as exc:
        raise CaptureError(f"cannot connect to PostgreSQL ([capture] dsn_env / dsn_file): {_first_line(exc)}") from exc


def check_ready(conn: psycopg.Connection[Any], slot: str, publication: str,
                tables: Mapping[str, CapturedTable], *, attribution: str = "restricted") -> list[str]:
    """Every reason capture cannot run, each naming its fix (empty: ready); with `attribution = "restricted"`, also
    every way a role could forge attribution (`capture.privileges`)."""
    problems = []
    wal_level = _one(conn, "SHOW wal_level")
    if wal_level != "logical":
        problems.append(f"wal_level is {wal_level!r}, not 'logical': set wal_level = logical in postgresql.conf and "
                        "restart PostgreSQL (RDS/Aurora: rds.logical_replication = 1; Cloud SQL: "
                        "cloudsql.logical_decoding = on; Azure: wal_level = logical), see docs/capture-postgres.md")
    if not _one(conn, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"):
        problems.append("the capture role lacks REPLICATION: ALTER ROLE <role> REPLICATION (RDS/Aurora and Cloud "
                        "SQL: GRANT rds_replication / cloudsqlsuperuser-granted REPLICATION), see "
                        "docs/capture-postgres.md")
    slot_row = conn.execute("SELECT plugin, database, wal_status FROM pg_replication_slots WHERE slot_name = %s",
                            (slot,)).fetchone()
    if slot_row is None:
        problems.append(f"replication slot {slot!r} does not exist: run `auditlock capture --setup`")
    elif slot_row[0] != "pgoutput" or slot_row[1] != _one(conn, "SELECT current_database()"):
        problems.append(f"replication slot {slot!r} is not a pgoutput slot of this database (plugin "
                        f"{slot_row[0]!r}, database {slot_row[1]!r}): choose another [capture] slot")
    elif slot_row[2] == "lost":
        problems.append(f"replication slot {slot!r} was invalidated (wal_status = lost: PostgreSQL removed WAL it "
                        "still needed, see max_slot_wal_keep_size): drop it with SELECT pg_drop_replication_slot("
                        f"'{slot}') and run `auditlock capture --setup`; the next start records the changes lost "
                        "in between as an auditlock.capture_gap event")
    if _one(conn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (publication,)) == 0:
        problems.append(f"publication {publication!r} does not exist: run `auditlock capture --setup`")
    problems += _table_problems(conn, publication, tables)
    if attribution == "restricted":
        problems += privileges.forging_problems(conn)
    return problems


def trusted_roles(conn: psycopg.Connection[Any], app_roles: tuple[str, ...], attribution: str) -> frozenset[str] | None:
    """The roles whose actor messages capture takes: the application roles, the superusers and the setup role (who
    can emit anything anyway); None with `attribution = "open"` (anyone's)."""
    if attribution != "restricted":
        return None
    return frozenset(app_roles) | privileges.superusers(conn) | privileges.setup_owners(conn)


def _table_problems(conn: psycopg.Connection[Any], publication: str,
                    tables: Mapping[str, CapturedTable]) -> list[str]:
    problems = []
    for name, table in tables.items():
        schema, _, relname = name.partition(".")
        row = conn.execute(
            "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = %s AND "
            "p.schemaname = n.nspname AND p.tablename = c.relname) FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE lower(n.nspname) = %s AND lower(c.relname) = %s AND c.relkind IN "
            "('r', 'p')", (publication, schema, relname)).fetchone()
        if row is None:
            problems.append(f"[targets.{table.target_type}] table {table.name!r} does not exist in this database")
        elif row[0] != "f":
            problems.append(f"table {table.name!r} has REPLICA IDENTITY {_IDENTITY.get(row[0], row[0])}, so updates "
                            "and deletes carry no before-values: run `auditlock capture --setup` (it sets "
                            "REPLICA IDENTITY FULL)")
        elif not row[1]:
            problems.append(f"table {table.name!r} is not in publication {publication!r}: run "
                            "`auditlock capture --setup`")
    return problems


_IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "i": "USING INDEX", "f": "FULL"}


def primary_keys(conn: psycopg.Connection[Any], tables: Mapping[str, CapturedTable]) -> dict[str, tuple[str, ...]]:
    """The primary key columns of each mapped table, in key order (empty for a table without one)."""
    keys = {}
    for name in tables:
        schema, _, relname = name.partition(".")
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = "
            "c.relnamespace JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true JOIN "
            "pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum WHERE i.indisprimary AND "
            "lower(n.nspname) = %s AND lower(c.relname) = %s ORDER BY k.ord", (schema, relname)).fetchall()
        keys[name] = tuple(row[0] for row in rows)
    return keys


def table_oids(conn: psycopg.Connection[Any], tables: Mapping[str, CapturedTable]) -> dict[str, int]:
    """The oid of each mapped table (checked to exist by `check_ready`)."""
    oids = {}
    for name in tables:
        schema, _, relname = name.partition(".")
        oid = _one(conn, "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                   "lower(n.nspname) = %s AND lower(c.relname) = %s AND c.relkind IN ('r', 'p')", (schema, relname))
        if oid is not None:
            oids[name] = int(oid)
    return oids


def slot_state(conn: psycopg.Connection[Any], slot: str) -> SlotState | None:
    """The slot's confirmed position and WAL status, None when it does not exist."""
    row = conn.execute("SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = %s",
                       (slot,)).fetchone()
    if row is None:
        return None
    return SlotState(parse_lsn(row[0]) if row[0] else 0, row[1])


def flushed_lsn(conn: psycopg.Connection[Any]) -> int:
    """The server's WAL flush position: how far logical decoding can read.

    Not the write position (`pg_current_wal_lsn`): with asynchronous commit a transaction can have committed past
    the flush position, and a peek that decodes nothing up to there must not let the slot advance beyond it.
    """
    return parse_lsn(str(_one(conn, "SELECT pg_current_wal_flush_lsn()::text")))


def flush_committed(conn: psycopg.Connection[Any]) -> None:
    """Flush the WAL past every transaction committed so far, so decoding can read them all (`--once`).

    Under `synchronous_commit = off` a committed transaction's commit record can wait in WAL buffers for up to three
    `wal_writer_delay`s, beyond the flush position decoding reads to. A transaction of capture's own that writes one
    WAL record — an empty transactional message, prefix `auditlock.flush`, which the recorder ignores like any prefix
    not its own — and commits with `synchronous_commit = local` (no wait for standbys) flushes the WAL up to its commit
    record, and so past every commit before it. (Taking an xid alone is not enough: a transaction that wrote no WAL
    before its commit record commits asynchronously.)

    The message comes from `auditlock_capture.flush_wal()` where `--setup` created it (restricted attribution leaves
    `pg_logical_emit_message` to superusers and the setup role), else from `pg_logical_emit_message` itself.
    """
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = local")
        if _one(conn, f"SELECT to_regprocedure('{privileges.SCHEMA}.flush_wal()') IS NOT NULL"):
            conn.execute(f"SELECT {privileges.SCHEMA}.flush_wal()".encode())
        else:
            conn.execute("SELECT pg_logical_emit_message(true, 'auditlock.flush', '')")


def peek(conn: psycopg.Connection[Any], slot: str, publication: str, upto_lsn: int,
         max_changes: int) -> Iterator[bytes]:
    """The slot's pgoutput messages up to `upto_lsn` (whole transactions, about `max_changes`), streamed."""
    with conn.transaction(), conn.cursor(name="auditlock_capture_peek") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(_PEEK, (slot, format_lsn(upto_lsn), max_changes, publication))
        for (data,) in cursor:
            yield bytes(data)


def advance(conn: psycopg.Connection[Any], slot: str, lsn: int) -> None:
    """Move the slot's confirmed position to `lsn` (only forward: PostgreSQL refuses going back)."""
    state = slot_state(conn, slot)
    if state is not None and lsn > state.confirmed_flush_lsn:
        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, format_lsn(lsn)))


def wal_bytes_behind(conn: psycopg.Connection[Any], slot: str) -> int | None:
    """WAL bytes the slot holds that capture has not confirmed (None without the slot)."""
    value = _one(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots "
                 "WHERE slot_name = %s", (slot,))
    return None if value is None else int(value)


def _one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql.encode(), params).fetchone()
    return None if row is None else row[0]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
