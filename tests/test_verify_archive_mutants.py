"""Archive verification where the mutation run found no test looking (docs/mutation-survivors.md, verify-archive):
each class is the invariant one surviving mutant broke with every test of its group still green.

The archive is the one `tests/test_verify_invariants.py` builds (the real agent on moto, signed digests); each test
edits and re-signs its own copy as a forger with the key would.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.verify_env import subjects
from tests.support.verify_forgery import ArchiveCopy, reseal
from tests.test_verify_invariants import copy, month_boundary_writer, pristine, private_key, run

__all__ = ["copy", "pristine"]  # the fixtures, shared with the invariants module

ZERO_HASH = "0" * 64


class TestNegativeSeqStart:
    """Invariant: a writer's chain starts at seq 0 — not at any seq up to 0."""

    def test_line_before_seq_zero_is_a_gap(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a forged line of seq -1 (prev 64 zeros) put before a writer's seq 0, every digest re-signed,
        is a `seq gap` of that writer (seq is a signed 64-bit integer: -1 is a valid line)."""
        writer, head, _following = month_boundary_writer(copy)
        events = copy.events(head)
        forged = {**events[0], "seq": -1, "prev": ZERO_HASH, "event_id": events[0]["event_id"][:-4] + "ffff"}
        copy.write_events(head, [forged, *events])
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        assert f"writer {writer}" in subjects(report, "seq gap")
