"""What the SQLAlchemy integration reads from a session's unit of work: ORM changes at flush.

Values are read only for allowlisted column attributes, and encoded (`encode_value`) the moment they are read:
the pending event holds a JSON-native snapshot, later mutations of the object cannot change it, and a value
JSON cannot hold (NaN) raises `EventError` before the database is written. Nothing here emits: see
`auditlock.integrations.sqlalchemy`; bulk statements are `sqlalchemy_bulk`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import InstanceState, Mapper, Session

from auditlock.handler.encode import encode_value

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
        parts.append(value)
    return key_string(parts)


def key_string(parts: Sequence[Any]) -> str:
    """A primary key's values as a target id: one part as it is, composite parts joined with ':' (escaped)."""
    if len(parts) == 1:
        return str(parts[0])
    return ":".join(str(part).replace("%", "%25").replace(":", "%3A") for part in parts)


def _encoded(model: TrackedModel, key: str, value: Any) -> Any:
    return encode_value(value, f"{model.target_type}.{key}")
