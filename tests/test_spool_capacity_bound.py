"""`[spool] max_bytes` is an inclusive bound: an event that brings the spool to exactly `max_bytes` is written.

Written for a surviving mutant of `spool/writer.py` (`spool_bytes + size <= max_bytes` -> `<` in
`_check_capacity`, docs/mutation-survivors.md): the tests of `test_spool_enospc.py` fill the spool until a refusal,
so no line ever landed on the bound itself. Real files, a real writer: the spool is filled by one writer, then
`max_bytes` is set to what it holds plus the length of the next writer's first line.
"""

from __future__ import annotations

from pathlib import Path

from auditlock.spool.space import spool_size
from tests.test_spool_enospc import Audit

SMALLEST_MAX_BYTES = 65536  # the config's lower bound for [spool] max_bytes


def first_line_bytes(scratch: Path) -> int:
    """The length of a new writer's first line, as `Audit.event()` writes it (measured in a scratch spool)."""
    audit = Audit(scratch)
    try:
        audit.events(1)
        return spool_size(scratch)
    finally:
        audit.close()


def fill(spool: Path, at_least: int) -> int:
    """Write events through a writer (then closed) until the spool holds `at_least` bytes; what it holds."""
    audit = Audit(spool, max_bytes=4 * at_least)
    try:
        while spool_size(spool) < at_least:
            audit.events(1)
    finally:
        audit.close()
    return spool_size(spool)


class TestMaxBytesIsInclusive:
    """The line that fills the spool to exactly `max_bytes` is accepted; the bound is not one byte lower."""

    def test_first_event_filling_the_spool_exactly_is_written(self, tmp_path: Path) -> None:
        """A new writer on a spool holding `max_bytes - line` bytes writes its first line, reaching `max_bytes`."""
        line = first_line_bytes(tmp_path / "scratch")
        spool = tmp_path / "spool"
        held = fill(spool, SMALLEST_MAX_BYTES - line)
        audit = Audit(spool, max_bytes=held + line)
        try:
            audit.events(1)
            assert spool_size(spool) == held + line, "the premise: that line filled the spool exactly"
        finally:
            audit.close()
