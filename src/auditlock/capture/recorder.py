"""Decoded pgoutput messages → `auditlock/1` events, one per row change, in commit order.

`ChangeRecorder.take(message)` follows the stream: Begin opens a transaction (its commit LSN, time and xid are
known from the start), Relation messages describe tables, logical messages say who is acting
(`capture.attribution`), each Insert / Update / Delete / Truncate of a mapped table becomes one event the moment it
is decoded (nothing of a transaction is held but its attribution), and Commit closes it. A change the position
already covers (`capture.position`) is counted in the transaction's order but not written again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auditlock.capture.attribution import Attribution
from auditlock.capture.pgoutput import (
    Begin,
    Commit,
    Decoded,
    Message,
    PgoutputError,
    Relation,
    RowChange,
    Truncate,
    format_lsn,
)
from auditlock.capture.position import CaptureError, Position
from auditlock.capture.tables import CapturedTable, RowMapper, relation_name

# The payload fields capture writes on every event (registered as standard fields of its event types).
CAPTURE_FIELDS = frozenset({"commit_lsn", "xid", "committed_at", "table", "change_index", "db_role",
                            "application_name", "request_id", "job_run_id", "attribution_problem"})
TRUNCATE_FIELDS = frozenset({"cascade", "restart_identity"})
DDL_FIELDS = frozenset({"command", "object"})

# `write(event_type, fields, shared)`: `shared` holds the values every event of the transaction shares until its next
# message (its attribution), so the writer can reuse what it built for them (`capture.records`).
Write = Callable[[str, dict[str, Any], tuple[Any, ...]], None]


@dataclass
class _Transaction:
    begin: Begin
    attribution: Attribution
    covered_through: float  # the last change_index the position already covers (-1: none; inf: all)
    index: int = 0
    stamp: dict[str, Any] | None = None  # the fields every event of the transaction shares (until a message)
    shared: tuple[Any, ...] = ()  # the attribution part of `stamp`, as a key


class ChangeRecorder:
    """Writes the events of decoded messages through `write(event_type, fields)`; tracks the last written change."""

    def __init__(self, tables: Mapping[str, CapturedTable], write: Write, written: Position, *,
                 trusted_roles: frozenset[str] | None = None) -> None:
        """`trusted_roles`: who may bind an actor (`Attribution.trusted_roles`; None: anyone)."""
        self._tables = tables
        self._trusted_roles = trusted_roles
        self._write = write
        self._written = written
        self._last_row: tuple[int, int] | None = None  # the last row written, until `written` is next read
        self.committed: Commit | None = None  # the last transaction whose every change is written
        self._relations: dict[int, RowMapper | None] = {}
        self._by_oid = {table.oid: table for table in tables.values() if table.oid is not None}
        self._txn: _Transaction | None = None
        self.events = 0

    @property
    def written(self) -> Position:
        """The last change durable or appended (never written twice)."""
        if self._last_row is not None:  # a Position per pass, not per row: the row path only notes two ints
            self._written = Position(*self._last_row)
            self._last_row = None
        return self._written

    def new_stream(self) -> None:
        """A new peek begins: PostgreSQL sends the Relation messages again and starts at a Begin."""
        self._relations.clear()
        self._txn = None

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction's Begin was taken and its Commit not yet."""
        return self._txn is not None

    def take(self, message: Decoded) -> None:
        """Follow one decoded message."""
        if type(message) is RowChange:  # nearly every message: the row path first
            self._row(message)
        elif isinstance(message, Begin):
            covered = self._covered_through(message.commit_lsn)
            self._txn = _Transaction(message, Attribution(self._trusted_roles), covered)
        elif isinstance(message, Relation):
            self._relation(message)
        elif isinstance(message, Commit):
            self._commit(message)
        elif isinstance(message, Message | RowChange | Truncate):
            self._change(message)

    def _relation(self, relation: Relation) -> None:
        table = self._tables.get(relation_name(relation))
        renamed = self._by_oid.get(relation.oid)
        if table is None and renamed is not None:
            # Recording its rows under the old name would be wrong, ignoring them would lose them: stop, with the fix.
            raise CaptureError(f"table {renamed.name!r} ([targets.{renamed.target_type}]) was renamed to "
                               f"{relation_name(relation)!r}: set table = \"{relation_name(relation)}\" in "
                               f"[targets.{renamed.target_type}] and start capture again (the slot keeps the changes)")
        self._relations[relation.oid] = None if table is None else RowMapper(table, relation)

    def _covered_through(self, commit_lsn: int) -> float:
        """The last change_index of the transaction at `commit_lsn` that `written` covers (`Position.covers`)."""
        written = self.written
        if commit_lsn != written.commit_lsn:
            return float("inf") if commit_lsn < written.commit_lsn else -1
        return float("inf") if written.change_index is None else written.change_index

    def _row(self, change: RowChange) -> None:
        txn = self._txn
        if txn is None:
            raise PgoutputError("pgoutput: a RowChange outside a transaction")
        mapper = self._mapper(change.relation_oid)
        if mapper is not None:
            event_type, fields = mapper.event(change)
            self._emit(txn, event_type, fields, mapper.table)

    def _change(self, message: Message | RowChange | Truncate) -> None:
        txn = self._txn
        if txn is None:
            if isinstance(message, Message) and not message.transactional:
                return  # a non-transactional message outside a transaction: not ours to record
            raise PgoutputError(f"pgoutput: a {type(message).__name__} outside a transaction")
        if isinstance(message, Message):
            txn.stamp = None
            ddl = txn.attribution.note(message)
            if ddl is not None:
                self._ddl(txn, ddl)
        elif isinstance(message, RowChange):
            self._row(message)
        else:
            for oid in message.relation_oids:
                mapper = self._mapper(oid)
                if mapper is not None:
                    fields = {"target_type": mapper.table.target_type, "cascade": message.cascade,
                              "restart_identity": message.restart_identity}
                    self._emit(txn, f"{mapper.table.prefix}.truncated", fields, mapper.table)

    def _mapper(self, oid: int) -> RowMapper | None:
        try:
            return self._relations[oid]
        except KeyError:
            raise PgoutputError(f"pgoutput: a change of relation {oid} before its Relation message") from None

    def _ddl(self, txn: _Transaction, ddl: Mapping[str, str]) -> None:
        table = self._tables.get(ddl.get("object", "").lower())
        oid = ddl.get("oid", "")
        if table is None and oid.isdigit():
            table = self._by_oid.get(int(oid))
        if table is None:
            return  # a schema change of a table capture does not map
        txn.stamp = None
        if not txn.attribution.session:  # DDL fires no row trigger: the DDL message names the session itself
            txn.attribution.session = {k: v for k, v in ddl.items() if k in ("role", "application_name",
                                                                              "client_addr")}
        fields = {"target_type": table.target_type, "command": ddl.get("command", ""), "object": ddl["object"]}
        self._emit(txn, f"{table.prefix}.schema_changed", fields, table)

    def _emit(self, txn: _Transaction, event_type: str, fields: dict[str, Any], table: CapturedTable) -> None:
        index = txn.index
        txn.index += 1
        if index <= txn.covered_through:
            return
        begin = txn.begin
        if txn.stamp is None:
            attribution = txn.attribution.fields()
            txn.shared = tuple(attribution.items())
            txn.stamp = {**attribution, "commit_lsn": format_lsn(begin.commit_lsn), "xid": begin.xid,
                         "committed_at": _rfc3339(begin.commit_time)}
        fields.update(txn.stamp)
        fields["table"] = table.name
        fields["change_index"] = index
        self._write(event_type, fields, txn.shared)
        self._last_row = (begin.commit_lsn, index)
        self.events += 1

    def _commit(self, commit: Commit) -> None:
        txn = self._txn
        if txn is None or txn.begin.commit_lsn != commit.commit_lsn:
            raise PgoutputError("pgoutput: a Commit that does not close the open transaction")
        self._txn = None
        if commit.commit_lsn >= self.written.commit_lsn:
            self._written = Position(commit.commit_lsn, None, commit.end_lsn)
        self.committed = commit


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
