"""A strict decoder of PostgreSQL's `pgoutput` logical replication messages (protocol version 1, text values).

Reference: PostgreSQL documentation, "Logical Replication Message Formats"
(https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html), and
src/backend/replication/logical/proto.c. One `bytes` value is one message, as returned by
`pg_logical_slot_peek_binary_changes(..., 'proto_version', '1', ...)`:

    B  Begin     Int64 final (commit) LSN, Int64 commit time (µs since 2000-01-01 UTC), Int32 xid
    C  Commit    Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit time
    M  Message   Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, Byte[length] content
    R  Relation  Int32 oid, String namespace, String name, Int8 replica identity, Int16 ncols,
                 per column: Int8 flags (1 = key), String name, Int32 type oid, Int32 typmod
    Y  Type      Int32 oid, String namespace, String name
    O  Origin    Int64 LSN, String name
    I  Insert    Int32 oid, 'N' TupleData
    U  Update    Int32 oid, ['K' | 'O' TupleData], 'N' TupleData
    D  Delete    Int32 oid, 'K' | 'O' TupleData
    T  Truncate  Int32 nrels, Int8 options, Int32 oid × nrels
    TupleData    Int16 ncols, per column: 'n' null | 'u' unchanged TOASTed value | 't' Int32 length, Byte[length]

Everything read is hostile: every length is bounds-checked against the message, counts are bounded, strings must be
UTF-8, and anything else raises `PgoutputError` naming the message kind and offset. Nothing here touches a database.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from auditlock.errors import AuditlockError

MAX_COLUMNS = 1664  # PostgreSQL's MaxTupleAttributeNumber
MAX_TRUNCATED_RELATIONS = 100_000
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


class PgoutputError(AuditlockError):
    """A pgoutput message is malformed (truncated, an unknown kind, a bad length): capture stops rather than guess."""


class Unchanged:
    """The value of a TOASTed column an UPDATE did not change (pgoutput sends 'u', not the value)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()
Value = str | None | Unchanged


@dataclass(frozen=True)
class Begin:
    """A transaction starts; its commit LSN is known already."""

    commit_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    """A transaction ends: `end_lsn` is where the slot may advance to once its events are durable."""

    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class Message:
    """A logical decoding message (`pg_logical_emit_message`)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True)
class Column:
    """A column of a relation as pgoutput describes it."""

    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    """A table's description, sent before its first change in a decoding session (and after it changes)."""

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


class RowChange(NamedTuple):
    """An INSERT, UPDATE or DELETE of one row: `old` (full old row under REPLICA IDENTITY FULL) and `new`.

    A named tuple, not a frozen dataclass like the other messages: one is made per row, and a frozen dataclass's
    constructor (`object.__setattr__` per field) costs 0.3–0.8 µs more (measured).
    """

    kind: str  # "insert" | "update" | "delete"
    relation_oid: int
    old: tuple[Value, ...] | None
    new: tuple[Value, ...] | None


@dataclass(frozen=True)
class Truncate:
    """A TRUNCATE of one or more tables."""

    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Ignored:
    """A message capture does not use (Type, Origin)."""

    kind: str


Decoded = Begin | Commit | Message | Relation | RowChange | Truncate | Ignored


class _Buffer:
    """A cursor over one message; every read checks the bounds."""

    __slots__ = ("data", "kind", "offset")

    def __init__(self, data: bytes, kind: str) -> None:
        self.data = data
        self.kind = kind
        self.offset = 1

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise self.error(f"needs {size} more bytes, the message has {len(self.data) - self.offset} left")
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def fixed(self, layout: struct.Struct) -> int:
        """One number of a fixed size, read in place (no copy)."""
        offset = self.offset
        end = offset + layout.size
        if end > len(self.data):
            raise self.error(f"needs {layout.size} more bytes, the message has {len(self.data) - offset} left")
        self.offset = end
        return int(layout.unpack_from(self.data, offset)[0])

    def int8(self) -> int:
        return self.fixed(_UINT8)

    def int16(self) -> int:
        return self.fixed(_INT16)

    def int32(self) -> int:
        return self.fixed(_INT32)

    def uint32(self) -> int:
        return self.fixed(_UINT32)

    def int64(self) -> int:
        return self.fixed(_INT64)

    def lsn(self) -> int:
        return self.fixed(_UINT64)

    def byte(self) -> str:
        return chr(self.fixed(_UINT8))

    def string(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise self.error("a string has no terminating NUL")
        raw = self.data[self.offset:end]
        self.offset = end + 1
        return self.text(raw)

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("a string is not UTF-8") from None

    def time(self) -> datetime:
        micros = self.int64()
        try:
            return PG_EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise self.error(f"timestamp {micros} is out of range") from None

    def end(self) -> None:
        if self.offset != len(self.data):
            raise self.error(f"{len(self.data) - self.offset} bytes left over after the message")

    def error(self, what: str) -> PgoutputError:
        return PgoutputError(f"pgoutput {self.kind!r} message at byte {self.offset}: {what}; the slot's output is not "
                             "what pgoutput protocol version 1 sends (is the slot's plugin pgoutput?)")


def decode(data: bytes) -> Decoded:
    """One pgoutput message; raises `PgoutputError` on anything malformed."""
    if not data:
        raise PgoutputError("pgoutput: an empty message")
    kind = chr(data[0])
    reader = _READERS.get(kind)
    if reader is None:
        raise PgoutputError(f"pgoutput: unknown message kind {kind!r} (streaming or a newer protocol version?)")
    buffer = _Buffer(data, kind)
    decoded: Decoded = reader(buffer)
    buffer.end()
    return decoded


def _begin(b: _Buffer) -> Begin:
    return Begin(commit_lsn=b.lsn(), commit_time=b.time(), xid=b.uint32())


def _commit(b: _Buffer) -> Commit:
    b.int8()  # flags: unused, always 0
    return Commit(commit_lsn=b.lsn(), end_lsn=b.lsn(), commit_time=b.time())


def _message(b: _Buffer) -> Message:
    transactional = b.int8() & 1 == 1
    lsn, prefix, length = b.lsn(), b.string(), b.int32()
    return Message(transactional, lsn, prefix, b.take(length))


def _relation(b: _Buffer) -> Relation:
    oid, namespace, name, identity, count = b.uint32(), b.string(), b.string(), b.byte(), b.int16()
    if not 0 <= count <= MAX_COLUMNS:
        raise b.error(f"{count} columns")
    columns = []
    for _ in range(count):
        flags, column = b.int8(), b.string()
        type_oid = b.uint32()
        b.int32()  # typmod
        columns.append(Column(column, type_oid, flags & 1 == 1))
    return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))


