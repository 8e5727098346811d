"""verify's archive checks where the mutation run's survivors were left "missing test" (docs/mutation-survivors.md,
verify-archive): each class is the invariant one surviving mutant broke with every test of its group still green.

Most tests edit their own copy of the archive `tests/test_verify_invariants.py` builds (the real agent on moto,
signed digests) as a forger with the signing key would, and run `verify --source DIR`; the retain-until test needs
Object Lock, so it PUTs its object on moto and runs `verify_archive` over `S3Source`.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.archive import layout
from auditlock.archive.timerange import TimeRange
from auditlock.config.model import RetentionClass
from auditlock.verify.archive import ArchiveOptions, verify_archive
from auditlock.verify.findings import DIGEST_MODIFIED, UNDER_RETAINED_OBJECT
from auditlock.verify.source import S3Source
from tests.support.verify_env import kinds, subjects
from tests.support.verify_forgery import ArchiveCopy, reseal
from tests.test_verify_invariants import (
    copy,
    month_boundary_writer,
    month_of,
    only_finding,
    pristine,
    private_key,
    run,
)
from tests.test_verify_s3_lock_mutants import classes
from tests.test_verify_s3_mutants import lock_bucket, put, source

__all__ = ["classes", "copy", "lock_bucket", "pristine", "source"]  # the fixtures, shared with their modules

ZERO_HASH = "0" * 64


def _details(report: dict[str, Any], kind: str, subject: str) -> list[str]:
    """The details of the report's findings of one kind and subject."""
    return [f["detail"] for f in report["findings"] if f["kind"] == kind and f["subject"] == subject]


def _writer_lines(copy: ArchiveCopy, key: str, writer: str) -> list[int]:
    """Indexes of `writer`'s lines in an object."""
    return [n for n, event in enumerate(copy.events(key)) if event["writer"] == writer]


def _event_id(n: int) -> str:
    """A fixed event id no agent wrote (the archive's ids are random UUIDs)."""
    return str(uuid.UUID(int=0xA0D17 << 64 | n))


def _shift_month(year: int, month: int, by: int) -> tuple[int, int]:
    months = year * 12 + month - 1 + by
    return months // 12, months % 12 + 1


def _moved_key(key: str, by: int) -> str:
    """A digest key moved `by` months: `digests/year=YYYY/month=MM/<YYYYMM…stamp>-<agent>.json`."""
    kind, year_part, month_part, name = key.split("/")
    year, month = _shift_month(int(year_part.removeprefix("year=")), int(month_part.removeprefix("month=")), by)
    return f"{kind}/year={year:04d}/month={month:02d}/{year:04d}{month:02d}{name[6:]}"


def _move_digest(copy: ArchiveCopy, key: str, by: int) -> str:
    """Move a digest of the copy `by` months (reseal then renames it in its successor's `previous`)."""
    moved = _moved_key(key, by)
    (copy.root / moved).parent.mkdir(parents=True, exist_ok=True)
    (copy.root / key).rename(copy.root / moved)
    return moved


def _next_month(key: str) -> str:
    """`YYYY-MM` of the month after an archive key's month."""
    year, month = month_of(key).split("-")
    return "{:04d}-{:02d}".format(*_shift_month(int(year), int(month), 1))


