"""Who may write an attribution message: `pg_logical_emit_message`'s EXECUTE privilege, read from the catalog.

PostgreSQL grants EXECUTE on `pg_catalog.pg_logical_emit_message` to PUBLIC, so by default any role that writes a
mapped table can emit an `auditlock.session` or `auditlock.actor` message of its own and name anyone. Restricted
attribution (`[capture] attribution = "restricted"`, the default) closes that: `--setup` revokes EXECUTE from PUBLIC
(when its role may: a superuser or the function's owner) and every message is emitted by a SECURITY DEFINER function
of the `auditlock_capture` schema that computes the session facts itself (`capture.setup`); capture refuses to start
while any role but the superusers and the owners of that schema and its functions (the setup role) can still execute
`pg_logical_emit_message`. Every overload is covered: PostgreSQL 14–16 have `(boolean, text, text)` and
`(boolean, text, bytea)`, PostgreSQL 17 adds a fourth `flush boolean` argument to both (one function each).

Everything is read from the catalog (`pg_proc.proacl` through `aclexplode`, `has_function_privilege` per role):
nothing here calls the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

SCHEMA = "auditlock_capture"
BIND_ACTOR_ARGS = "text, text, text, text, text"
BIND_ACTOR = f"{SCHEMA}.bind_actor({BIND_ACTOR_ARGS})"
MAX_NAMED_ROLES = 10
FIX_MANAGED = ("on RDS/Aurora, Cloud SQL and Azure the function belongs to a superuser you are not given, so this "
               "cannot be revoked there: set [capture] attribution = \"open\" to run with attribution any writing "
               "role can forge (docs/capture-postgres.md, \"Who did it\")")

_OVERLOADS = """SELECT p.oid, 'pg_catalog.pg_logical_emit_message(' || (SELECT string_agg(pg_catalog.format_type(a.t,
  NULL), ', ' ORDER BY a.n) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, n)) || ')',
  pg_catalog.pg_get_userbyid(p.proowner),
  EXISTS (SELECT 1 FROM aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) x
          WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE')
FROM pg_proc p WHERE p.proname = 'pg_logical_emit_message' AND p.pronamespace = 'pg_catalog'::regnamespace
ORDER BY 2"""
_SETUP_OWNERS = f"""SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = '{SCHEMA}'
UNION SELECT pg_catalog.pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = to_regnamespace('{SCHEMA}')"""  # noqa: S608 - constants
_EXECUTING_ROLES = """SELECT r.rolname FROM pg_roles r WHERE NOT r.rolsuper AND r.rolname <> ALL(%s)
AND has_function_privilege(r.oid, %s::oid, 'EXECUTE') ORDER BY 1"""


@dataclass(frozen=True)
class EmitFunction:
    """One overload of `pg_logical_emit_message`: its signature (for GRANT / REVOKE), owner, PUBLIC's EXECUTE."""

    oid: int
    signature: str
    owner: str
    public_executes: bool


def emit_functions(conn: psycopg.Connection[Any]) -> list[EmitFunction]:
    """Every overload of `pg_catalog.pg_logical_emit_message`, by signature."""
    return [EmitFunction(int(oid), signature, owner, bool(public))
            for oid, signature, owner, public in conn.execute(_OVERLOADS.encode()).fetchall()]


def setup_owners(conn: psycopg.Connection[Any]) -> set[str]:
    """The owners of the `auditlock_capture` schema and of its functions (empty before the first `--setup`)."""
    return {row[0] for row in conn.execute(_SETUP_OWNERS.encode()).fetchall()}


def superusers(conn: psycopg.Connection[Any]) -> set[str]:
    """The roles with SUPERUSER (they can emit anything: no privilege stops them)."""
    return {row[0] for row in conn.execute(b"SELECT rolname FROM pg_roles WHERE rolsuper").fetchall()}


