"""Building an `auditlock/1` record from an event type and the call's fields.

Everything that depends only on (event type, target type) — validation of the type, the target's policy,
the allowed payload fields, the retention class — is computed once and cached as a `RecordPlan`; the per-event
work is the actor, the target id and the allowlisted values. Non-allowlisted values are never copied, so they
cannot reach the serialiser.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from auditlock.config.model import Config, TargetConfig
from auditlock.errors import EventError
from auditlock.handler import event_types
from auditlock.handler.context import ACTOR_TYPES, Actor, current_actor, infer_actor_type
from auditlock.handler.encode import encode_value, hmac_value
from auditlock.spool.format import SCHEMA

# The call arguments only an audit event has. An event carrying one is meant for the trail: if its type matches no
# `[events] include` pattern (a misspelt type), both adapters refuse it rather than drop it or log it raw.
AUDIT_ARGUMENTS = frozenset(
    {"actor_id", "actor_type", "actor_ip", "target_type", "target_id", "before", "after", "payload"}
)
# Keys of a call that describe the event itself; every other key is a payload candidate.
RESERVED_FIELDS = AUDIT_ARGUMENTS | {"event"}
_NO_TARGET = TargetConfig()
_PLAN_CACHE_MAX = 4096
_NAMES_SHOWN = 20
_SHOWN_MAX_CHARS = 100
ACTOR_ID_MAX_CHARS = 256
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_MODULES = sys.modules
_AS_IS = frozenset({str, bool, type(None)})  # payload values written as they are (outside hmac fields)
_ABSENT = object()  # a key missing from `before=`


@dataclass(frozen=True)
class RecordPlan:
    """What is fixed for one (event type, target type): policy, allowed fields, retention class."""

    target: TargetConfig
    payload_fields: frozenset[str]
    call_fields: frozenset[str]  # the payload fields a call may pass as keywords (not the reserved names)
    change_fields: frozenset[str]
    hmac_fields: frozenset[str]
    retention: str
    needs_justification: bool
    erasable: bool  # the target has erasable fields: the sealer sees the payload


class PayloadSealer(Protocol):
    """Seals a payload's erasable values (`auditlock.privacy.erasable.Sealer`, loaded only when configured)."""

    def seal(self, event_type: str, target: TargetConfig, target_type: str | None, target_id: str | None, *,
             fields: Mapping[str, Any], payload: dict[str, Any]) -> None:
        """Replace the erasable values of `payload` by their sealed form, in place."""


