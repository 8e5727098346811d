"""What the SQLAlchemy integration reads from a session: ORM changes at flush, and bulk DML statements.

Values are read only for allowlisted column attributes, and encoded (`encode_value`) the moment they are read:
the pending event holds a JSON-native snapshot, later mutations of the object cannot change it, and a value
JSON cannot hold (NaN) raises `EventError` before the database is written. Nothing here emits: see
`auditlock.integrations.sqlalchemy`.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import CompileError
from sqlalchemy.orm import InstanceState, Mapper, ORMExecuteState, Session
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql.elements import BindParameter, ClauseElement

from auditlock.handler.encode import encode_value

# Payload fields the integration itself writes (registered as standard fields of its event types).
ATTEMPT_FIELDS = frozenset({"outcome", "error"})
BULK_FIELDS = frozenset({"criteria", "columns", "rowcount"})
_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")
_NOT_LOADED = object()

ModelLookup = Callable[[type[Any]], "TrackedModel | None"]


@dataclass(frozen=True)
class TrackedModel:
    """How one mapped class is audited: its target type, event type prefix and allowlisted attribute keys."""

    target_type: str
    prefix: str
    fields: frozenset[str]
    mapper: Mapper[Any]


@dataclass
class PendingEvent:
    """An event collected in a transaction, emitted at its end: `<prefix>.<action>` or its attempt form."""

    model: TrackedModel
    action: str  # created | updated | deleted | bulk_created | bulk_updated | bulk_deleted
    target_id: str | None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


# -- ORM unit of work -----------------------------------------------------------------------------------------


def flush_changes(session: Session, model_of: ModelLookup,
                  loaded: Mapping[InstanceState[Any], dict[str, Any]]) -> list[PendingEvent]:
    """Events for the tracked objects of the flush in progress (`before_flush` / `after_flush`)."""
    events = []
    for obj in session.new:
        if (model := model_of(type(obj))) is not None:
            state = sa_inspect(obj)
            after = _allowlisted_values(model, state.dict, {})
            events.append(PendingEvent(model, "created", target_id(model, state), after=after))
    for obj in session.dirty:
        if (model := model_of(type(obj))) is not None and session.is_modified(obj, include_collections=False):
            state = sa_inspect(obj)
            before, after = _changed_values(model, state, loaded.get(state, {}))
            events.append(PendingEvent(model, "updated", target_id(model, state), before=before, after=after))
    for obj in session.deleted:
        if (model := model_of(type(obj))) is not None:
            state = sa_inspect(obj)
            before = _allowlisted_values(model, state.dict, loaded.get(state, {}))
            events.append(PendingEvent(model, "deleted", target_id(model, state), before=before))
    return events


def _allowlisted_values(model: TrackedModel, held: Mapping[str, Any], loaded: Mapping[str, Any]) -> dict[str, Any]:
    """The allowlisted columns the object holds (else what `before_flush` read), encoded; others are not read."""
    values = {}
    for key in model.fields:
        if key in held:
            values[key] = _encoded(model, key, held[key])
        elif key in loaded:
            values[key] = _encoded(model, key, loaded[key])
    return values


def _changed_values(model: TrackedModel, state: InstanceState[Any],
                    loaded: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    before, after = {}, {}
    for key in model.fields:
        history = state.attrs[key].history  # never loads
        if history.has_changes():
            old = history.deleted[0] if history.deleted else loaded.get(key)
            before[key] = _encoded(model, key, old)
            after[key] = _encoded(model, key, history.added[0] if history.added else None)
    return before, after


def load_unknown_before(session: Session, model_of: ModelLookup) -> dict[
        InstanceState[Any], dict[str, Any]]:
    """Old values the session does not hold (an attribute set while expired, an expired column of a changed or
    deleted object).

    Read with one SELECT per such object in `before_flush`, while the database still has them.
    """
    loaded = {}
    for obj, deleting in [*((o, False) for o in session.dirty), *((o, True) for o in session.deleted)]:
        model = model_of(type(obj))
        state = sa_inspect(obj)
        if model is None or state.identity is None:
            continue
        if not deleting and not session.is_modified(obj, include_collections=False):
            continue
        keys = [key for key in model.fields if _before_unknown(state, key, deleting)]
        if keys:
            loaded[state] = _select_row(session, model, state.identity, keys)
    return loaded


def _before_unknown(state: InstanceState[Any], key: str, deleting: bool) -> bool:
    # Unloaded columns are read too: the flush itself may still change them (a foreign key set from a
    # relationship), and then only this read knows their old value.
    if key not in state.dict:
        return True
    history = state.attrs[key].history
    return not deleting and history.has_changes() and not history.deleted


def _select_row(session: Session, model: TrackedModel, identity: tuple[Any, ...], keys: list[str]) -> dict[
        str, Any]:
    entity = model.mapper.class_
    criteria = [column == value for column, value in zip(model.mapper.primary_key, identity, strict=True)]
    with session.no_autoflush:
        row = session.execute(select(*(getattr(entity, key) for key in keys)).where(*criteria)).one_or_none()
    return {} if row is None else dict(zip(keys, row, strict=True))


def target_id(model: TrackedModel, state: InstanceState[Any]) -> str | None:
    """The primary key as a string; composite keys joined with ':' (parts escaped: '%' -> %25, ':' -> %3A)."""
    identity = state.identity
    parts = []
    for index, column in enumerate(model.mapper.primary_key):
        value = state.dict.get(model.mapper.get_property_by_column(column).key, _NOT_LOADED)
        if value is _NOT_LOADED or value is None:
            value = identity[index] if identity is not None else None
        if value is None:
            return None  # not yet assigned (a failed INSERT of an autoincrement key)
        parts.append(str(value))
    if len(parts) == 1:
        return parts[0]
    return ":".join(part.replace("%", "%25").replace(":", "%3A") for part in parts)


def _encoded(model: TrackedModel, key: str, value: Any) -> Any:
    return encode_value(value, f"{model.target_type}.{key}")


# -- bulk statements through the session ----------------------------------------------------------------------


def bulk_action(state: ORMExecuteState) -> str | None:
    """`bulk_created` / `bulk_updated` / `bulk_deleted` for an INSERT / UPDATE / DELETE statement, else None."""
    if state.is_update:
        return "bulk_updated"
    if state.is_delete:
        return "bulk_deleted"
    if state.is_insert:
        return "bulk_created"
    return None


def statement_model(state: ORMExecuteState, model_of: ModelLookup,
                    tables: Mapping[Any, TrackedModel]) -> TrackedModel | None:
    """The tracked model a DML statement writes: its ORM entity, or the mapped table of a Core statement."""
    mapper = state.bind_mapper
    if mapper is not None:
        return model_of(mapper.class_)
    return tables.get(getattr(state.statement, "table", None))


def describe_statement(state: ORMExecuteState, model: TrackedModel, action: str) -> dict[str, Any]:
    """criteria (WHERE as SQL with parameter names), the written column names, and allowlisted literal values."""
    statement = state.statement
    payload: dict[str, Any] = {}
    parameter_sets = _parameter_sets(state.parameters)
    if action != "bulk_created":
        payload["criteria"] = _criteria(state, parameter_sets)
    values = _statement_values(statement)
    names = {_attribute_key(model.mapper, key) for key in values}
    if not values:  # ORM bulk INSERT / UPDATE by primary key: the parameter sets name the columns
        for params in parameter_sets:
            names.update(_attribute_key(model.mapper, key) for key in params)
        if action == "bulk_updated":
            names.difference_update(_primary_key_names(model.mapper))
    payload["columns"] = sorted(names)
    for key, value in values.items():
        name = _attribute_key(model.mapper, key)
        if name in model.fields and _is_literal(value):
            payload.setdefault(name, _encoded(model, name, value.value))
    return payload


def _is_literal(value: Any) -> bool:
    """A value written into the statement, not one bound at execution (`bindparam("x")`) or computed by SQL."""
    return isinstance(value, BindParameter) and value.callable is None and not value.required


def rowcount_of(result: Result[Any], state: ORMExecuteState, action: str) -> int | None:
    """Rows the statement affected; None when the driver cannot tell (executemany UPDATE/DELETE by key)."""
    if isinstance(result, CursorResult) and result.rowcount >= 0:
        return result.rowcount
    if action == "bulk_created":
        return len(_parameter_sets(state.parameters)) or None
    return None


def _criteria(state: ORMExecuteState, parameter_sets: list[Mapping[str, Any]]) -> str | None:
    where: ClauseElement | None = getattr(state.statement, "whereclause", None)
    if where is None:
        return f"primary key of each of {len(parameter_sets)} parameter sets" if parameter_sets else None
    try:
        text = str(where)  # the default dialect renders binds as :name, whatever the database
    except CompileError:
        text = str(where.compile(dialect=state.session.get_bind().dialect))
    return _POSTCOMPILE.sub(r":\1", text)


def _statement_values(statement: Any) -> dict[Any, Any]:
    # No public accessor exists for the SET / VALUES clause; `_values` and `_ordered_values` are what the ORM
    # itself reads (stable across 1.4-2.1). Multi-row VALUES lists contribute their column names only.
    values = dict(getattr(statement, "_values", None) or {})
    values.update(getattr(statement, "_ordered_values", None) or ())
    multi = getattr(statement, "_multi_values", None) or ()
    for rows in multi:
        for row in rows:
            if isinstance(row, Mapping):
                values.update(dict.fromkeys(row))
    return values


def _parameter_sets(parameters: Any) -> list[Mapping[str, Any]]:
    if isinstance(parameters, Mapping):
        return [parameters]
    if isinstance(parameters, Iterable) and not isinstance(parameters, str | bytes):
        return [p for p in parameters if isinstance(p, Mapping)]
    return []


def _attribute_key(mapper: Mapper[Any], key: Any) -> str:
    """The mapped attribute name of a SET/VALUES key (an attribute, a Column, or a column key string)."""
    column = key if not isinstance(key, str) else mapper.local_table.c.get(key)
    if column is None:
        return str(key)
    try:
        return mapper.get_property_by_column(column).key
    except UnmappedColumnError:
        return str(getattr(column, "key", column))


def _primary_key_names(mapper: Mapper[Any]) -> set[str]:
    return {mapper.get_property_by_column(column).key for column in mapper.primary_key}
