"""The writer's stamping and the spool's safe open at their edges: what the mutation run (docs/mutation-survivors.md)
found no test pinned — the `occurred_at` text of a given instant (also after the clock steps back), the field an
unencodable-value error names, and a symlink under a segment's name refused by name.

Times are fixed instants (nanoseconds since the epoch), never today's date.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from auditlock.spool.chain import UtcClock, find_unencodable
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file

# 2026-03-04T05:06:07.123456789Z and the second before it.
INSTANT_NS = 1_772_600_767_123_456_789
EARLIER_NS = INSTANT_NS - 1_000_000_000
MARCH_2026 = 2026 * 12 + 3 - 1


class TestUtcClock:
    """Invariant: `occurred_at` is the instant's UTC time to the microsecond, whatever time was formatted before."""

    def test_microseconds_are_truncated_not_scaled(self) -> None:
        """Invariant (occurred_at exact): ns 123456789 within the second → `.123456Z`, and the month index."""
        assert UtcClock().format(INSTANT_NS) == ("2026-03-04T05:06:07.123456Z", MARCH_2026)

    def test_clock_stepping_back_is_formatted_afresh(self) -> None:
        """Invariant (occurred_at exact): after a later second, an earlier one is not given the cached prefix."""
        clock = UtcClock()
        clock.format(INSTANT_NS)
        assert clock.format(EARLIER_NS) == ("2026-03-04T05:06:06.123456Z", MARCH_2026)


class TestUnencodableValueIsNamed:
    """Invariant: an event the writer cannot encode is refused naming the field, so the caller can fix it."""

    @pytest.mark.parametrize(("record", "path"), [
        ({"ok": 1, "payload": {"fine": "x", "bad": {1, 2}}}, "payload.bad"),
        ({"ok": [1, 2, object()]}, "ok[2]"),
        ({"ok": 1, "payload": {3: "int key"}}, "payload.3"),
    ], ids=["nested-set", "list-item", "non-string-key"])
    def test_the_first_bad_field_is_named(self, record: dict[str, object], path: str) -> None:
        """Invariant (actionable errors): the dotted path of the first value orjson refuses, past good siblings."""
        assert find_unencodable(record) == path

    def test_an_encodable_record_names_nothing(self) -> None:
        """Nothing to name when every value encodes."""
        assert find_unencodable({"a": [1, {"b": "c"}]}) is None


class TestSymlinkUnderASegmentName:
    """Invariant: a symlink under a segment's name is refused as what it is, never followed or raised raw."""

    def test_symlink_refused_by_name(self, tmp_path: Path) -> None:
        """Invariant (everything read is hostile): UnsafeSpoolFileError saying "a symbolic link"."""
        target = tmp_path / "elsewhere"
        target.write_bytes(b"not yours\n")
        link = tmp_path / f"{'d' * 32}.0000000000000000.jsonl"
        os.symlink(target, link)

        with pytest.raises(UnsafeSpoolFileError) as caught:
            open_spool_file(link)

        assert caught.value.reason == "a symbolic link, not a regular file"


class TestReadersOpenReadOnly:
    """Invariant: a reader of the spool opens segments read-only (verify and query never write; an auditor may not)."""

    def test_default_open_is_read_only(self, tmp_path: Path) -> None:
        """Invariant (read-only readers): `open_spool_file` without `write=True` gives an O_RDONLY descriptor."""
        segment = tmp_path / f"{'e' * 32}.0000000000000000.jsonl"
        segment.write_bytes(b"{}\n")

        with open_spool_file(segment) as f:
            assert fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
