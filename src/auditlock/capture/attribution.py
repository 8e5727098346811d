"""Who made a captured change: the messages a transaction carries in its own WAL.

Two kinds of transactional logical decoding messages (`pg_logical_emit_message(true, prefix, content)`), decoded in
the transaction's order, before the rows they describe:

    auditlock.session  {"role", "application_name", "client_addr"}     `auditlock_capture.emit_session()`, called by
                                                                          the statement trigger `--setup` installs
                                                                          (once per transaction, as the caller)
    auditlock.actor    {"actor_id", "actor_type", "actor_ip", "request_id", "job_run_id", "role"}
                                                                          `auditlock_capture.bind_actor(...)`, called
                                                                          by `integrations.postgres.bind_transaction`

A row is attributed to the application actor bound before it in its transaction, else to the database session
(`actor_type = "db"`, `actor_id = "db:<session_user>"`, the client address as `actor_ip`), else to `db:unknown`
with an `attribution_problem` saying no session message came (the trigger missing, or its marker set by hand for
the transaction: a role proving no one). Never dropped. `db_role` is the session message's role, else the role that
bound the actor.

Both functions are SECURITY DEFINER and compute the roles themselves; with restricted attribution (the default,
`capture.privileges`) no other role can execute `pg_logical_emit_message`, so a session message names the role that
wrote and an actor message the role that bound it. Restricted attribution also checks that role (defence in depth:
`trusted_roles`, the `[capture] app_roles` with the superusers and the setup role): an actor message without a role,
or bound by another role (a member of an application role, say), is ignored and named. With `attribution = "open"`
any role that writes a mapped table may have emitted any message (PostgreSQL's default EXECUTE for PUBLIC): the
attribution is then the database's word for honest sessions only. The content is hostile either way: bounded,
parsed strictly, and a bad one is recorded as `payload.attribution_problem`, never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from auditlock.capture.pgoutput import Message
from auditlock.handler.context import ACTOR_TYPES

SESSION_PREFIX = "auditlock.session"
ACTOR_PREFIX = "auditlock.actor"
DDL_PREFIX = "auditlock.ddl"
MAX_MESSAGE_BYTES = 4096
MAX_VALUE_CHARS = 256
UNKNOWN_ACTOR = "db:unknown"
NO_SESSION = ("no auditlock.session message came before this change: the session trigger is missing (run `auditlock "
              "capture --setup`) or its marker was set by hand for the transaction, so the writing role is unproven")
_SESSION_KEYS = ("role", "application_name", "client_addr")
_ACTOR_KEYS = ("actor_id", "actor_type", "actor_ip", "request_id", "job_run_id", "role")


@dataclass
class Attribution:
    """What a transaction has said about who is acting, so far."""

    trusted_roles: frozenset[str] | None = None  # who may bind an actor; None: anyone (attribution = "open")
    session: dict[str, str] = field(default_factory=dict)
    bound: dict[str, str] | None = None
    problem: str | None = None

    def note(self, message: Message) -> dict[str, str] | None:
        """Take in one message; returns the parsed content of a DDL message (for its own event), else None."""
        if message.prefix == SESSION_PREFIX:
            parsed = self._parse(message, _SESSION_KEYS)
            if parsed is not None:
                self.session = parsed
        elif message.prefix == ACTOR_PREFIX:
            parsed = self._parse(message, _ACTOR_KEYS)
            if parsed is not None and self._valid_actor(parsed):
                self.bound = parsed
        elif message.prefix == DDL_PREFIX:
            return self._parse(message, ("role", "command", "object", "oid", "application_name", "client_addr"))
        return None

    def fields(self) -> dict[str, Any]:
        """The actor fields and attribution payload fields of the next row."""
        session = self.session
        out: dict[str, Any] = {}
        role = session.get("role") or (self.bound or {}).get("role")
        if role:
            out["db_role"] = role
        if session.get("application_name"):
            out["application_name"] = session["application_name"]
        if self.bound is not None:
            bound = self.bound
            out["actor_id"] = bound["actor_id"]
            out["actor_type"] = bound.get("actor_type") or None
            out["actor_ip"] = bound.get("actor_ip") or session.get("client_addr") or None
            for key in ("request_id", "job_run_id"):
                if bound.get(key):
                    out[key] = bound[key]
        else:
            out["actor_id"] = f"db:{session['role']}" if session.get("role") else UNKNOWN_ACTOR
            out["actor_type"] = "db"
            out["actor_ip"] = session.get("client_addr") or None
        problems = [p for p in (None if session else NO_SESSION, self.problem) if p is not None]
        if problems:
            out["attribution_problem"] = "; ".join(problems)
        return {k: v for k, v in out.items() if v is not None}

    def _parse(self, message: Message, keys: tuple[str, ...]) -> dict[str, str] | None:
        if len(message.content) > MAX_MESSAGE_BYTES:
            self.problem = (f"{message.prefix} message of {len(message.content)} bytes ignored "
                            f"(over {MAX_MESSAGE_BYTES})")
            return None
        try:
            content = orjson.loads(message.content)
        except orjson.JSONDecodeError:
            self.problem = f"{message.prefix} message ignored: not JSON"
            return None
        if not isinstance(content, dict):
            self.problem = f"{message.prefix} message ignored: not a JSON object"
            return None
        parsed = {}
        for key in keys:
            value = content.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS or not value.isprintable():
                self.problem = f"{message.prefix} message ignored: {key} is not a short printable string"
                return None
            parsed[key] = value
        return parsed

    def _valid_actor(self, parsed: dict[str, str]) -> bool:
        if not parsed.get("actor_id"):
            self.problem = f"{ACTOR_PREFIX} message ignored: no actor_id"
            return False
        kind = parsed.get("actor_type")
        if kind is not None and kind not in ACTOR_TYPES:
            self.problem = f"{ACTOR_PREFIX} message ignored: actor_type {kind!r} is not one of {', '.join(ACTOR_TYPES)}"
            return False
        trusted = self.trusted_roles
        if trusted is not None and parsed.get("role") not in trusted:
            role = parsed.get("role")
            self.problem = (f"{ACTOR_PREFIX} message ignored: " + (
                f"bound by role {role!r}, which is not in [capture] app_roles" if role else
                "it names no role, so auditlock_capture.bind_actor did not emit it"))
            return False
        return True