def forging_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Why attribution is forgeable here, each naming the fix (empty: restricted as it must be)."""
    problems = []
    functions = emit_functions(conn)
    public = [f.signature for f in functions if f.public_executes]
    if public:
        problems.append(
            f"{' and '.join(public)} can be executed by PUBLIC, so any role that writes a mapped table can emit an "
            "attribution message naming someone else: run `auditlock capture --setup` as a superuser (it revokes "
            f"EXECUTE from PUBLIC; {FIX_MANAGED})")
    allowed = sorted(setup_owners(conn))
    for function in functions:
        if function.public_executes:
            continue
        roles = [row[0] for row in conn.execute(_EXECUTING_ROLES.encode(), (allowed, function.oid)).fetchall()]
        if roles:
            problems.append(
                f"{_named(roles)} can execute {function.signature} (granted, directly or through a role they are "
                "members of), so they can emit an attribution message naming someone else: REVOKE EXECUTE ON "
                f"FUNCTION {function.signature} FROM <role> as a superuser (applications bind actors through "
                f"{SCHEMA}.bind_actor, granted by [capture] app_roles), or set [capture] attribution = \"open\"")
    if _one(conn, f"SELECT to_regprocedure('{SCHEMA}.emit_session()') IS NULL"):
        problems.append(f"{SCHEMA}.emit_session() is missing (no --setup yet, or one of an older auditlock): run "
                        "`auditlock capture --setup`")
    elif _one(conn, f"SELECT has_function_privilege('public', to_regprocedure('{BIND_ACTOR}'), 'EXECUTE')"):
        problems.append(f"{BIND_ACTOR} can be executed by PUBLIC, so any role can bind an application actor: "
                        f"REVOKE EXECUTE ON FUNCTION {BIND_ACTOR} FROM PUBLIC")
    return problems


def restriction_statements(conn: psycopg.Connection[Any], emitters: set[str]) -> tuple[list[str], list[str]]:
    """What `--setup` runs so only the setup role's functions (owned by `emitters`) and superusers can emit: a GRANT
    to each non-superuser owner first (its functions keep working), then the REVOKE from PUBLIC; and the notes of what
    this role may not do. Statements only for what is missing (a second run prints none)."""
    statements: list[str] = []
    fixes: list[str] = []  # what a superuser must run where this role may not
    broken: list[str] = []  # grants without which the definer functions cannot emit (every write would fail)
    supers = superusers(conn)
    me = str(_one(conn, "SELECT current_user"))
    owners = set()
    for function in emit_functions(conn):
        may = me in supers or bool(_one(conn, "SELECT pg_has_role(%s, 'USAGE')", (function.owner,)))
        lacking = [owner for owner in sorted(emitters - supers)
                   if not _directly_granted(conn, function.oid, owner)
                   and (function.public_executes or not _executes(conn, owner, function.oid))]
        grants = [f'GRANT EXECUTE ON FUNCTION {function.signature} TO "{owner}"' for owner in lacking]
        revoke = [f"REVOKE EXECUTE ON FUNCTION {function.signature} FROM PUBLIC"] if function.public_executes else []
        if may:
            statements += grants + revoke
        elif revoke:
            fixes += grants + revoke
            owners.add(function.owner)
        else:
            broken += grants
    notes = []
    if fixes:
        notes.append(
            f"attribution is forgeable: pg_logical_emit_message can be executed by PUBLIC and role {me!r} may not "
            f"revoke it (it belongs to {', '.join(sorted(owners))}); until it is revoked capture refuses to start "
            "with [capture] attribution = \"restricted\". Fix: run `auditlock capture --setup` once as a superuser, "
            f"or as one: {'; '.join(fixes)}. {FIX_MANAGED[0].upper()}{FIX_MANAGED[1:]}")
    if broken:
        notes.append(f"the {SCHEMA} functions cannot emit, so every write to a mapped table fails: their owner may "
                     f"not execute pg_logical_emit_message. Fix, as a superuser: {'; '.join(broken)}")
    return statements, notes


def _directly_granted(conn: psycopg.Connection[Any], oid: int, role: str) -> bool:
    return bool(_one(conn, "SELECT EXISTS (SELECT 1 FROM pg_proc p, aclexplode(p.proacl) x WHERE p.oid = %s AND "
                     "x.grantee = to_regrole(%s) AND x.privilege_type = 'EXECUTE')", (oid, f'"{role}"')))


def _executes(conn: psycopg.Connection[Any], role: str, oid: int) -> bool:
    return bool(_one(conn, "SELECT has_function_privilege(%s, %s::oid, 'EXECUTE')", (role, oid)))


def _named(roles: Sequence[str]) -> str:
    shown = ", ".join(repr(r) for r in roles[:MAX_NAMED_ROLES])
    more = len(roles) - MAX_NAMED_ROLES
    return f"roles {shown}" + (f" and {more} more" if more > 0 else "")


def _one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql.encode(), params).fetchone()
    return None if row is None else row[0]
