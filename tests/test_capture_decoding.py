"""The pgoutput decoder, the position file and attribution messages read as hostile input (no database needed)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from auditlock.capture.attribution import NO_SESSION, Attribution
from auditlock.capture.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Message,
    PgoutputError,
    RowChange,
    decode,
    format_lsn,
    parse_lsn,
)
from auditlock.capture.position import CaptureError, Position, PositionFile, Saved


def tuple_data(*values: bytes | str | None) -> bytes:
    """A TupleData: bytes are 't' values, None 'n', the string 'u' an unchanged TOASTed value."""
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == "u":
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack("!i", len(value)) + value
    return out


class TestDecoder:
    """Well-formed messages decode; anything malformed raises PgoutputError naming the message."""

    def test_begin_and_commit(self) -> None:
        """Begin and Commit carry LSNs, time and xid."""
        begin = decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, 0, 7))
        assert begin == Begin(0x1_0000_0010, begin.commit_time, 7)  # type: ignore[union-attr]
        commit = decode(b"C\0" + struct.pack("!QQq", 16, 32, 1_000_000))
        assert isinstance(commit, Commit)
        assert (commit.commit_lsn, commit.end_lsn, commit.commit_time.year) == (16, 32, 2000)

    def test_update_with_old_tuple_and_unchanged_toast(self) -> None:
        """An update's old tuple and a 'u' value decode."""
        data = b"U" + struct.pack("!I", 5) + b"O" + tuple_data(b"1", b"x") + b"N" + tuple_data(b"1", "u")
        assert decode(data) == RowChange("update", 5, ("1", "x"), ("1", UNCHANGED))

    def test_message(self) -> None:
        """A transactional message keeps its prefix and content."""
        data = b"M\x01" + struct.pack("!Q", 9) + b"auditlock.actor\0" + struct.pack("!i", 2) + b"{}"
        assert decode(data) == Message(True, 9, "auditlock.actor", b"{}")

    @pytest.mark.parametrize(("data", "why"), [
        (b"", "empty"),
        (b"Z", "unknown message kind"),
        (b"B" + struct.pack("!Q", 1), "needs 8 more bytes"),
        (b"B" + struct.pack("!QqI", 1, 0, 7) + b"x", "left over"),
        (b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1) + b"t" + struct.pack("!i", 99) + b"ab",
         "needs 99 more bytes"),
        (b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1) + b"t" + struct.pack("!i", -1), "needs -1"),
        (b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1) + b"b", "column kind 'b'"),
        (b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", -3), "a tuple of -3 columns"),
        (b"I" + struct.pack("!I", 5) + b"X", "expected 'N'"),
        (b"R" + struct.pack("!I", 5) + b"public\0orders", "no terminating NUL"),
        (b"R" + struct.pack("!I", 5) + b"\xff\0t\0f" + struct.pack("!h", 0), "not UTF-8"),
        (b"T" + struct.pack("!ib", 0, 0), "0 relations"),
        (b"D" + struct.pack("!I", 5) + b"N", "expected 'K' or 'O'"),
    ])
    def test_malformed_messages_are_refused(self, data: bytes, why: str) -> None:
        """Truncated, oversized, unknown or left-over input raises PgoutputError, never decodes silently."""
        with pytest.raises(PgoutputError, match=why):
            decode(data)

    def test_lsn_text(self) -> None:
        """LSNs print and parse as PostgreSQL writes them; anything else is refused."""
        assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
        for bad in ("16B374D848", "+1/2", "1/ 2", "123456789/1", ""):
            with pytest.raises(ValueError, match="not an LSN"):
                parse_lsn(bad)


