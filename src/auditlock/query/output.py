"""Writing results: a readable terminal table, JSONL (one object per row), CSV (with a header) or OCSF JSONL.

For whole events (`auditlock query` without `--sql`), JSONL lines are the events as archived — `payload` an
object, keys in schema order — and the table shows one event per line: time, type, actor, address, target
and payload, cut to the terminal's width, every cell passed through `terminal_safe` (an actor id or key from a
hostile archive cannot move the cursor or forge a row). CSV carries every column, `payload` as JSON text; JSONL
and CSV are data and stay exact. OCSF is one OCSF record per event (`query.ocsf`), whole events only.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import itertools
import uuid
from collections.abc import Iterable, Sequence
from typing import IO, Any

import orjson

from auditlock.query.columns import EVENT_NAMES
from auditlock.query.engine import Result
from auditlock.query.ocsf import product_version, to_ocsf
from auditlock.textsafe import terminal_safe

FORMATS = ("table", "jsonl", "csv", "ocsf")
EVENT_TABLE = ("occurred_at", "event_type", "actor", "actor_ip", "target", "payload")
MAX_CELL = 40
WIDTH_SAMPLE = 1000  # rows measured for the table's column widths
_GAP = "  "


def write(result: Result, fmt: str, out: IO[str], *, events: bool, width: int = 120) -> int:
    """Write `result` in `fmt`; `events` says the rows are whole events. Returns the row count."""
    if fmt == "jsonl":
        return write_jsonl(result, out, events=events)
    if fmt == "csv":
        return write_csv(result, out)
    if fmt == "ocsf":
        return write_ocsf(result, out)
    if events:
        return write_table(EVENT_TABLE, (_event_cells(row) for row in result.rows), out, width=width)
    return write_table(result.columns, ([_cell(v) for v in row] for row in result.rows), out, width=width)


def write_jsonl(result: Result, out: IO[str], *, events: bool) -> int:
    """One JSON object per row; an event's payload is embedded as the object it is."""
    count = 0
    payload = result.columns.index("payload") if events else -1
    for row in result.rows:
        values = list(row)
        if payload >= 0 and values[payload] is not None:
            values[payload] = orjson.Fragment(values[payload])
        out.write(orjson.dumps(dict(zip(result.columns, values, strict=True)), default=_json_default).decode())
        out.write("\n")
        count += 1
    return count


def write_ocsf(result: Result, out: IO[str]) -> int:
    """One OCSF record per event (JSONL), each leading back to its archived original by `metadata.uid`."""
    version = product_version()
    count = 0
    for row in result.rows:
        event = dict(zip(result.columns, row, strict=True))
        event["payload"] = orjson.loads(event["payload"]) if event.get("payload") else None
        out.write(orjson.dumps(to_ocsf(event, product_version=version), default=_json_default).decode())
        out.write("\n")
        count += 1
    return count


def write_csv(result: Result, out: IO[str]) -> int:
    """A header line, then every row (values as text; null as an empty field; formula-like text neutralised)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    count = 0
    for row in result.rows:
        writer.writerow(["" if v is None else _csv_cell(v) for v in row])
        count += 1
    return count


def _csv_cell(value: object) -> str:
    # Actor and target ids can hold whatever a user typed ("=HYPERLINK(...)"); a spreadsheet opening the export
    # would run it as a formula. Such text gets a leading apostrophe (OWASP's advice); JSONL stays exact.
    text = _text(value)
    if isinstance(value, str) and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_table(columns: Sequence[str], rows: Iterable[list[str]], out: IO[str], *, width: int) -> int:
    """Aligned columns, each cut to MAX_CELL characters; the last one gets what is left of `width`.

    Cells and headers are shown escaped (`terminal_safe`), and measured as shown. The widths are measured on the
    first `WIDTH_SAMPLE` rows; later rows are streamed with them (a longer cell is cut with `…`), so a result of
    any size is printed in bounded memory.
    """
    columns = [terminal_safe(c) for c in columns]
    shown = ([terminal_safe(c) for c in row] for row in rows)
    sample = list(itertools.islice(shown, WIDTH_SAMPLE))
    widths = [min(MAX_CELL, max([len(c)] + [len(r[i]) for r in sample])) for i, c in enumerate(columns)]
    if widths:
        used = sum(widths[:-1]) + len(_GAP) * (len(widths) - 1)
        widths[-1] = max(len(columns[-1]), min(max([len(r[-1]) for r in sample], default=0), width - used, 200))
    out.write(_line(list(columns), widths))
    out.write(_line(["-" * w for w in widths], widths))
    count = 0
    for row in itertools.chain(sample, shown):
        out.write(_line(row, widths))
        count += 1
    out.write(f"({count} {'row' if count == 1 else 'rows'})\n")
    return count


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [_fit(c, w) for c, w in zip(cells, widths, strict=True)]
    return _GAP.join(parts).rstrip() + "\n"


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _event_cells(row: tuple[Any, ...]) -> list[str]:
    event = dict(zip(EVENT_NAMES, row, strict=True))
    target = event["target_type"] or ""
    if event["target_id"] is not None:
        target += f":{event['target_id']}"
    return [event["occurred_at"], event["event_type"], event["actor_id"], event["actor_ip"] or "", target,
            event["payload"] or ""]


def _cell(value: Any) -> str:
    return "" if value is None else _text(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=_json_default).decode()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} has no JSON form")
