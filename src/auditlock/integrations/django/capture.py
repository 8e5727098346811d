"""Model saves, deletes and many-to-many changes of tracked models, from Django's own signals.

- `pre_save`: for an existing row, read its concrete columns (one SELECT) — the before-values, and what tells
  whether the save changes anything; stage the event and ask the writing core whether it would accept it
  (`EventCheck`: an unattributable actor, an oversized event, an unrouted type raise `EventError` here, before the
  database is written). `post_save`: `created` with the after-values, or `updated` with the allowlisted fields
  that changed; a save that changed no column writes no event.
- `pre_delete` stages `deleted` with the instance's allowlisted values (as loaded: `QuerySet.delete()` loads them
  fresh; for `obj.delete()` they are the object's); `post_delete` finishes it. Django sends these per row for
  `QuerySet.delete()` too, because receivers are connected.
- `m2m_changed` of an allowlisted many-to-many field: `updated` with `changes = {field: [ids before, ids after]}`,
  either side of the relation (`order.tags.add(t)` and `t.order_set.add(order)` alike). Deleting a row such a
  field points to (`tag.delete()`) is an `updated` of each owner that loses it: Django removes the link rows in
  the delete's cascade without `m2m_changed`.

Values are encoded (`encode_value`) when read, so later mutations of an object cannot change a staged event.
A value assigned as an expression (`order.total = F("total") + 1`, `Now()`) is known only once the database
computed it: `post_save` reads those columns back (one SELECT, same transaction) and records what was stored — the
instance keeps the expression until refreshed; the check in `pre_save` uses the stored value in its place. A naive
datetime of a `DateTimeField` under `USE_TZ` is recorded as the instant Django stores (made aware in the default
time zone), so assigning it again is no change. A tracked multi-table parent is recorded when an untracked child
class is saved (Django sends the save signals for the child only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, router
from django.db.models.fields.files import FieldFile
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import Signal
from django.utils import timezone
from django.utils.duration import duration_iso_string

from auditlock.errors import EventError
from auditlock.handler.encode import encode_value
from auditlock.integrations.django import m2m, transactions
from auditlock.integrations.django.runtime import TrackedModel, runtime

_STAGED = "_auditlock_staged_save"
_OLD_ROW = "_auditlock_old_row"
_STAGED_DELETE = "_auditlock_staged_delete"
_LINKS_REMOVED = "_auditlock_links_removed"
ID_PLACEHOLDER = "9" * 20  # a target id as wide as a 64-bit key, for checking an event before its key exists
_UID = "auditlock.integrations.django.capture"


def connect() -> None:
    """Connect the receivers (idempotent: fixed dispatch uids)."""
    pre_save.connect(_pre_save, dispatch_uid=f"{_UID}.pre_save", weak=False)
    post_save.connect(_post_save, dispatch_uid=f"{_UID}.post_save", weak=False)
    _run_first(post_save, f"{_UID}.post_save")
    pre_delete.connect(_pre_delete, dispatch_uid=f"{_UID}.pre_delete", weak=False)
    post_delete.connect(_post_delete, dispatch_uid=f"{_UID}.post_delete", weak=False)
    m2m_changed.connect(_m2m_changed, dispatch_uid=f"{_UID}.m2m", weak=False)


def _run_first(signal: Signal, dispatch_uid: str) -> None:
    """Move our receiver to the front of `signal`'s list: the save's statement has returned when `post_save` is
    sent, and the application's own receivers (connected earlier, by apps listed first) may save again — the
    same object (a slug filled in after the first save) or another tracked one. Marked done before they run, the
    save is not mistaken for a failed statement left behind, and its event comes before theirs."""
    with signal.lock:
        ours = [r for r in signal.receivers if r[0][0] == dispatch_uid]
        signal.receivers[:] = ours + [r for r in signal.receivers if r[0][0] != dispatch_uid]
        signal.sender_receivers_cache.clear()


def tracked_or_fenced(model: type[Any], *, parents: bool = False) -> TrackedModel | None:
    """The tracking of `model` (with `parents`, of a save or bulk write: else its nearest tracked multi-table
    parent's); `EventError` if it or its concrete model (or such a parent) is listed but cannot be recorded."""
    rt = runtime()
    fenced = rt.fenced_problem(model, parents=parents)
    if fenced is not None:
        raise EventError(f"auditlock cannot record changes of {model._meta.label}: {fenced}")
    return rt.tracked_write(model) if parents else rt.tracked(model)


def _pre_save(sender: type[models.Model], instance: models.Model, raw: bool = False, using: str | None = None,
              update_fields: Any = None, **_: Any) -> None:
    tracked = tracked_or_fenced(sender, parents=True)
    if tracked is None:
        return
    alias = using or router.db_for_write(sender, instance=instance)
    old = None if instance._state.adding or instance.pk is None else _old_row(sender, alias, instance.pk)
    setattr(instance, _OLD_ROW, old)
    # An expression (`F("total") + 1`, `Now()`) has no value before the database computes it: the stored value
    # stands in for it in the check (the event is written with the value read back after the save).
    stand_ins = {a: (old or {}).get(a) for a in _expression_columns(instance, tracked)}
    fields = _event_fields(tracked, _reader(instance, stand_ins), old, update_fields, instance)
    action = "created" if old is None else "updated"
    check_fields = {**fields, "target_id": str(instance.pk) if instance.pk is not None else ID_PLACEHOLDER}
    runtime().check.check(f"{tracked.prefix}.{action}", check_fields)
    setattr(instance, _STAGED, transactions.stage(alias, f"{tracked.prefix}.{action}", fields))


def _post_save(sender: type[models.Model], instance: models.Model, created: bool = False, using: str | None = None,
               update_fields: Any = None, **_: Any) -> None:
    staged: transactions.Staged | None = instance.__dict__.pop(_STAGED, None)
    tracked = runtime().tracked_write(sender)
    if staged is None or tracked is None:
        return
    alias = using or router.db_for_write(sender, instance=instance)
    old = instance.__dict__.pop(_OLD_ROW, None)
    stored = _read_back(sender, alias, instance.pk, _expression_columns(instance, tracked))
    values = _reader(instance, stored)
    if created:
        staged.event_type = f"{tracked.prefix}.created"
        staged.fields = {**_event_fields(tracked, values, None, None, instance), "target_id": str(instance.pk)}
    else:
        staged.event_type = f"{tracked.prefix}.updated"
        if not _changed_columns(sender, values, old, update_fields, tracked):
            transactions.discard(alias, staged)
            return
        staged.fields = {**_event_fields(tracked, values, old, update_fields, instance),
                         "target_id": str(instance.pk)}
    transactions.finish(alias, staged)


def _pre_delete(sender: type[models.Model], instance: models.Model, using: str | None = None, **_: Any) -> None:
    alias = using or router.db_for_write(sender, instance=instance)
    _check_link_removals(sender, instance, alias)
    tracked = tracked_or_fenced(sender)
    if tracked is None:
        return
    before = {name: _encoded(tracked, name, f.value_from_object(instance)) for name, f in tracked.fields.items()}
    fields = {"target_type": tracked.target_type, "target_id": str(instance.pk), "before": before, "payload": {}}
    runtime().check.check(f"{tracked.prefix}.deleted", fields)
    setattr(instance, _STAGED_DELETE, transactions.stage(alias, f"{tracked.prefix}.deleted", fields))


def _post_delete(sender: type[models.Model], instance: models.Model, using: str | None = None, **_: Any) -> None:
    alias = using or router.db_for_write(sender, instance=instance)
    staged: transactions.Staged | None = instance.__dict__.pop(_STAGED_DELETE, None)
    if staged is not None:
        transactions.finish(alias, staged)
    for write, owner, before, after in instance.__dict__.pop(_LINKS_REMOVED, []):
        write(alias, owner, before, after)


def _check_link_removals(sender: type[models.Model], instance: models.Model, alias: str) -> None:
    """A row a tracked many-to-many field points to is being deleted: each owner's set loses it (Django deletes
    the link rows in the cascade and sends no `m2m_changed`). Checked now, written in `post_delete`."""
    removals = []
    for tracked, field in _tracked_m2m_fields_to(sender):
        write = _m2m_writer(tracked, field.name)
        for owner, before in m2m.target_removed(field, instance.pk, alias).items():
            after = [pk for pk in before if pk != instance.pk]
            write(alias, owner, before, after, check=True)
            removals.append((write, owner, before, after))
    if removals:
        setattr(instance, _LINKS_REMOVED, removals)


def _tracked_m2m_fields_to(target: type[models.Model]) -> list[tuple[TrackedModel, models.ManyToManyField[Any, Any]]]:
    concrete = target._meta.concrete_model
    return [(tracked, field) for tracked in runtime().models.values() for field in tracked.m2m.values()
            if field.remote_field.model._meta.concrete_model is concrete]


def _m2m_changed(sender: type[models.Model], *, instance: models.Model, action: str, reverse: bool,
                 pk_set: set[Any] | None, using: str | None = None, **_: Any) -> None:
    for tracked, field in _tracked_m2m_fields(sender):
        m2m.follow(field, instance=instance, action=action, reverse=reverse, pk_set=pk_set, using=using,
                   write=_m2m_writer(tracked, field.name))


def _tracked_m2m_fields(through: type[models.Model]) -> list[tuple[TrackedModel, models.ManyToManyField[Any, Any]]]:
    rt = runtime()
    return [(tracked, field) for tracked in rt.models.values() for field in tracked.m2m.values()
            if field.remote_field.through is through]


def _m2m_writer(tracked: TrackedModel, name: str) -> m2m.ChangeWriter:
    def write(alias: str, owner_pk: Any, before: list[Any], after: list[Any], *, check: bool = False) -> None:
        fields = {"target_type": tracked.target_type, "target_id": str(owner_pk), "payload": {},
                  "before": {name: _encoded(tracked, name, before)}, "after": {name: _encoded(tracked, name, after)}}
        runtime().check.check(f"{tracked.prefix}.updated", fields)
        if not check:
            transactions.finish(alias, transactions.stage(alias, f"{tracked.prefix}.updated", fields))
    return write


# -- values -------------------------------------------------------------------------------------------------------


def _old_row(model: type[models.Model], alias: str, pk: Any) -> dict[str, Any] | None:
    attnames = [f.attname for f in model._meta.concrete_fields]
    return model._base_manager.using(alias).filter(pk=pk).values(*attnames).first()


Values = Callable[[str], Any]  # attname -> the value the save writes


def _reader(instance: models.Model, replaced: dict[str, Any]) -> Values:
    """The instance's values by attname, with `replaced` ones (expressions) taken from `replaced` instead."""
    return lambda attname: replaced[attname] if attname in replaced else getattr(instance, attname)


def _is_expression(value: Any) -> bool:
    return hasattr(value, "resolve_expression")


def _expression_columns(instance: models.Model, tracked: TrackedModel) -> list[str]:
    """The allowlisted attnames the instance holds an expression for (only loaded ones: no deferred loading)."""
    return [f.attname for f in tracked.fields.values() if _is_expression(instance.__dict__.get(f.attname))]


def _read_back(model: type[models.Model], alias: str, pk: Any, attnames: list[str]) -> dict[str, Any]:
    """The stored values of `attnames` just after the save (same transaction): what the expressions became."""
    if not attnames:
        return {}
    return model._base_manager.using(alias).filter(pk=pk).values(*attnames).first() or {}


def _event_fields(tracked: TrackedModel, values: Values, old: dict[str, Any] | None, update_fields: Any,
                  instance: models.Model) -> dict[str, Any]:
    fields: dict[str, Any] = {"target_type": tracked.target_type, "target_id": _pk_text(instance), "payload": {}}
    if old is None:
        fields["after"] = {name: _encoded(tracked, name, values(f.attname)) for name, f in tracked.fields.items()}
        return fields
    changed = _changed_columns(type(instance), values, old, update_fields, tracked)
    names = [name for name, f in tracked.fields.items() if f.attname in changed]
    fields["before"] = {name: _encoded(tracked, name, old[tracked.fields[name].attname]) for name in names}
    fields["after"] = {name: _encoded(tracked, name, values(tracked.fields[name].attname)) for name in names}
    return fields


def _changed_columns(model: type[models.Model], values: Values, old: dict[str, Any] | None,
                     update_fields: Any, tracked: TrackedModel) -> set[str]:
    """The attnames of the tracked model's row the save writes with a value different from the stored one (for a
    tracked parent saved through its child: the parent's columns only)."""
    if old is None:
        return set()
    written = {model._meta.get_field(n).attname for n in update_fields} if update_fields else set(old)
    written &= {f.attname for f in tracked.model._meta.concrete_fields}
    # get_field() looks attnames up too (`customer_id` → the `customer` ForeignKey): one dict lookup per column.
    return {attname for attname in written if attname in old
            and _differs(model._meta.get_field(attname), old[attname], values(attname))}


def _differs(field: models.Field[Any, Any], stored: Any, current: Any) -> bool:
    if _is_expression(current):
        return True  # known only once the database computed it (post_save reads it back)
    try:
        return bool(_as_stored(field, field.to_python(current)) != _as_stored(field, stored))
    except (ValidationError, TypeError, ValueError):
        return True  # a value the field cannot even read back is a change


def _as_stored(field: models.Field[Any, Any] | None, value: Any) -> Any:
    """A value as Django stores it: a naive datetime with USE_TZ in the default time zone (so the trail shows the
    instant written and a naive assignment of the stored instant is no change), a file (`FieldFile`) as its
    name ("" for none), a duration as ISO 8601 (`P0DT01H02M00S`, as Django's serializers write it)."""
    if (isinstance(field, models.DateTimeField) and isinstance(value, dt.datetime) and settings.USE_TZ
            and timezone.is_naive(value)):
        return timezone.make_aware(value, timezone.get_default_timezone())
    if isinstance(value, FieldFile):
        return value.name or ""  # Django stores str(file): "" for no file
    if isinstance(value, dt.timedelta):
        return duration_iso_string(value)
    return value


def _pk_text(instance: models.Model) -> str | None:
    return None if instance.pk is None else str(instance.pk)


def _encoded(tracked: TrackedModel, name: str, value: Any) -> Any:
    return encode_value(_as_stored(tracked.fields.get(name), value), f"{tracked.target_type}.{name}")