class TestRunsAfterAContainedDuplicate:
    """Invariant: a run contained in an earlier one (a duplicated object) is named, and the walk goes on: the
    writer's later runs are still checked."""

    def test_gap_after_a_duplicated_object_is_named(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a writer's head object stored twice and a middle line of its next object removed (digests
        re-signed) is a duplicate *and* a `seq N–N missing` between the two runs of the next object."""
        writer, head, following = month_boundary_writer(copy)
        twin = f"{head.rsplit('-', 1)[0]}-{'f' * 32}.jsonl.gz"  # the same stamp and class, another content
        (copy.root / twin).write_bytes((copy.root / head).read_bytes())
        lines = copy.lines(following)
        removed = _writer_lines(copy, following, writer)[2]
        seq = copy.events(following)[removed]["seq"]
        copy.write_lines(following, [line for n, line in enumerate(lines) if n != removed])
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        assert [d for d in _details(report, "duplicate event", f"writer {writer}")
                if d.startswith("seq 0–")], report["findings"]
        assert f"seq {seq}–{seq} missing (between {following} and {following})" in \
            _details(report, "seq gap", f"writer {writer}"), report["findings"]


class TestRunsJoinAcrossObjects:
    """Invariant: a writer's run in its next object continues its previous run exactly when its first seq is the
    next one — compared by value (past seq 256 no two ints are one object), a one-seq jump is a gap."""

    def test_long_writer_continuing_in_its_next_object_is_clean(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a writer of 300 more events (its head object seq 0–304, its next object from seq 305 on,
        digests re-signed with its records moved along) verifies clean: no duplicate, no gap."""
        writer, head, following = month_boundary_writer(copy)
        extra = 300
        events = copy.events(head)
        last = events[-1]
        filler = [{**last, "seq": last["seq"] + n, "event_id": _event_id(n)} for n in range(1, extra + 1)]
        copy.write_events(head, events + filler)
        copy.write_events(following, [{**e, "seq": e["seq"] + extra} if e["writer"] == writer else e
                                      for e in copy.events(following)])
        for key in copy.stored("digests"):
            body = copy.digest(key)
            recorded = body["writers"].get(writer)
            if recorded is not None:
                for field in ("first_seq", "last_seq"):
                    recorded[field] += extra if recorded[field] > last["seq"] else 0
                copy.write_digest(key, body)
        reseal(copy, private_key(pristine))
        assert copy.events(following)[_writer_lines(copy, following, writer)[0]]["seq"] > 256

        status, report = run(copy, pristine)

        assert report["findings"] == []
        assert status == 0

    def test_one_seq_missing_between_objects_is_a_gap(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: the first line of a writer's next object removed (digests re-signed) is `seq N–N missing`
        between the two objects — not a duplicate."""
        writer, head, following = month_boundary_writer(copy)
        first = _writer_lines(copy, following, writer)[0]
        seq = copy.events(following)[first]["seq"]
        copy.write_lines(following, [line for n, line in enumerate(copy.lines(following)) if n != first])
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        assert _details(report, "seq gap", f"writer {writer}") == [
            f"seq {seq}–{seq} missing (between {head} and {following})"]
        assert "duplicate event" not in kinds(report), report["findings"]


KEY = "events/year=2100/month=01/21000102T000000Z-standard-0123456789abcdef0123456789abcdef.jsonl.gz"
EARLY, LATE = "2100-01-02T00:00:00.000000Z", "2100-01-20T00:00:00.000000Z"


def _chained(times: list[str]) -> bytes:
    """JSONL of one writer's events seq 0.. at these times, each chained to the one before."""
    lines, prev = [], ZERO_HASH
    for seq, occurred_at in enumerate(times):
        line = orjson.dumps({"v": 1, "event_id": _event_id(seq), "writer": "w1", "seq": seq, "prev": prev,
                             "occurred_at": occurred_at, "event_type": "order.updated"})
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    return b"".join(line + b"\n" for line in lines)


class TestRetainUntilFromTheLatestEvent:
    """Invariant: an object's retain-until is checked against its latest event, wherever that lies in it — not
    its last line's time."""

    def test_later_event_before_the_last_line(self, source: S3Source,
                                              classes: Mapping[str, RetentionClass]) -> None:
        """Invariant: an object locked for its last line's time whose earlier line is later is under-retained."""
        days = classes["standard"].days
        put(source, KEY, gzip.compress(_chained([LATE, EARLY]), mtime=0), Tagging=layout.object_tags("standard"),
            ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=layout.retain_until(EARLY, days))

        report = verify_archive(source, ArchiveOptions(time_range=TimeRange(), classes=classes))

        details = [f.detail for f in report.findings if f.kind == UNDER_RETAINED_OBJECT and f.subject == KEY]
        assert [d for d in details if f"(last event {LATE} + {days} days" in d], report.findings


class TestHostileWriterRecordHash:
    """Invariant: a digest's writer record whose `last_hash` is missing or not a string is named (`digest
    modified`, the writer in the detail) — never compared as a hash, never skipped in silence, never a crash."""

    @pytest.mark.parametrize("last_hash", [None, 5, ["0" * 64]], ids=["missing", "number", "list"])
    def test_record_without_a_string_hash(self, copy: ArchiveCopy, pristine: Path, last_hash: Any) -> None:
        """Invariant: the newest digest re-signed with a writer's last_hash removed, a number or a list: that
        digest is the one finding, naming the writer (the record's hash was the only edit)."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        writer = sorted(body["writers"])[0]
        recorded = body["writers"][writer]
        if last_hash is None:
            del recorded["last_hash"]
        else:
            recorded["last_hash"] = last_hash
        copy.resign(newest, body, private_key(pristine))

        status, report = run(copy, pristine)

        finding = only_finding(status, report, DIGEST_MODIFIED)
        assert finding["subject"] == newest
        assert finding["detail"].startswith("1 writer records are not the agent's")
        assert finding["detail"].endswith(f": {writer}")


class TestCaptureGapByItsType:
    """Invariant: exactly the events of type `auditlock.capture_gap` are named capture gaps."""

    @pytest.mark.parametrize("event_type", ["account.created", "auditlock.agent_started", "auditlock.capture_ga"])
    def test_types_sorting_before_are_not_gaps(self, copy: ArchiveCopy, pristine: Path, event_type: str) -> None:
        """Invariant: an event re-typed (digests re-signed) to a type sorting before `auditlock.capture_gap` is no
        capture gap."""
        writer, head, _following = month_boundary_writer(copy)
        events = copy.events(head)
        events[_writer_lines(copy, head, writer)[1]]["event_type"] = event_type
        copy.write_events(head, events)
        reseal(copy, private_key(pristine))

        status, report = run(copy, pristine)

        assert report["findings"] == []
        assert status == 0

    def test_capture_gap_event_is_named(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: an event of type `auditlock.capture_gap` (digests re-signed) is a `capture gap` by its id."""
        writer, head, _following = month_boundary_writer(copy)
        events = copy.events(head)
        event = events[_writer_lines(copy, head, writer)[1]]
        event["event_type"] = "auditlock.capture_gap"
        copy.write_events(head, events)
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        assert subjects(report, "capture gap") == {f"event {event['event_id']}"}


class TestFieldTypesOfALine:
    """Invariant: a line whose fields are all there but one is of the wrong type is a named bad line — never a
    crash of verify."""

    @pytest.mark.parametrize("wrong", [{"seq": "7"}, {"writer": 7}, {"occurred_at": 7}, {"event_id": 7}],
                             ids=["seq-text", "writer-number", "occurred-at-number", "event-id-number"])
    def test_one_field_of_another_type(self, copy: ArchiveCopy, pristine: Path, wrong: dict[str, Any]) -> None:
        """Invariant: an event of a writer of its own appended to an object, only its `seq` a string or only its
        `writer`, `occurred_at` or `event_id` a number, is named by its line number (not resealed: the forger's
        relinking reads seq as a number; the object's new bytes are a `modified object` besides)."""
        key = copy.stored()[0]
        lines = copy.lines(key)
        event = {**copy.events(key)[0], "writer": "forged-writer", "seq": 7, "event_id": _event_id(7), **wrong}
        copy.write_lines(key, [*lines, orjson.dumps(event)])

        status, report = run(copy, pristine)

        assert status == 1
        assert {"kind": "unreadable object", "subject": key,
                "detail": f"lines {len(lines) + 1} are not auditlock/1 events"} in report["findings"]


class TestModifiedObjectEitherSide:
    """Invariant: an object's bytes are compared for equality with its listed SHA-256 — a mismatch is named
    whichever side of the listed hash the real one sorts on."""

    @pytest.mark.parametrize("listed", ["0" * 64, "f" * 64], ids=["listed-below", "listed-above"])
    def test_listed_hash_below_or_above(self, copy: ArchiveCopy, pristine: Path, listed: str) -> None:
        """Invariant: the newest digest re-signed listing an object's SHA-256 as all zeros or all f's (below or
        above any real one) names that object `modified object`."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        entry = body["objects"][0]
        entry["sha256"] = listed
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert subjects(report, "modified object") == {entry["key"].removeprefix("audit/")}


class TestPredecessorAtTheMonthsEdge:
    """Invariant: under a month range a missing predecessor digest is a finding if its month is read (the range
    widened by one month), a note only if it lies before."""

    def test_removed_predecessor_in_the_first_month_read(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: with --since the month after the digests' month (so their month is the first one read),
        the middle digest removed (not resealed) leaves its successor's chain broken."""
        middle, newest = copy.stored("digests")[1:3]
        _writer, head, _following = month_boundary_writer(copy)
        assert month_of(middle) == month_of(newest) == month_of(head)
        copy.remove(middle)
        after = _next_month(head)

        _status, report = run(copy, pristine, "--since", after, "--until", after)

        assert _details(report, "broken digest chain", newest) == [f"its previous digest {middle} is missing"]

    def test_predecessor_before_the_first_month_read(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: the first digest moved a month earlier (resealed) and --since the month after the others:
        the second digest's predecessor lies before the months read — a note, no broken chain."""
        first, second = copy.stored("digests")[:2]
        _writer, head, _following = month_boundary_writer(copy)
        moved = _move_digest(copy, first, -1)
        reseal(copy, private_key(pristine))
        after = _next_month(head)

        _status, report = run(copy, pristine, "--since", after, "--until", after)

        assert "broken digest chain" not in kinds(report), report["findings"]
        assert f"{second}: its previous digest {moved} lies before the selected months" in report["notes"]


class TestDigestSchemaEitherSide:
    """Invariant: a digest of any schema but `auditlock-digest/1` is refused — below it as above it."""

    @pytest.mark.parametrize("schema", ["auditlock-digest/0", "auditlock-digest/9"])
    def test_other_schema_is_modified(self, copy: ArchiveCopy, pristine: Path, schema: str) -> None:
        """Invariant: the newest digest re-signed with schema `/0` or `/9` is `digest modified`."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        body["schema"] = schema
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert _details(report, "digest modified", newest) == ["not an auditlock-digest/1 JSON object"]


class TestDigestsOfTheNeighbouringMonths:
    """Invariant: a month range reads the digests of one month either side — an agent lists a month's objects in
    a digest of the month before (events dated ahead) or after (a month's last events shipped in the next)."""

    def test_objects_of_the_month_after_their_digests(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: the month of the writer's next object alone, whose digest lies a month earlier (as the
        agent wrote it), verifies clean: every object there is listed."""
        _writer, head, following = month_boundary_writer(copy)
        assert {month_of(key) for key in copy.stored("digests")} == {month_of(head)}
        month = month_of(following)

        status, report = run(copy, pristine, "--since", month, "--until", month)

        assert report["counts"]["objects"] > 0
        assert report["findings"] == []
        assert status == 0

    def test_digests_shipped_in_the_next_month(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: every digest moved a month later (resealed, as an agent shipping the month's last batch in
        the next month writes it) and the objects' month alone verified: every object there is listed."""
        _writer, head, _following = month_boundary_writer(copy)
        for key in copy.stored("digests"):
            _move_digest(copy, key, 1)
        reseal(copy, private_key(pristine))
        month = month_of(head)

        status, report = run(copy, pristine, "--since", month, "--until", month)

        assert report["counts"]["objects"] > 0
        assert report["findings"] == []
        assert status == 0