class TestPositionFile:
    """The position file round-trips; a damaged one stops capture with the fix, never a guess."""

    def test_round_trip(self, tmp_path: Path) -> None:
        """A written position reads back equal."""
        positions = PositionFile(tmp_path, "s")
        positions.write(Position(0x1_0000_0000, None, 0x1_0000_0040), 0x1_0000_0040)
        assert positions.read() == Saved(Position(0x1_0000_0000, None, 0x1_0000_0040), 0x1_0000_0040)
        positions.write(Position(5, 3), None)
        assert positions.read() == Saved(Position(5, 3), None)

    @pytest.mark.parametrize("content", [b"{", b"[]", b'{"version": 2}', b"x" * 5000,
                                         b'{"version":1,"slot":"s","commit_lsn":"0/1","end_lsn":null,'
                                         b'"change_index":-1,"slot_lsn":null}',
                                         b'{"version":1,"slot":"s","commit_lsn":"zz","end_lsn":null,'
                                         b'"change_index":null,"slot_lsn":null}'])
    def test_damaged_file_is_refused(self, tmp_path: Path, content: bytes) -> None:
        """Bad JSON, fields or values raise CaptureError naming the file and the way out."""
        (tmp_path / "position.json").write_bytes(content)
        with pytest.raises(CaptureError, match=r"is damaged.*move it aside"):
            PositionFile(tmp_path, "s").read()

    def test_other_slot_is_refused(self, tmp_path: Path) -> None:
        """A position of another slot is not used."""
        PositionFile(tmp_path, "a").write(Position(1), None)
        with pytest.raises(CaptureError, match="belongs to slot 'a'"):
            PositionFile(tmp_path, "b").read()

    def test_covers(self) -> None:
        """A complete transaction covers all its changes; a partial one up to its index."""
        assert Position(10).covers(10, 99)
        assert Position(10, 2).covers(10, 2)
        assert not Position(10, 2).covers(10, 3)
        assert not Position(10).covers(11, 0)
        assert Position(10, 2).later(Position(10)) == Position(10)


class TestAttribution:
    """Messages are hostile: only short printable strings in a JSON object are taken."""

    @pytest.mark.parametrize("content", [b"not json", b"[1]", b'{"actor_id": "user:1\\n"}', b'{"actor_id": 1}',
                                         b'{"actor_id": "user:1", "actor_type": "admin"}', b"{" + b" " * 5000 + b"}"])
    def test_bad_actor_message_is_ignored_and_noted(self, content: bytes) -> None:
        """The row falls back to the session's role and the event carries attribution_problem."""
        attribution = Attribution()
        attribution.note(Message(True, 1, "auditlock.session", b'{"role": "ops"}'))
        attribution.note(Message(True, 2, "auditlock.actor", content))
        fields = attribution.fields()
        assert (fields["actor_id"], fields["actor_type"]) == ("db:ops", "db")
        assert "attribution_problem" in fields

    def test_no_session_message(self) -> None:
        """A change without any message is still attributed: db:unknown, with the missing message named."""
        assert Attribution().fields() == {"actor_id": "db:unknown", "actor_type": "db",
                                          "attribution_problem": NO_SESSION}

    def test_actor_without_a_session_is_kept_and_named(self) -> None:
        """An actor bound in a transaction whose trigger emitted nothing: the actor and its role, the problem named."""
        attribution = Attribution(frozenset({"app"}))
        attribution.note(Message(True, 1, "auditlock.actor", b'{"actor_id": "user:1", "role": "app"}'))
        fields = attribution.fields()
        assert (fields["actor_id"], fields["db_role"], fields["attribution_problem"]) == ("user:1", "app", NO_SESSION)

    @pytest.mark.parametrize(("content", "problem"), [
        (b'{"actor_id": "user:1"}', "names no role"),
        (b'{"actor_id": "user:1", "role": "intruder"}',
         "bound by role 'intruder', which is not in [capture] app_roles"),
    ])
    def test_restricted_actor_needs_a_trusted_role(self, content: bytes, problem: str) -> None:
        """With trusted roles, an actor message without a role or from another role is ignored and named."""
        attribution = Attribution(frozenset({"app"}))
        attribution.note(Message(True, 1, "auditlock.session", b'{"role": "intruder"}'))
        attribution.note(Message(True, 2, "auditlock.actor", content))
        fields = attribution.fields()
        assert (fields["actor_id"], fields["db_role"]) == ("db:intruder", "intruder")
        assert problem in fields["attribution_problem"]

    def test_open_actor_needs_no_role(self) -> None:
        """Without trusted roles (attribution = "open") an actor message without a role is taken, as before."""
        attribution = Attribution()
        attribution.note(Message(True, 1, "auditlock.session", b'{"role": "ops"}'))
        attribution.note(Message(True, 2, "auditlock.actor", b'{"actor_id": "user:1"}'))
        assert attribution.fields() == {"actor_id": "user:1", "db_role": "ops"}
