"""Deterministic JSON encoding of payload values, and keyed hashing of `hmac` fields.

Encoding (documented in docs/events.md):
- str, bool, None, ints in the signed/unsigned 64-bit range, finite floats: as they are.
- ints outside 64 bits: their decimal string (JSON readers such as Athena cannot hold them as numbers).
- datetime: aware -> UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`; naive -> `isoformat()` unchanged (no zone is guessed).
- date -> `YYYY-MM-DD`; time -> `isoformat()`; Decimal -> its exact string; UUID -> canonical string;
  Enum -> its value (encoded by these rules); bytes -> standard base64 string;
  set / frozenset -> a list sorted by the JSON text of its encoded items; tuple -> list;
  dict with str keys, list -> element-wise.
- NaN and infinities, non-str dict keys and every other type are an `EventError` naming the field.
- Containers nested more than MAX_DEPTH levels deep (and so every container that holds itself) are an
  `EventError` naming the field and the bound: readers of the trail (json parsers, DuckDB, Athena) cannot be
  relied on to read arbitrarily deep values, and Python's own recursion limit would otherwise end the encoding.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import math
import types
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from auditlock.errors import EventError

HMAC_PREFIX = "hmac-sha256:"
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_PLAIN = (str, bool, type(None))
MAX_DEPTH = 32  # levels of lists/dicts/sets inside one payload field's value (docs/events.md)


def encode_value(value: Any, path: str, depth: int = 0) -> Any:
    """A JSON-native, deterministic form of `value`; `path` names the field in errors.

    `depth` is how many containers already enclose `value` within its field (0 for the field's value itself).
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if kind is float:
        if not math.isfinite(value):
            raise EventError(f"payload field {path} is {value!r}; JSON has no NaN or infinity")
        return value
    return _encode_other(value, path, depth)


def _encode_other(value: Any, path: str, depth: int) -> Any:
    for kind, encoder in _ENCODERS:
        if isinstance(value, kind):
            return encoder(value, path, depth)
    raise EventError(
        f"payload field {path} has type {type(value).__name__}, which has no JSON form; pass a str, number, "
        "bool, None, list, dict, datetime, date, Decimal, UUID, Enum, bytes or set"
    )


def _encode_datetime(value: dt.datetime, _path: str, _depth: int) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.isoformat()
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _enter_container(path: str, depth: int) -> int:
    """The depth of a container's items; an `EventError` if that is past MAX_DEPTH (a cycle always is)."""
    if depth >= MAX_DEPTH:
        raise EventError(
            f"payload field {path} is nested more than {MAX_DEPTH} levels deep (or holds itself); pass a flatter "
            f"value: lists and dicts may nest at most {MAX_DEPTH} levels inside one payload field"
        )
    return depth + 1


def _encode_dict(value: dict[Any, Any], path: str, depth: int) -> dict[str, Any]:
    inner = _enter_container(path, depth)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise EventError(f"payload field {path} has a non-string key {key!r}; JSON keys are strings")
        out[key] = encode_value(item, f"{path}.{key}", inner)
    return out


def _encode_list(value: list[Any] | tuple[Any, ...], path: str, depth: int) -> list[Any]:
    inner = _enter_container(path, depth)
    return [encode_value(item, f"{path}[{i}]", inner) for i, item in enumerate(value)]


def _encode_set(value: set[Any] | frozenset[Any], path: str, depth: int) -> list[Any]:
    inner = _enter_container(path, depth)
    items = [encode_value(item, f"{path}{{}}", inner) for item in value]
    return sorted(items, key=orjson.dumps)


def _encode_decimal(value: decimal.Decimal, path: str, _depth: int) -> str:
    if not value.is_finite():
        raise EventError(f"payload field {path} is Decimal({str(value)!r}); JSON has no NaN or infinity")
    return str(value)


_ENCODERS: tuple[tuple[type | types.UnionType, Callable[[Any, str, int], Any]], ...] = (
    (bool, lambda v, _p, _d: bool(v)),
    (enum.Enum, lambda v, p, d: encode_value(v.value, p, d)),
    (int, lambda v, p, d: encode_value(int(v), p, d)),
    (float, lambda v, p, d: encode_value(float(v), p, d)),
    (str, lambda v, _p, _d: str(v)),
    (dt.datetime, _encode_datetime),
    (dt.date, lambda v, _p, _d: v.isoformat()),
    (dt.time, lambda v, _p, _d: v.isoformat()),
    (decimal.Decimal, _encode_decimal),
    (uuid.UUID, lambda v, _p, _d: str(v)),
    (bytes | bytearray | memoryview, lambda v, _p, _d: base64.b64encode(bytes(v)).decode("ascii")),
    (dict, _encode_dict),
    (list | tuple, _encode_list),
    (set | frozenset, _encode_set),
)


def hmac_value(key: bytes, encoded: Any, key_id: str | None = None) -> Any:
    """`hmac-sha256:<key id>:<hex>` (`hmac-sha256:<hex>` for the id-less legacy key) of an encoded value: of a
    string's UTF-8 bytes, else of its JSON text. None stays None. The format is owned by `handler.hmac_keys`."""
    if encoded is None:
        return None
    data = encoded.encode() if isinstance(encoded, str) else orjson.dumps(encoded, option=orjson.OPT_SORT_KEYS)
    tag = HMAC_PREFIX if key_id is None else f"{HMAC_PREFIX}{key_id}:"
    return tag + hmac.new(key, data, hashlib.sha256).hexdigest()