class RecordBuilder:
    """Turns `(event_type, fields)` into the ordered record the spool writer stamps and writes."""

    def __init__(self, config: Config, hmac_key: bytes, sealer: PayloadSealer | None = None, *,
                 hmac_key_id: str | None = None) -> None:
        self.config = config
        self._hmac_key = hmac_key
        self._hmac_key_id = hmac_key_id  # None: the legacy key (values without a key id)
        self._sealer = sealer
        self._service = config.service
        self._host = socket.gethostname()
        self._plans: dict[tuple[str, str | None], RecordPlan] = {}
        event_types.watch_standard_fields(self)

    def forget_plans(self) -> None:
        """Drop the cached plans (the standard fields changed); the next event of each type recomputes its plan."""
        self._plans.clear()

    def build(self, event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The record of an event, chain fields still empty; raises `EventError` on bad input."""
        target_type = fields.get("target_type")
        if target_type is not None and type(target_type) is not str:
            raise EventError(f"event {event_type!r}: target_type must be a non-empty string, not {target_type!r}")
        plan = self._plans.get((event_type, target_type)) if type(event_type) is str else None
        plan = plan or self._new_plan(event_type, target_type)
        actor_id, actor_type, actor_ip, run_id, request_id = _actor_of(event_type, fields)
        trace_id = span_id = None
        if "opentelemetry.trace" in _MODULES:  # only if the application imported OpenTelemetry (None: blocked)
            trace_id, span_id = _trace_ids()
        target_id = fields.get("target_id")
        if type(target_id) is not str or target_type is None:  # the common case (a str with its type) needs no call
            target_id = _target_id(event_type, target_type, target_id)
        payload = self._payload(event_type, fields, plan)
        if plan.erasable and self._sealer is not None:
            self._sealer.seal(event_type, plan.target, target_type, target_id, fields=fields, payload=payload)
        if run_id is not None:
            payload["job_run_id"] = run_id
        if request_id is not None:
            payload["request_id"] = request_id
        return {
            "schema": SCHEMA, "event_id": None, "event_type": event_type, "occurred_at": None,
            "actor_id": actor_id, "actor_type": actor_type, "actor_ip": actor_ip,
            "target_type": target_type, "target_id": target_id,
            "payload": payload,
            "service": self._service, "host": self._host, "retention": plan.retention,
            "trace_id": trace_id, "span_id": span_id,
        }

    def changes(self, event_type: str, target_type: str, before: Any, after: Any) -> dict[str, Any]:
        """`payload.changes` of an event of `event_type` on `target_type`, exactly as `build` writes it."""
        plan = self._plans.get((event_type, target_type)) or self._new_plan(event_type, target_type)
        return self._changes(event_type, before, after, plan)

    def _new_plan(self, event_type: str, target_type: str | None) -> RecordPlan:
        if not isinstance(event_type, str) or not event_types.EVENT_TYPE_PATTERN.match(event_type):
            raise EventError(
                f"event type {event_type!r} is not namespaced lowercase like 'order.updated' or 'auth.login_failed'"
            )
        if target_type == "":
            raise EventError(f"event {event_type!r}: target_type must be a non-empty string, not {target_type!r}")
        target = self._target(event_type, target_type) if target_type is not None else _NO_TARGET
        standard = event_types.STANDARD_FIELDS.get(event_type, frozenset())
        plan = RecordPlan(
            target=target, payload_fields=target.allowed | standard,
            call_fields=(target.allowed | standard) - RESERVED_FIELDS, change_fields=target.allowed,
            hmac_fields=target.hmac, retention=self.config.retention.class_for(event_type, target),
            needs_justification=event_type == event_types.DATA_ACCESSED and target.sensitive_reads,
            erasable=bool(target.erasable),
        )
        if len(self._plans) >= _PLAN_CACHE_MAX:
            self._plans.clear()
        self._plans[(event_type, target_type)] = plan
        return plan

    def _target(self, event_type: str, target_type: str) -> TargetConfig:
        # A target type without a section is a typo far more often than a choice: writing the event would file
        # it under a type no query looks for, with an empty payload. Declaring a type takes one (empty) section.
        target = self.config.targets.get(target_type)
        if target is None:
            section = f"[targets.{target_type[:_SHOWN_MAX_CHARS]}]"
            raise EventError(
                f"event {event_type!r}: target_type {shown(target_type)} has no {section} section in the config "
                f"({_configured(self.config.targets)}): fix the target_type if it is misspelt, or add {section} "
                "(with `fields = [...]`, the payload allowlist; it may be empty)"
            )
        return target

    def _payload(self, event_type: str, fields: Mapping[str, Any], plan: RecordPlan) -> dict[str, Any]:
        payload = {}
        explicit = fields.get("payload")
        if explicit is not None:
            allowed = plan.payload_fields
            for name, value in _mapping(event_type, "payload", explicit).items():
                if name in allowed:
                    payload[name] = self._value(plan, name, value, "payload")
        allowed = plan.call_fields
        hashed = plan.hmac_fields
        for name, value in fields.items():
            if name in allowed:
                kind = type(value)
                if not hashed and (kind is str or kind is bool or value is None):
                    payload[name] = value  # as it is (`_value`'s first case, without the call)
                else:
                    payload[name] = self._value(plan, name, value, "payload")
        before, after = fields.get("before"), fields.get("after")
        if before is not None or after is not None:
            payload["changes"] = self._changes(event_type, before, after, plan)
        if plan.needs_justification:
            _require_justification(event_type, fields, payload)
        return payload

    def _changes(self, event_type: str, before: Any, after: Any, plan: RecordPlan) -> dict[str, Any]:
        old_values = before if type(before) is dict else _mapping(event_type, "before", before)
        new_values = after if type(after) is dict else _mapping(event_type, "after", after)
        allowed, hashed = plan.change_fields, plan.hmac_fields
        changes = {}
        for name, new in new_values.items():
            if name in allowed:
                old = old_values.get(name, _ABSENT)
                if type(old) is type(new):  # unchanged: the same type and equal values (`1` -> `True` is a change)
                    try:
                        if not old != new:  # `!=` as always  # noqa: SIM202
                            continue
                    except RecursionError:
                        pass  # too deep (or self-referencing) to compare: a change, so that encoding refuses it
                        # with an EventError naming the field and the depth bound
                if old is _ABSENT:
                    old = None  # a key missing from `before=` is a change from None
                if hashed or type(old) not in _AS_IS or type(new) not in _AS_IS:
                    changes[name] = [self._value(plan, name, old, "payload.changes"),
                                     self._value(plan, name, new, "payload.changes")]
                else:
                    changes[name] = [old, new]  # as they are (`_value`'s first case, without the calls)
        if type(old_values) is not dict or type(new_values) is not dict or not old_values.keys() <= new_values.keys():
            for name, old in old_values.items():  # keys missing from `after=`: changes to None
                if name in allowed and name not in new_values:
                    changes[name] = [self._value(plan, name, old, "payload.changes"), None]
        return changes

    def _value(self, plan: RecordPlan, name: str, value: Any, where: str) -> Any:
        kind = type(value)
        if kind is str or kind is bool or value is None or (kind is int and _INT_MIN <= value <= _INT_MAX):
            encoded = value
        else:
            encoded = encode_value(value, f"{where}.{name}")
        return hmac_value(self._hmac_key, encoded, self._hmac_key_id) if name in plan.hmac_fields else encoded


ActorColumns = tuple[str, str, str | None, str | None, str | None]  # actor_id, actor_type, actor_ip, run id, request id
# The last bound actor that passed the checks with nothing overridden by the call, and its columns: the common
# case (every event of a request or job names no actor of its own) then costs no checks. `Actor` is frozen, and
# the pair is replaced whole, so a thread sees another's pair or its own, never half of one.
_last_bound: tuple[Actor | None, ActorColumns | None] = (None, None)


def _actor_of(event_type: str, fields: Mapping[str, Any]) -> ActorColumns:
    bound = current_actor()
    last, columns = _last_bound
    if (bound is last and columns is not None and "actor_id" not in fields and "actor_type" not in fields
            and "actor_ip" not in fields):
        return columns
    columns = _checked_actor(event_type, fields, bound)
    if bound is not None and "actor_id" not in fields and "actor_type" not in fields and "actor_ip" not in fields:
        _remember(bound, columns)
    return columns


def _remember(bound: Actor, columns: ActorColumns) -> None:
    global _last_bound  # noqa: PLW0603 - one reference, replaced whole
    _last_bound = (bound, columns)


def _checked_actor(event_type: str, fields: Mapping[str, Any], bound: Actor | None) -> ActorColumns:
    actor_id = fields.get("actor_id")
    run_id = request_id = None
    if bound is not None:
        request_id = bound.request_id  # the request the event happened in, whoever acts
    if actor_id is None and bound is not None:
        actor_id, actor_type, run_id = bound.id, fields.get("actor_type") or bound.type, bound.run_id
    else:
        actor_type = fields.get("actor_type") or (infer_actor_type(actor_id) if isinstance(actor_id, str) else None)
    if actor_id is None or actor_id == "":
        anonymous = " (the bound request is anonymous)" if bound is not None and bound.id is None else ""
        raise EventError(
            f"audit event {event_type!r} has no actor{anonymous}: wrap the code in "
            "`with auditlock.actor(\"user:82\")`, or pass actor_id= (user:<id>, svc:<service> or job:<name>)"
        )
    _check_actor_id(event_type, actor_id)
    if actor_type not in ACTOR_TYPES:
        raise EventError(f"event {event_type!r}: actor_type {actor_type!r} is not one of {', '.join(ACTOR_TYPES)}")
    actor_ip = fields.get("actor_ip", bound.ip if bound is not None else None)
    if actor_ip is not None and not isinstance(actor_ip, str):
        raise EventError(f"event {event_type!r}: actor_ip must be a string, not {actor_ip!r}")
    return actor_id, actor_type, actor_ip, run_id, request_id


def _check_actor_id(event_type: str, actor_id: object) -> None:
    # Actor ids are opaque `<kind>:<id>` strings (docs/events.md); only what would break a trail is refused.
    if not isinstance(actor_id, str):
        raise EventError(f"event {event_type!r}: actor_id must be a string like 'user:82', not {actor_id!r}")
    if len(actor_id) > ACTOR_ID_MAX_CHARS:
        raise EventError(f"event {event_type!r}: actor_id {actor_id[:40]!r}… is {len(actor_id)} characters, over "
                         f"{ACTOR_ID_MAX_CHARS}: pass the actor's id (user:<primary key>), not a description")
    if not actor_id.isprintable():
        raise EventError(f"event {event_type!r}: actor_id {actor_id!r} holds control characters (newline, tab, …): "
                         "pass a printable id like 'user:82'")


def _target_id(event_type: str, target_type: object, target_id: object) -> str | None:
    if target_id is None or type(target_id) is str:
        if target_id is not None and target_type is None:
            raise EventError(f"event {event_type!r}: target_id {target_id!r} given without target_type")
        return target_id
    if target_type is None:
        raise EventError(f"event {event_type!r}: target_id {target_id!r} given without target_type")
    if isinstance(target_id, bool) or not (isinstance(target_id, str | int) or type(target_id).__name__ == "UUID"):
        raise EventError(f"event {event_type!r}: target_id must be a str, int or UUID, not {target_id!r}")
    return str(target_id)


def shown(value: object) -> str:
    """`repr(value)` for an error message, cut to at most about 100 characters (values come from callers)."""
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX_CHARS else f"{text[:_SHOWN_MAX_CHARS]}…"


def _configured(targets: Mapping[str, TargetConfig]) -> str:
    if not targets:
        return "it has no [targets.*] section at all"
    names = sorted(targets)
    more = f", … {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return "configured target types: " + ", ".join(names[:_NAMES_SHOWN]) + more


def _mapping(event_type: str, name: str, value: Any) -> Mapping[str, Any]:
    if type(value) is dict or isinstance(value, Mapping):
        return value
    if value is None:
        return {}
    raise EventError(f"event {event_type!r}: {name}= must be a mapping of field names to values, not {value!r}")


def _require_justification(event_type: str, fields: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    justification = payload.get("justification")
    if not isinstance(justification, str) or not justification.strip():
        raise EventError(
            f"event {event_type!r} on target {fields.get('target_type')!r} (sensitive_reads = true) needs "
            "justification= saying why the data was read"
        )


def _trace_ids() -> tuple[str | None, str | None]:
    # OpenTelemetry is used only if the application imported it: no import cost for everyone else.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