def _insert(b: _Buffer) -> RowChange:
    oid = b.uint32()
    _expect(b, "N")
    return RowChange("insert", oid, None, _tuple(b))


def _update(b: _Buffer) -> RowChange:
    oid = b.uint32()
    marker = b.byte()
    old = None
    if marker in ("K", "O"):
        old = _tuple(b)
        marker = b.byte()
    if marker != "N":
        raise b.error(f"expected 'N' (new tuple), found {marker!r}")
    return RowChange("update", oid, old, _tuple(b))


def _delete(b: _Buffer) -> RowChange:
    oid = b.uint32()
    marker = b.byte()
    if marker not in ("K", "O"):
        raise b.error(f"expected 'K' or 'O' (old tuple), found {marker!r}")
    return RowChange("delete", oid, _tuple(b), None)


def _truncate(b: _Buffer) -> Truncate:
    count, options = b.int32(), b.int8()
    if not 0 < count <= MAX_TRUNCATED_RELATIONS:
        raise b.error(f"{count} relations")
    return Truncate(tuple(b.uint32() for _ in range(count)), options & 1 == 1, options & 2 == 2)


def _type(b: _Buffer) -> Ignored:
    b.uint32()
    b.string()
    b.string()
    return Ignored("type")


def _origin(b: _Buffer) -> Ignored:
    b.lsn()
    b.string()
    return Ignored("origin")


def _expect(b: _Buffer, marker: str) -> None:
    found = b.byte()
    if found != marker:
        raise b.error(f"expected {marker!r}, found {found!r}")


def _tuple(b: _Buffer) -> tuple[Value, ...]:
    # The hot path of capture (every column of every row): one flat loop over the buffer, every bound checked.
    count = b.int16()
    if not 0 <= count <= MAX_COLUMNS:
        raise b.error(f"a tuple of {count} columns")
    data, offset, size = b.data, b.offset, len(b.data)
    values: list[Value] = []
    for _ in range(count):
        if offset >= size:
            b.offset = offset
            raise b.error("a tuple ends before its columns do")
        kind = data[offset]
        if kind == 0x74:  # 't'
            if offset + 5 > size:
                b.offset = offset
                raise b.error("a column length is cut off")
            (length,) = _INT32.unpack_from(data, offset + 1)
            end = offset + 5 + length
            if length < 0 or end > size:
                b.offset = offset + 1
                raise b.error(f"needs {length} more bytes, the message has {size - offset - 5} left")
            try:
                values.append(data[offset + 5:end].decode("utf-8"))
            except UnicodeDecodeError:
                b.offset = offset
                raise b.error("a string is not UTF-8") from None
            offset = end
        elif kind == 0x6E:  # 'n'
            values.append(None)
            offset += 1
        elif kind == 0x75:  # 'u'
            values.append(UNCHANGED)
            offset += 1
        else:
            b.offset = offset
            raise b.error(f"column kind {chr(kind)!r} (binary values are not requested)")
    b.offset = offset
    return tuple(values)


_UINT8, _INT16, _INT32, _UINT32 = struct.Struct("!B"), struct.Struct("!h"), struct.Struct("!i"), struct.Struct("!I")
_INT64, _UINT64 = struct.Struct("!q"), struct.Struct("!Q")


_READERS: dict[str, Callable[[_Buffer], Decoded]] = {
    "B": _begin, "C": _commit, "M": _message, "R": _relation, "I": _insert, "U": _update, "D": _delete,
    "T": _truncate, "Y": _type, "O": _origin,
}


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL prints it: `16/B374D848`."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """The LSN PostgreSQL prints as `16/B374D848`; raises ValueError otherwise."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an LSN like 16/B374D848")
    return (int(match[1], 16) << 32) | int(match[2], 16)
