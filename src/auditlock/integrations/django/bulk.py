"""`QuerySet.update()`, `bulk_create()` and `bulk_update()` of tracked models: one bulk event per call.

Django sends no signal for them, so `install()` wraps the three `QuerySet` methods (once per process); calls on
models that are not tracked pass straight through. Each call stages `<prefix>.bulk_updated` / `.bulk_created`,
asks the writing core first (before the statement runs), and is written when the transaction commits — or as its
attempt form on rollback or failure — with:

- `columns`: the names of the columns written (`update()`'s keywords, `bulk_update()`'s `fields`, every concrete
  column for `bulk_create()`), never their values;
- `criteria`: for `update()`, the filter as field lookups without values (`status__exact AND total__gt`);
- `rowcount`: what Django returned (rows matched for `update()`/`bulk_update()`, objects for `bulk_create()`);
- `on_conflict`: `bulk_create(ignore_conflicts=True)` → "ignore" (the rows that conflicted were skipped; Django
  learns no keys: `ids_unknown`), `update_conflicts=True` → "update" (they were updated; `ids` lists both kinds);
- `ids`: the primary keys — for `update()` read just before the statement in the same transaction (rows that a
  concurrent transaction makes match in between are not listed), for the others the objects' keys — at most
  `BULK_IDS_MAX` (`ids_truncated`); `ids_unknown` when `bulk_create()` could not learn the keys (a database
  without RETURNING).

A call made by another audited call (`bulk_update()` runs `update()` per batch) is covered by the outer call's
event and not recorded again. A subclass's call records as the model's nearest tracked multi-table parent when the
subclass itself is not tracked (`capture`). Django's own `update()` for `on_delete=SET_NULL`/`SET_DEFAULT`/`SET()`
of a deleted row's referrers comes through here too: a `bulk_updated` event (criteria `<fk>__in`).

`QuerySet.delete()` needs no wrapping: with receivers connected Django loads the rows and sends `pre_delete` /
`post_delete` per row, so each is a `deleted` event with its before-values.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.db import models
from django.db.models.lookups import Lookup
from django.db.models.sql.where import WhereNode

from auditlock.integrations.django import transactions
from auditlock.integrations.django.capture import tracked_or_fenced
from auditlock.integrations.django.runtime import TrackedModel, runtime
from auditlock.integrations.orm_events import BULK_IDS_MAX, fit_ids

_INSTALLED = "_auditlock_bulk_wrapped"
# Inside an audited call: `bulk_update()` runs its batches through `update()`, which the call's own event covers.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("auditlock_django_bulk_inside", default=False)


def install() -> None:
    """Wrap `QuerySet.update`, `bulk_create` and `bulk_update` (idempotent)."""
    queryset = models.QuerySet
    if getattr(queryset, _INSTALLED, False):
        return
    queryset.update = _wrapped(queryset.update, _update_event)
    queryset.bulk_create = _wrapped(queryset.bulk_create, _create_event, objs_first=True)
    queryset.bulk_update = _wrapped(queryset.bulk_update, _bulk_update_event, objs_first=True)
    setattr(queryset, _INSTALLED, True)


Describe = Callable[..., tuple[str, dict[str, Any], Callable[[Any], tuple[int, list[str], bool]]]]


def _wrapped(method: Callable[..., Any], describe: Describe, *, objs_first: bool = False) -> Callable[..., Any]:
    @functools.wraps(method)
    def audited(self: models.QuerySet[Any], *args: Any, **kwargs: Any) -> Any:
        tracked = None if _inside.get() else tracked_or_fenced(self.model, parents=True)
        if tracked is None:
            return method(self, *args, **kwargs)
        if objs_first and args:
            args = (list(args[0]), *args[1:])  # an iterator of objects is read once, by us and Django alike
        action, payload, outcome = describe(self, tracked, *args, **kwargs)
        event_type = f"{tracked.prefix}.{action}"
        fields = {"target_type": tracked.target_type, "payload": payload}
        runtime().check.check(event_type, {**fields, "payload": {**payload, "rowcount": 2**63 - 1}})
        staged = transactions.stage(self.db, event_type, fields)
        token = _inside.set(True)
        try:
            result = method(self, *args, **kwargs)
        except BaseException as exc:
            transactions.fail(self.db, staged, exc)
            raise
        finally:
            _inside.reset(token)
        rowcount, ids, ids_unknown = outcome(result)
        payload["rowcount"] = rowcount
        if ids_unknown:
            payload["ids_unknown"] = True
        fit_ids(payload, ids, lambda: _accepted(event_type, fields))
        transactions.finish(self.db, staged)
        return result
    return audited


def _accepted(event_type: str, fields: dict[str, Any]) -> bool:
    try:
        runtime().check.check(event_type, fields)
    except Exception:
        return False
    return True


def _update_event(queryset: models.QuerySet[Any], tracked: TrackedModel, **values: Any) -> tuple[
        str, dict[str, Any], Callable[[Any], tuple[int, list[str], bool]]]:
    reading = queryset.all()
    reading.query.select_for_update = False  # a plain read: FOR UPDATE fails outside a transaction, update() not
    ids = [str(pk) for pk in reading.values_list("pk", flat=True)[: BULK_IDS_MAX + 1]]
    payload = {"columns": sorted(values), "criteria": criteria(queryset.query.where) or "TRUE"}
    return "bulk_updated", payload, lambda rows: (int(rows), ids, False)


Outcome = Callable[[Any], tuple[int, list[str], bool]]  # Django's return value -> (rowcount, ids, ids_unknown)


def _create_event(queryset: models.QuerySet[Any], tracked: TrackedModel, objs: Iterable[models.Model],
                  *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any], Outcome]:
    columns = sorted(f.name for f in tracked.model._meta.concrete_fields)
    payload: dict[str, Any] = {"columns": columns}
    # bulk_create(objs, batch_size=None, ignore_conflicts=False, update_conflicts=False, ...)
    ignore_conflicts = kwargs.get("ignore_conflicts", args[1] if len(args) > 1 else False)
    update_conflicts = kwargs.get("update_conflicts", args[2] if len(args) > 2 else False)
    if ignore_conflicts or update_conflicts:  # some rows may have been skipped / updated rather than inserted
        payload["on_conflict"] = "update" if update_conflicts else "ignore"

    def outcome(created: list[models.Model]) -> tuple[int, list[str], bool]:
        keys = [obj.pk for obj in created]
        return len(created), [str(k) for k in keys if k is not None], any(k is None for k in keys)
    return "bulk_created", payload, outcome


def _bulk_update_event(queryset: models.QuerySet[Any], tracked: TrackedModel, objs: Iterable[models.Model],
                       fields: Iterable[str], *args: Any, **kwargs: Any) -> tuple[
                           str, dict[str, Any], Callable[[Any], tuple[int, list[str], bool]]]:
    ids = [str(obj.pk) for obj in objs]
    return "bulk_updated", {"columns": sorted(fields)}, lambda rows: (int(rows or 0), ids, False)


def criteria(node: WhereNode) -> str:
    """A WHERE clause as field lookups and connectors, without any value (`status__exact AND total__gt`)."""
    parts = []
    for child in node.children:
        if isinstance(child, WhereNode):
            inner = criteria(child)
            parts.append(f"({inner})" if len(child.children) > 1 else inner)
        elif isinstance(child, Lookup):
            target = getattr(child.lhs, "target", None)
            parts.append(f"{getattr(target, 'name', '?')}__{child.lookup_name}")
        else:
            parts.append("?")
    text = f" {node.connector} ".join(parts)
    return f"NOT ({text})" if node.negated else text
