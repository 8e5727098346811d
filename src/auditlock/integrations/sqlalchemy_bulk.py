"""What the SQLAlchemy integration reads from a bulk INSERT / UPDATE / DELETE run through the session.

The statement is described without reading its rows: criteria (the WHERE clause with parameter names), the
written column names, allowlisted literal values, the row count. An UPDATE or DELETE also names the rows it
affected — their primary keys as target ids — where the statement can return them: the primary key is added to
it with `return_defaults()` (RETURNING on PostgreSQL, SQLite >= 3.35, MariaDB DELETE), the same mechanism
SQLAlchemy uses for `synchronize_session="fetch"`. Where it cannot, the event says why the ids are unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import CompileError
from sqlalchemy.orm import Mapper, ORMExecuteState
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql.elements import BindParameter, ClauseElement

from auditlock.handler.encode import encode_value
from auditlock.integrations.sqlalchemy_capture import ModelLookup, TrackedModel, key_string

# Payload fields the integration itself writes on bulk events (registered as standard fields of their types).
BULK_IDS_OPTION = "auditlock_bulk_ids"  # execution option: False runs the statement without RETURNING
_KEYS_ADDED = "auditlock_bulk_ids_added"  # marks a statement whose RETURNING this integration added
_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")


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


# -- which rows: primary keys through RETURNING ---------------------------------------------------------------


@dataclass(frozen=True)
class KeyPlan:
    """How a bulk UPDATE / DELETE learns the primary keys of its rows: the statement to run instead (RETURNING
    of the key added; None: as it is), or why the ids stay unknown (None: they are read from the result)."""

    statement: Any | None
    unknown: str | None = None

    def placeholder(self) -> dict[str, Any]:
        """The ids fields as they are before execution (an empty list where keys will be returned)."""
        if self.unknown is not None:
            return {"ids": None, "ids_unknown": self.unknown}
        return {"ids": [], "ids_truncated": False}


def plan_keys(state: ORMExecuteState, model: TrackedModel, action: str) -> KeyPlan | None:
    """The `KeyPlan` of an UPDATE / DELETE (None for an INSERT: its ids are not recorded)."""
    if action == "bulk_created":
        return None
    if state.execution_options.get(_KEYS_ADDED):
        return KeyPlan(None)  # another tracker on this session added them: read the same rows
    unknown = _why_ids_unknown(state, model, action)
    if unknown is not None:
        return KeyPlan(None, unknown)
    statement: Any = state.statement
    return KeyPlan(statement.return_defaults(*model.mapper.primary_key).execution_options(**{_KEYS_ADDED: True}))


def _why_ids_unknown(state: ORMExecuteState, model: TrackedModel, action: str) -> str | None:
    statement: Any = state.statement
    if not state.execution_options.get(BULK_IDS_OPTION, True):
        return "disabled"
    if len(statement.exported_columns) or getattr(statement, "_return_defaults", False):
        return "statement_returning"  # its RETURNING rows are the caller's; never consumed here
    if state.parameters is not None and not isinstance(state.parameters, Mapping):
        return "parameter_sets"  # executemany: drivers return no rows for it
    if not _can_return(state, model, action):
        return "no_returning"
    return None


def _can_return(state: ORMExecuteState, model: TrackedModel, action: str) -> bool:
    dialect = state.session.get_bind(**state.bind_arguments).dialect
    table = model.mapper.local_table
    if any(column.table is not table for column in model.mapper.primary_key):
        return False  # the key lives in another table (joined inheritance)
    if action == "bulk_updated":
        supported, multi_table = dialect.update_returning, dialect.update_returning_multifrom
    else:
        supported, multi_table = dialect.delete_returning, dialect.delete_returning_multifrom
    if not (supported and getattr(table, "implicit_returning", False)):
        return False
    return bool(multi_table) or not _names_other_tables(state)


def _names_other_tables(state: ORMExecuteState) -> bool:
    """Whether the WHERE clause makes it an UPDATE..FROM / DELETE..USING (SQLAlchemy's own test, on its FROMs)."""
    statement: Any = state.statement
    return any(not (item.is_derived_from(statement.table) or statement.table.is_derived_from(item))
               for criterion in statement._where_criteria for item in criterion._from_objects)


def returned_ids(result: Result[Any], model: TrackedModel) -> list[str] | None:
    """The target ids of the rows a statement run with `KeyPlan.statement` returned; None if it returned none."""
    if not isinstance(result, CursorResult):
        return None  # another listener answered in place of the database
    key = model.mapper.primary_key  # read by column: RETURNING's column order is SQLAlchemy's choice
    try:
        return [key_string([row._mapping[column] for column in key]) for row in result.returned_defaults_rows or ()]
    except KeyError:
        return None  # rows returned for another purpose, without this model's key


# -- what the statement says ----------------------------------------------------------------------------------

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
            payload.setdefault(name, encode_value(value.value, f"{model.target_type}.{name}"))
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
