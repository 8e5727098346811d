"""`auditlock capture --setup`: what the database needs, created idempotently, the SQL printed. Creates only what is
missing, never drops anything: the publication over the mapped tables (tables missing from an existing publication
are added; tables it has beyond the mapping are left, and ignored by capture), `REPLICA IDENTITY FULL` on mapped
tables that lack it (so updates and deletes carry every before-value), the `auditlock_capture` schema with the
attribution functions, one BEFORE STATEMENT trigger per mapped table (no per-row cost: once per transaction it calls
`emit_session()`, which emits one transactional message with `session_user`, `application_name` and the client
address), `bind_actor(...)` for `[capture] app_roles`, an event trigger for schema changes (needs superuser;
otherwise reported, not attempted), EXECUTE on `pg_logical_emit_message` revoked from PUBLIC (`capture.privileges`;
reported where this role may not), and the pgoutput slot. Statements run one by one in autocommit (a slot cannot be
created in a transaction that wrote).

Every message is emitted by a SECURITY DEFINER function with a fixed search_path owned by the setup role, computing
what it says itself: no argument can name a database role. So with EXECUTE on `pg_logical_emit_message` revoked
from PUBLIC, a role can neither write a session message naming another role nor an actor message unless it is an
application role (and then capture sees which role bound it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from auditlock.capture.privileges import BIND_ACTOR, BIND_ACTOR_ARGS, SCHEMA, restriction_statements
from auditlock.capture.tables import CapturedTable

SESSION_TRIGGER = "auditlock_capture_session"
DDL_TRIGGER = "auditlock_capture_ddl"

# The trigger's function is plain (no SECURITY DEFINER, no `SET search_path`: both cost a configuration save/restore
# on every call, on the write path of every statement); every name is qualified with pg_catalog (operators too) or
# the schema, so the caller's search_path cannot redirect it. It calls the definer function `emit_session()` (which
# may emit: PUBLIC may not) only when the marker says the transaction has no message yet, so the definer's cost is
# paid once per transaction.
# Once per transaction: the marker is a transaction-local setting holding the transaction's id, so it reverts at the
# transaction's end, and with a savepoint rolled back (which takes the message with it: the next statement emits
# again); the id (not a flag) means a session-level `SET auditlock.session_noted` cannot switch the message off. A
# role can still set it for its own transaction (`set_config(..., true)`): the trigger then emits nothing and capture
# records the rows as `db:unknown` with an `attribution_problem` (`capture.attribution`), proving no one.
# Speed (measured, docs/capture-postgres.md "What --setup costs the write path"): cheaper bodies keeping this contract
# (one assignment instead of two PERFORMs, no DECLARE initialiser) measured no faster; an on/off flag is ~1 µs cheaper
# but a session-level setting could silence it. Building the JSON is the largest part; no cheaper builder was found.
SESSION_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SCHEMA}.note_session() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  xid text := pg_catalog.pg_current_xact_id()::text;
BEGIN
  -- once per transaction: the setting is transaction-local and holds this transaction's id
  IF COALESCE(pg_catalog.current_setting('auditlock.session_noted', true), '') OPERATOR(pg_catalog.<>) xid THEN
    PERFORM {SCHEMA}.emit_session();
    PERFORM pg_catalog.set_config('auditlock.session_noted', xid, true);
  END IF;
  RETURN NULL;
END $fn$"""

# The facts of the calling session, computed here (`session_user` is the role that logged in, whatever SET ROLE or
# this function's owner; the client address and application_name are the connection's). Anyone may call it: it can
# only say the truth about its caller (application_name is what the client chose, as always).
EMIT_SESSION_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SCHEMA}.emit_session() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  PERFORM pg_logical_emit_message(true, 'auditlock.session', json_build_object(
    'role', session_user::text, 'application_name', current_setting('application_name'),
    'client_addr', host(inet_client_addr()))::text);
