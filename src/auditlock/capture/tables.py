"""Which tables are captured as which target, and how a decoded row becomes an event's fields.

Only allowlisted columns are read out of a row: a column whose field (its `[targets.<Type>.columns]` name, else its
own name) is not in the target's `fields` or `hmac` is never copied, so its value cannot reach the record builder.
Values arrive as PostgreSQL's text output; integers and booleans become JSON numbers and booleans (as the SQLAlchemy
integration writes them), everything else stays the exact text PostgreSQL printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditlock.capture.pgoutput import UNCHANGED, Relation, RowChange, Value
from auditlock.config.model import Config, TargetConfig
from auditlock.errors import ConfigError
from auditlock.handler.event_types import record_event_type

_INTEGER_TYPES = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_BOOLEAN = 16
ACTIONS = {"insert": "created", "update": "updated", "delete": "deleted"}


@dataclass(frozen=True)
class CapturedTable:
    """One mapped table: its target type, event prefix, column → field allowlist and primary key columns."""

    name: str  # "schema.table" as configured
    target_type: str
    prefix: str
    target: TargetConfig
    key_columns: tuple[str, ...] = ()
    oid: int | None = None  # at start; a later Relation of this oid under another name is a rename

    def field_of(self, column: str) -> str | None:
        """The field a column is written as, or None when it is not allowlisted (never read)."""
        name = self.target.columns.get(column, column)
        return name if name in self.target.allowed else None


def captured_tables(config: Config) -> dict[str, CapturedTable]:
    """Every `[targets.<Type>]` with a `table`, by lowercase "schema.table"; a `ConfigError` when there is none."""
    tables = {}
    for target_type, target in config.targets.items():
        if target.table is not None:
            prefix = record_event_type(target_type, "created").rpartition(".")[0]
            tables[target.table.lower()] = CapturedTable(target.table, target_type, prefix, target)
    if not tables:
        raise ConfigError("auditlock capture: no [targets.<Type>] has table = \"schema.table\"; map the tables to "
                          "capture, e.g. [targets.Order] table = \"public.orders\"")
    return tables


def event_types_of(table: CapturedTable) -> list[str]:
    """The event types capture writes for a table."""
    return [f"{table.prefix}.{action}" for action in (*ACTIONS.values(), "truncated", "schema_changed")]


class RowMapper:
    """Turns a decoded row change of a known relation into `(event_type, fields)` for the record builder."""

    def __init__(self, table: CapturedTable, relation: Relation) -> None:
        self.table = table
        self.relation = relation
        self._event_types = {kind: f"{table.prefix}.{action}" for kind, action in ACTIONS.items()}
        # Per allowlisted column: its place in the row, its field, and how its text becomes the trail's value.
        self._read = [(i, field, _CONVERTERS.get(column.type_oid)) for i, column in enumerate(relation.columns)
                      if (field := table.field_of(column.name)) is not None]
        names = [column.name for column in relation.columns]
        missing = [c for c in table.key_columns if c not in names]
        self._keys = [] if missing else [names.index(c) for c in table.key_columns]

    def event(self, change: RowChange) -> tuple[str, dict[str, Any]]:
        """`<prefix>.created|updated|deleted` with target id, before and after of allowlisted columns."""
        old, new = change.old, change.new
        if new is not None and old is not None:
            new = tuple(o if n is UNCHANGED else n for o, n in zip(old, new, strict=False))
        fields: dict[str, Any] = {"target_type": self.table.target_type,
                                  "target_id": self._target_id(new if new is not None else old)}
        if old is not None:
            fields["before"] = self._values(old)
        if new is not None:
            fields["after"] = self._values(new)
        return self._event_types[change.kind], fields

    def _values(self, row: Sequence[Value]) -> dict[str, Any]:
        values = {}
        size = len(row)
        for index, field, convert in self._read:
            if index < size:
                value = row[index]
                if type(value) is str:
                    values[field] = value if convert is None else convert(value)
                elif value is None:
                    values[field] = None
        return values

    def _target_id(self, row: Sequence[Value] | None) -> str | None:
        if row is None or not self._keys:
            return None
        if len(self._keys) == 1:  # the usual single-column key: no list, no join
            index = self._keys[0]
            value = row[index] if index < len(row) else None
            return value if type(value) is str else None
        parts = [row[i] if i < len(row) else None for i in self._keys]
        if any(part is None or part is UNCHANGED for part in parts):
            return None
        return key_string([str(part) for part in parts])


def typed_value(value: Value, type_oid: int) -> Any:
    """A column's text as the JSON value the trail holds: integers and booleans typed, the rest as printed."""
    if not isinstance(value, str):
        return None
    convert = _CONVERTERS.get(type_oid)
    return value if convert is None else convert(value)


def _integer(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _boolean(text: str) -> bool | str:
    return _BOOLEANS.get(text, text)


_BOOLEANS = {"t": True, "f": False}
_CONVERTERS: dict[int, Callable[[str], Any]] = {**dict.fromkeys(_INTEGER_TYPES, _integer), _BOOLEAN: _boolean}


def key_string(parts: Sequence[str]) -> str:
    """A primary key as a target id, the SQLAlchemy integration's rule: composite parts joined with ':' (escaped)."""
    if len(parts) == 1:
        return parts[0]
    return ":".join(part.replace("%", "%25").replace(":", "%3A") for part in parts)


def relation_name(relation: Relation) -> str:
    """A relation's lowercase "schema.table"."""
    return f"{relation.namespace}.{relation.name}".lower()


def with_catalog(tables: Mapping[str, CapturedTable], keys: Mapping[str, tuple[str, ...]],
                 oids: Mapping[str, int]) -> dict[str, CapturedTable]:
    """The tables with their primary key columns and oids (read from the catalog at start)."""
    return {name: CapturedTable(t.name, t.target_type, t.prefix, t.target, keys.get(name, ()), oids.get(name))
            for name, t in tables.items()}
