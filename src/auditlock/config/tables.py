"""The generic half of reading `auditlock.toml`: typed values out of TOML tables, every problem collected.

`TableReader` knows keys and their `schema.Key` specs, not sections; `config.load` builds the sections on it.
Paths are resolved against `base_dir`; nothing here raises on bad input, it appends a problem and returns None.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from auditlock.config import schema
from auditlock.config.schema import Key


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """A "; did you mean 'x'?" suffix when a close match exists, else the allowed names."""
    import difflib  # noqa: PLC0415 - error path only

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return "; allowed: " + ", ".join(sorted(choices)) if choices else ""


class TableReader:
    """Typed values out of raw TOML tables; problems are collected in `problems`, never raised."""

    def __init__(self, base_dir: Path, source: str | None) -> None:
        self.base_dir = base_dir
        self.source = source
        self.problems: list[str] = []

    def _table(self, raw: Mapping[str, Any], key: str, where: str | None = None) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if isinstance(value, dict):
            return value
        self.problems.append(f"{where or key} must be a table ([{where or key}]), got {value!r}")
        return {}

    def _scalars(self, table: Mapping[str, Any], section: str) -> dict[str, Any]:
        return self._keys(table, schema.SECTIONS[section], section)

    def _keys(self, table: Mapping[str, Any], keys: Mapping[str, Key], where: str) -> dict[str, Any]:
        self._unknown_keys(table, list(keys), f"[{where}]")
        values = {}
        for key, spec in keys.items():
            value = self._value(table, key, spec, f"{where}.{key}")
            if value is not None:
                values[key] = value
        return values

    def _unknown_keys(self, table: Mapping[str, Any], known: list[str], where: str) -> None:
        for key in table:
            if key not in known:
                self.problems.append(f"unknown key '{key}' in {where}" + did_you_mean(key, known))

    def _value(self, table: Mapping[str, Any], key: str, spec: Key, where: str, *, required: bool = False) -> Any:
        if key not in table:
            if required:
                self.problems.append(f"{where} is required ({spec.describe()})")
            return None
        value = table[key]
        problem = _type_problem(value, spec)
        if problem:
            self.problems.append(f"{where} = {value!r} is invalid: {problem}; expected {spec.describe()}")
            return None
        if spec.kind == "path":
            return self.base_dir / Path(cast(str, value))
        if spec.kind == "float":
            return float(value)
        return value


def _type_problem(value: Any, spec: Key) -> str | None:
    if spec.kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            return "not a non-empty string"
        if spec.choices and value not in spec.choices:
            return "not an allowed value" + did_you_mean(value, spec.choices)
        return None
    if spec.kind == "bool":
        return None if isinstance(value, bool) else "not a boolean"
    if spec.kind == "list":
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return None if ok else "not a list of non-empty strings"
    return _number_problem(value, spec)


def _number_problem(value: Any, spec: Key) -> str | None:
    numeric = (int,) if spec.kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        return "wrong type"
    if spec.minimum is not None and value < spec.minimum:
        return "too small"
    if spec.maximum is not None and value > spec.maximum:
        return "too large"
    return None
