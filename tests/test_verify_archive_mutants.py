"""Archive verification where the mutation run found no test looking (docs/mutation-survivors.md, verify-archive):
each class is the invariant one surviving mutant broke with every test of its group still green.

The archive is the one `tests/test_verify_invariants.py` builds (the real agent on moto, signed digests); each test
edits and re-signs its own copy as a forger with the key would.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.verify_env import kinds, subjects
from tests.support.verify_forgery import ArchiveCopy, first_closing_line, reseal
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


class TestReplayedLineIsNotAContinuation:
    """Invariant: a line continues its writer's run only at exactly the next seq, whatever its prev says."""

    def test_seq_zero_chained_after_the_last_line_is_a_duplicate(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a second seq 0 of a writer, put after its latest line and chained to it (prev = that line's
        hash), digests re-signed, is named `seq 0–0 present more than once` — not taken as the run going on."""
        writer, head, following = month_boundary_writer(copy)
        lines = copy.lines(following)
        first = copy.events(head)[0]
        replay = {**first, "prev": hashlib.sha256(lines[-1]).hexdigest(),
                  "event_id": first["event_id"][:-4] + "eeee"}
        copy.write_lines(following, [*lines, orjson.dumps(replay)])
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        duplicates = [f["detail"] for f in report["findings"]
                      if f["kind"] == "duplicate event" and f["subject"] == f"writer {writer}"]
        assert [d for d in duplicates if d.startswith("seq 0–0 present more than once")], report["findings"]


class TestClosedRecordOfAnOpenWriter:
    """Invariant: a digest's `closed: false` matches any last line that is not the clean-end record."""

    def test_not_closed_over_an_ordinary_event_is_no_mismatch(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a writer recorded not closed whose recorded line is an ordinary event (one whose type sorts
        after `auditlock.writer_closed`) is no `digest closed mismatch`."""
        key, index = first_closing_line(copy)
        events = copy.events(key)
        writer, seq = events[index]["writer"], events[index]["seq"]
        events[index]["event_type"] = "order.updated"
        copy.write_events(key, events)
        recording = _digests_recording(copy, writer, seq)
        assert recording
        for digest in recording:
            body = copy.digest(digest)
            body["writers"][writer]["closed"] = False
            copy.write_digest(digest, body)
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        assert "digest closed mismatch" not in kinds(report), report["findings"]


def _digests_recording(copy: ArchiveCopy, writer: str, seq: int) -> list[str]:
    """The digests whose writer record for `writer` ends at `seq`."""
    return [key for key in copy.stored("digests")
            if copy.digest(key).get("writers", {}).get(writer, {}).get("last_seq") == seq]


class TestClosedWritersAreNotOpen:
    """Invariant: a writer whose last line is its clean-end record is neither open nor missing its tail."""

    def test_clean_archive_has_no_open_writer(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: the agent's clean archive (every writer closed, its events recent) lists no open writer."""
        status, report = run(copy, pristine)

        assert report["open_writers"] == []
        assert (status, report["findings"]) == (0, [])


class TestDirectoryCopySkipsLocks:
    """Invariant: the report says what it could not check — on a directory copy, Object Lock and tags."""

    def test_directory_report_names_the_lock_checks_skipped(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a directory source's report lists the lock, retain-until and tag checks as skipped."""
        _status, report = run(copy, pristine)

        assert [s for s in report["skipped"] if s.startswith("Object Lock mode, retain-until and tags")]


class TestHostileDigestFields:
    """Invariant: a digest's fields are hostile input — a wrong type is a finding or a note, never a crash."""

    def test_app_drops_of_another_shape_are_counted_as_none(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: `app_drops` whose per-writer values are not objects (re-signed) counts no drops and does
        not stop verify."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        body["app_drops"] = {"writer-a": "many", "writer-b": 3}
        copy.resign(newest, body, private_key(pristine))

        status, report = run(copy, pristine)

        assert status == 0, report
        assert f"{newest}: applications reported 0 audit events dropped so far (on_error = drop) by 2 writers; " \
               "see its app_drops" in report["notes"]

    def test_previous_of_another_type_is_a_finding(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a digest whose `previous` is a number (not an object or null) is named, not a crash."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        body["previous"] = 5
        copy.resign(newest, body, private_key(pristine))

        status, report = run(copy, pristine)

        assert status == 1, report
        assert newest in {f["subject"] for f in report["findings"]}


class TestForeignFileInACopy:
    """Invariant: everything under `events/` of a directory copy is an archive object or a finding."""

    def test_nested_file_is_a_foreign_object(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a file one directory deeper than the agent's keys (which readers would never see) is a
        `foreign object` of the copy."""
        month = Path(copy.stored()[0]).parent
        stray = copy.root / month / "nested" / "extra.jsonl.gz"
        stray.parent.mkdir()
        stray.write_bytes(b"")

        _status, report = run(copy, pristine)

        assert f"{month}/nested/extra.jsonl.gz" in subjects(report, "foreign object")


class TestObjectCutShort:
    """Invariant: an events object ends with a newline — one whose last line has none was cut short."""

    def test_missing_final_newline_is_unreadable(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: an object whose content lost its final newline (digests re-listing its new bytes) is an
        `unreadable object` saying it was cut short."""
        key = copy.stored()[0]
        (copy.root / key).write_bytes(gzip.compress(b"\n".join(copy.lines(key)), mtime=0))
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        assert {"kind": "unreadable object", "subject": key,
                "detail": "the last line has no newline (the object was cut short)"} in report["findings"]


class TestSignerNoteOnlyForAKeyring:
    """Invariant: which key signed how many digests is noted only when verify was given several keys."""

    def test_one_key_gives_no_signer_note(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: with the one key every digest is signed by, the report has no per-key signature note."""
        _status, report = run(copy, pristine)

        assert not [n for n in report["notes"] if n.startswith("digest signatures by key")], report["notes"]


class TestPredecessorLinkEitherSide:
    """Invariant: a digest's link to its predecessor is compared for equality — a forged value is named whichever
    side of the true one it sorts on (the archive's hashes and agent ids are random)."""

    @pytest.mark.parametrize("forged", ["00" * 32, "ff" * 32])
    def test_recorded_hash_below_or_above(self, copy: ArchiveCopy, pristine: Path, forged: str) -> None:
        """Invariant: a re-signed successor recording a predecessor hash of all zeros or all ones is named."""
        middle, newest = copy.stored("digests")[1:3]
        body = copy.digest(newest)
        body["previous"]["sha256"] = forged
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert middle in subjects(report, "digest modified")

    @pytest.mark.parametrize("forged", ["0" * 32, "f" * 32])
    def test_agent_below_or_above(self, copy: ArchiveCopy, pristine: Path, forged: str) -> None:
        """Invariant: a re-signed successor claiming an agent id of all zeros or all ones is a broken chain."""
        newest = copy.stored("digests")[2]
        body = copy.digest(newest)
        body["agent"]["id"] = forged
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert newest in subjects(report, "broken digest chain")


def _writer_lines(copy: ArchiveCopy, key: str, writer: str) -> list[int]:
    """Indexes of `writer`'s lines in an object."""
    return [n for n, event in enumerate(copy.events(key)) if event["writer"] == writer]


def _details(report: dict[str, Any], kind: str, subject: str) -> list[str]:
    """The details of the report's findings of one kind and subject."""
    return [f["detail"] for f in report["findings"] if f["kind"] == kind and f["subject"] == subject]


class TestGapInsideAnObject:
    """Invariant: a run of a writer continues only at the next seq — a skipped seq is a gap even when the line
    after it is chained to the line before it."""

    def test_line_removed_and_chain_relinked_is_a_gap(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a middle line removed from an object, its successor's prev re-pointed at the line before,
        digests re-signed, is `seq N–N missing`."""
        writer, head, _following = month_boundary_writer(copy)
        lines, events = copy.lines(head), copy.events(head)
        mine = _writer_lines(copy, head, writer)
        before, removed, after = mine[0], mine[1], mine[2]
        events[after]["prev"] = hashlib.sha256(lines[before]).hexdigest()
        kept = [orjson.dumps(e) if n == after else line for n, (line, e) in enumerate(zip(lines, events, strict=True))
                if n != removed]
        copy.write_lines(head, kept)
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        seq = events[removed]["seq"]
        gaps = _details(report, "seq gap", f"writer {writer}")
        assert [g for g in gaps if g.startswith(f"seq {seq}–{seq} missing")], report["findings"]


class TestChainBreakEitherSide:
    """Invariant: `prev` is compared for equality — a wrong prev is a chain break whichever side of the right
    hash it sorts on (the archive's hashes are random)."""

    @pytest.mark.parametrize("forged", ["0" * 64, "f" * 64])
    def test_middle_line_prev_below_or_above(self, copy: ArchiveCopy, pristine: Path, forged: str) -> None:
        """Invariant: a middle line whose prev is all zeros or all ones (no reseal) is a `chain break`."""
        writer, head, _following = month_boundary_writer(copy)
        events = copy.events(head)
        events[_writer_lines(copy, head, writer)[2]]["prev"] = forged
        copy.write_events(head, events)

        _status, report = run(copy, pristine)

        assert f"writer {writer}" in subjects(report, "chain break")

    @pytest.mark.parametrize("forged", ["", "0" * 63 + "1"])
    def test_first_line_prev_below_or_above_zeros(self, copy: ArchiveCopy, pristine: Path, forged: str) -> None:
        """Invariant: a writer's seq 0 whose prev is not exactly 64 zeros (empty, or one above) is a `chain
        break`."""
        writer, head, _following = month_boundary_writer(copy)
        events = copy.events(head)
        events[_writer_lines(copy, head, writer)[0]]["prev"] = forged
        copy.write_events(head, events)
        reseal(copy, private_key(pristine))  # seq 1 on chained to the edited seq 0: only the start is wrong

        _status, report = run(copy, pristine)

        assert f"writer {writer}" in subjects(report, "chain break")

    @pytest.mark.parametrize("forged", ["0" * 64, "f" * 64])
    def test_next_object_prev_below_or_above(self, copy: ArchiveCopy, pristine: Path, forged: str) -> None:
        """Invariant: the first line of a writer's next object, its prev all zeros or all ones (the object's other
        lines chained to it, no reseal), is a `chain break` across the objects."""
        writer, _head, following = month_boundary_writer(copy)
        events = copy.events(following)
        mine = _writer_lines(copy, following, writer)
        events[mine[0]]["prev"] = forged
        for before, after in itertools.pairwise(mine):  # the rest of the object chained to the edited line
            events[after]["prev"] = hashlib.sha256(orjson.dumps(events[before])).hexdigest()
        copy.write_events(following, events)

        _status, report = run(copy, pristine)

        assert f"writer {writer}" in subjects(report, "chain break")


class TestRecordedLastHashEitherSide:
    """Invariant: a digest's recorded `last_hash` is compared for equality with the line it names."""

    @pytest.mark.parametrize("forged", ["0" * 64, "f" * 64])
    def test_last_hash_below_or_above(self, copy: ArchiveCopy, pristine: Path, forged: str) -> None:
        """Invariant: the newest digest re-signed with a writer's last_hash all zeros or all ones is a `digest
        hash mismatch`."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        writer = sorted(body["writers"])[0]
        body["writers"][writer]["last_hash"] = forged
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert newest in subjects(report, "digest hash mismatch")


class TestWriterGoneFromTheArchive:
    """Invariant: a writer a digest records must have events in the archive."""

    def test_every_object_of_a_writer_removed(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: all objects of a writer removed (digests re-signed without them, its writer record kept)
        is a `seq gap` saying no event of that writer is in the archive."""
        writer, _head, _following = month_boundary_writer(copy)
        objects = copy.writer_objects(writer)
        assert all({e["writer"] for e in copy.events(key)} == {writer} for key in objects)
        for key in objects:
            copy.remove(key)
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        gaps = _details(report, "seq gap", f"writer {writer}")
        assert [g for g in gaps if g.endswith("and no event of this writer is in the archive")], report["findings"]


class TestLinesThatAreNotEvents:
    """Invariant: a line of an events object that is JSON but not an event — an object missing an event's keys, or
    not an object at all — is a named bad line of an `unreadable object`, never a crash of verify."""

    @pytest.mark.parametrize("line", [b'{"writer":"ab","seq":1}', b"[1,2,3]", b'"text"'],
                             ids=["object-missing-keys", "array", "string"])
    def test_json_that_is_not_an_event_is_a_bad_line(self, copy: ArchiveCopy, pristine: Path, line: bytes) -> None:
        """Invariant: such a line appended to an object, digests re-signed, is named by its line number."""
        key = copy.stored()[0]
        lines = copy.lines(key)
        copy.write_lines(key, [*lines, line])
        reseal(copy, private_key(pristine))

        status, report = run(copy, pristine)

        assert status == 1
        assert {"kind": "unreadable object", "subject": key,
                "detail": f"lines {len(lines) + 1} are not auditlock/1 events"} in report["findings"]