END $fn$"""

# The application's actor (`integrations.postgres.bind_transaction`), with the role that bound it added here: EXECUTE
# only for [capture] app_roles, and capture checks the role again (capture.attribution).
BIND_ACTOR_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SCHEMA}.bind_actor(actor_id text, actor_type text,
  actor_ip text, request_id text, job_run_id text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  PERFORM pg_logical_emit_message(true, 'auditlock.actor', json_strip_nulls(json_build_object(
    'actor_id', actor_id, 'actor_type', actor_type, 'actor_ip', actor_ip, 'request_id', request_id,
    'job_run_id', job_run_id, 'role', session_user::text))::text);
END $fn$"""

# capture's own `--once` flush (`database.flush_committed`): an empty message of a prefix capture ignores.
FLUSH_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SCHEMA}.flush_wal() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  PERFORM pg_logical_emit_message(true, 'auditlock.flush', '');
END $fn$"""

_EMITTERS = ("emit_session()", f"bind_actor({BIND_ACTOR_ARGS})", "flush_wal()")

DDL_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SCHEMA}.note_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  r record;
BEGIN
  IF tg_event = 'sql_drop' THEN
    FOR r IN SELECT objid, object_identity FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table' LOOP
      PERFORM pg_logical_emit_message(true, 'auditlock.ddl', json_build_object('role', session_user::text,
        'command', tg_tag, 'object', r.object_identity, 'oid', r.objid::text,
        'application_name', current_setting('application_name'),
        'client_addr', host(inet_client_addr()))::text);
    END LOOP;
  ELSE
    FOR r IN SELECT objid, object_identity FROM pg_event_trigger_ddl_commands() WHERE object_type = 'table' LOOP
      PERFORM pg_logical_emit_message(true, 'auditlock.ddl', json_build_object('role', session_user::text,
        'command', tg_tag, 'object', r.object_identity, 'oid', r.objid::text,
        'application_name', current_setting('application_name'),
        'client_addr', host(inet_client_addr()))::text);
    END LOOP;
  END IF;
END $fn$"""  # noqa: S608 - a constant: the schema name is ours, no input reaches it


@dataclass
class SetupPlan:
    """The statements `--setup` runs (in order) and what it cannot do with this role."""

    statements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def quoted(name: str) -> str:
    """A validated identifier or "schema.table", double-quoted (the config allows no quotes in them)."""
    return ".".join(f'"{part}"' for part in name.split("."))


