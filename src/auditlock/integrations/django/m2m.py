"""Many-to-many changes, from either side of the relation, as (owner, ids before, ids after) per owner.

`m2m_changed` is sent with the instance whose manager was used: the field's own model (`order.tags.add(t)`,
`reverse=False`) or the other side (`tag.order_set.add(order)`, `reverse=True`). Either way the *owners* — rows
of the field's model whose set changed — are found in `pre_*` (the instance, the given pks, or for a reverse
`clear()` the through-table rows pointing at the instance), their sets read before and after (one query each),
and the writer told each owner's two sets. In `pre_*` the writer is asked with the predicted after-set and
`check=True` (write nothing, raise what the write would raise), so a refused event stops the change before the
database is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import models, router

ChangeWriter = Callable[..., None]  # (alias, owner_pk, before, after, *, check=False)

_pending = threading.local()


def follow(field: models.ManyToManyField[Any, Any], *, instance: models.Model, action: str, reverse: bool,
           pk_set: set[Any] | None, using: str | None, write: ChangeWriter) -> None:
    """Handle one `m2m_changed` signal for `field`."""
    alias = using or router.db_for_write(field.model, instance=instance)
    key = (id(field), id(instance), action.partition("_")[2])
    if action.startswith("pre_"):
        owners = _owners(field, instance, reverse, pk_set, alias)
        before = {owner: _related_ids(field, owner, alias) for owner in owners}
        for owner, ids in before.items():
            write(alias, owner, ids, _predicted(ids, action, reverse, pk_set, instance), check=True)
        _store(key, before)
    elif action.startswith("post_"):
        for owner, ids in _take(key).items():
            after = _related_ids(field, owner, alias)
            if after != ids:
                write(alias, owner, ids, after)


def target_removed(field: models.ManyToManyField[Any, Any], target_pk: Any, alias: str) -> dict[Any, list[Any]]:
    """The related-id sets (before) of the owners linked to a row of the field's target model about to be
    deleted: Django removes those link rows in the delete's cascade without sending `m2m_changed`."""
    through = field.remote_field.through
    if not through._meta.auto_created:
        return {}  # rows of an explicit through model are that model's own rows
    owners = _owners(field, _Row(target_pk), True, None, alias)
    return {owner: _related_ids(field, owner, alias) for owner in owners}


class _Row:
    """Stands in for an instance where only its key is needed."""

    def __init__(self, pk: Any) -> None:
        self.pk = pk


def _owners(field: models.ManyToManyField[Any, Any], instance: Any, reverse: bool,
            pk_set: set[Any] | None, alias: str) -> list[Any]:
    if not reverse:
        return [instance.pk]
    if pk_set is not None:
        return sorted(pk_set, key=str)
    through = field.remote_field.through
    return sorted(through._default_manager.using(alias)
                  .filter(**{field.m2m_reverse_field_name(): instance.pk})
                  .values_list(field.m2m_field_name(), flat=True), key=str)


def _related_ids(field: models.ManyToManyField[Any, Any], owner_pk: Any, alias: str) -> list[Any]:
    through = field.remote_field.through
    ids = (through._default_manager.using(alias)
           .filter(**{field.m2m_field_name(): owner_pk})
           .values_list(field.m2m_reverse_field_name(), flat=True))
    return sorted(ids, key=str)


def _predicted(ids: list[Any], action: str, reverse: bool, pk_set: set[Any] | None,
               instance: models.Model) -> list[Any]:
    """The owner's set after the change, as the signal announces it."""
    if action == "pre_clear":
        return sorted(set(ids) - {instance.pk}, key=str) if reverse else []
    changed = {instance.pk} if reverse else set(pk_set or ())
    if action == "pre_add":
        return sorted(set(ids) | changed, key=str)
    return sorted(set(ids) - changed, key=str)


def _store(key: tuple[int, int, str], before: dict[Any, list[Any]]) -> None:
    if not hasattr(_pending, "sets"):
        _pending.sets = {}
    _pending.sets[key] = before


def _take(key: tuple[int, int, str]) -> dict[Any, list[Any]]:
    sets: dict[tuple[int, int, str], dict[Any, list[Any]]] = getattr(_pending, "sets", {})
    return sets.pop(key, {})
