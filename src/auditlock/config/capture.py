"""Reading `[capture]` and the capture keys of `[targets.<Type>]` (`table`, `[targets.<Type>.columns]`).

Kept apart from `config.load` (which calls these) so the general reader stays small; validation only — nothing here
connects to a database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from auditlock.config.model import CaptureConfig, TargetConfig
from auditlock.config.tables import TableReader

# An unquoted PostgreSQL identifier (what `--setup` creates and the publication names): no quoting games.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]{0,62}")
_TABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_$]{0,62})\.([A-Za-z_][A-Za-z0-9_$]{0,62})")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def read_capture(reader: TableReader, table: Mapping[str, Any]) -> CaptureConfig:
    """`[capture]`: scalar keys, identifiers checked, one connection source."""
    values = reader._scalars(table, "capture")
    values["app_roles"] = tuple(dict.fromkeys(values.get("app_roles", ())))
    capture = CaptureConfig(**values)
    for role in capture.app_roles:
        if not IDENTIFIER.fullmatch(role):
            reader.problems.append(f"[capture] app_roles: {role!r} is not a lowercase PostgreSQL role name (letters, "
                                   "digits, '_', at most 63 characters, not starting with a digit)")
        elif role == "public" or role.startswith("pg_"):
            reader.problems.append(f"[capture] app_roles: {role!r} is PUBLIC or a predefined role; name the "
                                   "application's own login roles")
    for key in ("slot", "publication"):
        name = getattr(capture, key)
        if not IDENTIFIER.fullmatch(name):
            reader.problems.append(f"[capture] {key} = {name!r}: use a lowercase PostgreSQL identifier (letters, "
                                   "digits, '_', at most 63 characters, not starting with a digit)")
    if capture.dsn_env is not None and capture.dsn_file is not None:
        reader.problems.append("[capture]: set either dsn_env or dsn_file, not both")
    return capture


def capture_target_problems(name: str, sub: Mapping[str, Any]) -> list[str]:
    """What is wrong with the capture keys of `[targets.<name>]` (empty when nothing is)."""
    problems = []
    table = sub.get("table")
    if isinstance(table, str) and not _TABLE.fullmatch(table):
        problems.append(f"[targets.{name}] table = {table!r}: write it as \"schema.table\" (unquoted identifiers, "
                        "e.g. \"public.orders\")")
    columns = sub.get("columns", {})
    if not isinstance(columns, dict):
        problems.append(f"[targets.{name}.columns] must be a table of column = \"field\" names")
        return problems
    if columns and table is None:
        problems.append(f"[targets.{name}.columns] maps columns of a captured table: add table = \"schema.table\"")
    for column, field_name in columns.items():
        if not isinstance(field_name, str) or not _FIELD.fullmatch(field_name):
            problems.append(f"[targets.{name}.columns] {column} = {field_name!r}: the field name must be letters, "
                            "digits and '_'")
    return problems


def target_columns(sub: Mapping[str, Any]) -> Mapping[str, str]:
    """`[targets.<Type>.columns]` as read (only valid after `capture_target_problems` found nothing)."""
    columns = sub.get("columns", {})
    return {c: f for c, f in columns.items() if isinstance(f, str)} if isinstance(columns, dict) else {}


def check_captured_tables(reader: TableReader, targets: Mapping[str, TargetConfig]) -> None:
    """Two targets must not map the same table (a row change would be recorded twice)."""
    seen: dict[str, str] = {}
    for name, target in targets.items():
        if target.table is None:
            continue
        other = seen.setdefault(target.table.lower(), name)
        if other != name:
            reader.problems.append(f"[targets.{name}] table = {target.table!r} is also [targets.{other}]'s: map "
                                   "each table to one target type")