def plan_setup(conn: psycopg.Connection[Any], slot: str, publication: str,
               tables: Mapping[str, CapturedTable], app_roles: Sequence[str] = ()) -> SetupPlan:
    """What is missing, as SQL; reads the catalog only."""
    plan = SetupPlan()
    names = sorted(table.name for table in tables.values())
    _publication(conn, publication, names, plan)
    for name in names:
        if _one(conn, "SELECT relreplident FROM pg_class WHERE oid = to_regclass(%s)", (quoted(name),)) != "f":
            plan.statements.append(f"ALTER TABLE {quoted(name)} REPLICA IDENTITY FULL")
    emitters = _emitter_owners(conn)
    plan.statements += [f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}", f"GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC",
                        EMIT_SESSION_FUNCTION, f"GRANT EXECUTE ON FUNCTION {SCHEMA}.emit_session() TO PUBLIC",
                        BIND_ACTOR_FUNCTION, f"REVOKE ALL ON FUNCTION {BIND_ACTOR} FROM PUBLIC", FLUSH_FUNCTION,
                        f"GRANT EXECUTE ON FUNCTION {SCHEMA}.flush_wal() TO PUBLIC", SESSION_FUNCTION,
                        f"REVOKE ALL ON FUNCTION {SCHEMA}.note_session() FROM PUBLIC"]
    _app_roles(conn, app_roles, plan)
    for name in names:
        plan.statements.append(f"CREATE OR REPLACE TRIGGER {SESSION_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR "
                               f"TRUNCATE ON {quoted(name)} FOR EACH STATEMENT EXECUTE FUNCTION "
                               f"{SCHEMA}.note_session()")
    _ddl_trigger(conn, plan)
    statements, notes = restriction_statements(conn, emitters)
    plan.statements += statements
    plan.notes += notes
    if _one(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == 0:
        plan.statements.append(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    return plan


def _emitter_owners(conn: psycopg.Connection[Any]) -> set[str]:
    """Who will own the functions that emit: each one's owner when it exists (CREATE OR REPLACE keeps it), else us."""
    owners = set()
    for function in _EMITTERS:
        owner = _one(conn, "SELECT pg_catalog.pg_get_userbyid(proowner) FROM pg_proc WHERE oid = "
                     "to_regprocedure(%s)", (f"{SCHEMA}.{function}",))
        owners.add(str(owner if owner is not None else _one(conn, "SELECT current_user")))
    return owners


def _app_roles(conn: psycopg.Connection[Any], app_roles: Sequence[str], plan: SetupPlan) -> None:
    """EXECUTE on bind_actor for each application role that lacks it; a missing role is a note, not an error."""
    for role in app_roles:
        if _one(conn, "SELECT to_regrole(%s) IS NULL", (f'"{role}"',)):
            plan.notes.append(f"[capture] app_roles names {role!r}, which is not a role of this server: create it "
                              "(CREATE ROLE ... LOGIN) or remove it, then run `auditlock capture --setup` again")
        elif not _one(conn, "SELECT to_regprocedure(%s) IS NOT NULL AND has_function_privilege(%s, "
                      "to_regprocedure(%s), 'EXECUTE')", (BIND_ACTOR, role, BIND_ACTOR)):
            plan.statements.append(f'GRANT EXECUTE ON FUNCTION {BIND_ACTOR} TO "{role}"')


def _publication(conn: psycopg.Connection[Any], publication: str, names: list[str], plan: SetupPlan) -> None:
    exists = _one(conn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (publication,))
    if not exists:
        plan.statements.append(f"CREATE PUBLICATION {quoted(publication)} FOR TABLE "
                               + ", ".join(quoted(n) for n in names)
                               + " WITH (publish = 'insert, update, delete, truncate')")
        return
    held = {f"{s}.{t}".lower() for s, t in conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)).fetchall()}
    missing = [n for n in names if n.lower() not in held]
    if missing:
        plan.statements.append(f"ALTER PUBLICATION {quoted(publication)} ADD TABLE "
                               + ", ".join(quoted(n) for n in missing))


def _ddl_trigger(conn: psycopg.Connection[Any], plan: SetupPlan) -> None:
    if not _one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        plan.notes.append(
            "schema changes (ALTER / DROP / RENAME) of mapped tables are NOT recorded: an event trigger needs a "
            "superuser, and this role is not one. Run --setup once as a superuser to install it (on RDS/Aurora, "
            "Cloud SQL and Azure the administrator role cannot create event triggers either; record DDL through "
            "your migration tool instead — see docs/capture-postgres.md)")
        return
    plan.statements.append(DDL_FUNCTION)
    if _one(conn, "SELECT count(*) FROM pg_event_trigger WHERE evtname = %s", (DDL_TRIGGER,)) == 0:
        plan.statements.append(f"CREATE EVENT TRIGGER {DDL_TRIGGER} ON ddl_command_end WHEN TAG IN ('ALTER TABLE') "
                               f"EXECUTE FUNCTION {SCHEMA}.note_ddl()")
    if _one(conn, "SELECT count(*) FROM pg_event_trigger WHERE evtname = %s", (DDL_TRIGGER + "_drop",)) == 0:
        plan.statements.append(f"CREATE EVENT TRIGGER {DDL_TRIGGER}_drop ON sql_drop WHEN TAG IN ('DROP TABLE') "
                               f"EXECUTE FUNCTION {SCHEMA}.note_ddl()")


def apply_setup(conn: psycopg.Connection[Any], plan: SetupPlan) -> None:
    """Run the plan's statements one by one (autocommit)."""
    for statement in plan.statements:
        conn.execute(statement.encode())


def _one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql.encode(), params).fetchone()
    return None if row is None else row[0]
