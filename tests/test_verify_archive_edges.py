"""Archive verification at its edges: a second chain start of one agent is a finding; what agents recorded for an
auditor (a recovery from damaged state, applications' dropped events) becomes notes; the signature skip note
appears only without a key; an object's bad lines are named by their line numbers. Found by the mutation run
(docs/mutation-survivors.md): each of these mutants left every fast test green.

The archive is the one `tests/test_verify_invariants.py` builds (the real agent on moto, signed digests); each test
edits and re-signs its own copy as a forger with the key would.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.verify_env import subjects
from tests.support.verify_forgery import PREFIX, ArchiveCopy, first_closing_line, reseal
from tests.test_verify_invariants import copy, month_of, pristine, private_key, run

__all__ = ["copy", "pristine"]  # the fixtures, shared with the invariants module


class TestChainStarts:
    """Invariant: one agent starts one chain — a second digest with no predecessor is named."""

    def test_second_start_of_one_agent(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (the chain is one chain): a re-signed newest digest claiming `previous: null` is a finding."""
        first, _middle, newest = copy.stored("digests")
        body = copy.digest(newest)
        agent, body["previous"] = body["agent"]["id"], None
        copy.resign(newest, body, private_key(pristine))

        status, report = run(copy, pristine)

        assert status == 1
        assert f"agent {agent}" in subjects(report, "broken digest chain")
        [start] = [f for f in report["findings"] if f["subject"] == f"agent {agent}"]
        assert start["detail"] == f"2 digests start a chain (previous is null): {first}, {newest}"


class TestSignatureSkipNote:
    """Invariant: the report says signatures were not checked exactly when no public key was given."""

    def test_note_only_without_a_key(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (the report says what it did not check, and only that): no key → skipped; a key → not."""
        note = "digest signatures: no --public-key given"
        _status, unsigned = run(copy, pristine, signed=False)
        _status, signed = run(copy, pristine)
        assert (note in unsigned["skipped"], note in signed["skipped"]) == (True, False)


class TestAgentRecordsBecomeNotes:
    """Invariant: what an agent recorded for an auditor is shown as a note (never silently dropped)."""

    def test_app_drops_and_state_recovery_are_noted(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (every allowed drop exported): a digest's `app_drops` and `state_recovery` appear as notes."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        body["app_drops"] = {"a" * 32: {"dropped": {"queue_full": 3, "encode": 2}}}
        body["state_recovery"] = {"damaged_file": "digest-chain.json", "recovered_at": "2026-01-02T03:04:05Z"}
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert f"{newest}: applications reported 5 audit events dropped so far (on_error = drop) by 1 writers; see " \
               "its app_drops" in report["notes"]
        assert any(note.startswith(f"{newest}: the agent recovered from a damaged state file (digest-chain.json)")
                   for note in report["notes"])


class TestBadLinesNamed:
    """Invariant: an events object's unreadable lines are named by their 1-based line numbers."""

    def test_second_line_replaced(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (named findings): garbage on line 2 → "lines 2 are not auditlock/1 events"."""
        key = copy.stored()[0]
        lines = copy.lines(key)
        copy.write_lines(key, [lines[0], b"not an event", *lines[2:]])

        _status, report = run(copy, pristine)

        assert {"kind": "unreadable object", "subject": key, "detail": "lines 2 are not auditlock/1 events"} \
            in report["findings"]

    def test_eleven_bad_lines_name_ten_and_count_the_rest(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (bounded, exact detail): 11 garbage lines name the first 10 and count the eleventh."""
        key = max(copy.stored(), key=lambda k: len(copy.lines(k)))
        lines = copy.lines(key)
        assert len(lines) > 12
        copy.write_lines(key, [lines[0], *[b"not an event"] * 11, *lines[12:]])

        _status, report = run(copy, pristine)

        assert {"kind": "unreadable object", "subject": key,
                "detail": "lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 1 more are not auditlock/1 events"} \
            in report["findings"]

    def test_a_line_verify_names_is_not_named_again_as_skipped(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (one finding per fault): garbage on line 2 is one finding; the list of lines readers skip
        leaves out the lines already named (both numbered from 1)."""
        key = copy.stored()[0]
        lines = copy.lines(key)
        copy.write_lines(key, [lines[0], b"not an event", *lines[2:]])

        _status, report = run(copy, pristine)

        assert [f["detail"] for f in report["findings"] if f["subject"] == key and
                f["kind"] == "unreadable object"] == \
            ["lines 2 are not auditlock/1 events"]


class TestClosedRecordChecked:
    """Invariant: a digest's `closed` for a writer's last line is checked against that line, whatever its type."""

    def test_clean_end_recorded_over_an_ordinary_event(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (a clean end is the `auditlock.writer_closed` record and no other): a digest recording
        `closed` over a line whose event type sorts before that one (`account.closed`) is named."""
        key, index = first_closing_line(copy)
        events = copy.events(key)
        events[index]["event_type"] = "account.closed"
        copy.write_events(key, events)
        reseal(copy, private_key(pristine))

        _status, report = run(copy, pristine)

        [mismatch] = [f for f in report["findings"] if f["kind"] == "digest closed mismatch"]
        assert "records the writer closed (a clean end), the archive's line is 'account.closed'" \
            in mismatch["detail"]


class TestDigestSchema:
    """Invariant: a digest is read only under exactly its schema, `auditlock-digest/1`."""

    def test_later_schema_is_not_read(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (hostile input is refused by name): a re-signed digest claiming a schema that sorts after
        the known one is a `digest modified` finding, not read as if it were that schema."""
        newest = copy.stored("digests")[-1]
        body = copy.digest(newest)
        body["schema"] = "auditlock-digest/9"
        copy.resign(newest, body, private_key(pristine))

        _status, report = run(copy, pristine)

        assert newest in subjects(report, "digest modified")


class TestRangeChainLinks:
    """Invariant: with --since, a predecessor inside the range that is gone is still a broken link."""

    def test_removed_middle_digest_under_since(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: only a predecessor before the range's first month is excused; a removed one in the range
        is named as missing (not noted as lying before the selected months)."""
        first, removed, successor = copy.stored("digests")
        copy.remove(removed)

        _status, report = run(copy, pristine, "--since", month_of(first))

        [broken] = [f for f in report["findings"] if f["kind"] == "broken digest chain"]
        assert (broken["subject"], broken["detail"]) == (successor, f"its previous digest {removed} is missing")


class TestNothingToVerify:
    """Invariant: "nothing to verify" means no digest, no events object and no finding — any one of them is enough."""

    def test_digests_alone_are_something_to_verify(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (the source is the right one): --until the month before the archive's first reads the
        digests one month on (ranges are widened by a month for digests) and no events object: not "nothing".
        (The digests' months are the agent's real clock: a build across a month's end puts some in the next.)"""
        digest_months = [month_of(key) for key in copy.stored("digests")]
        year, month = map(int, digest_months[0].split("-"))
        before = f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"

        status, report = run(copy, pristine, "--until", before)

        in_first_month = digest_months.count(digest_months[0])
        assert (status, report["counts"].get("digests"), report["counts"].get("objects")) == (0, in_first_month, None)
        assert report["nothing_to_verify"] is False


class TestMissingObject:
    """Invariant: an events object a digest lists and the archive lacks is named, with the digest listing it."""

    def test_removed_object_names_its_digest(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (no event lost silently): a removed events object is `missing object`, naming its digest."""
        digest = copy.stored("digests")[0]
        key = copy.digest(digest)["objects"][0]["key"].removeprefix(PREFIX)
        copy.remove(key)

        _status, report = run(copy, pristine)

        assert {"kind": "missing object", "subject": key, "detail": f"listed in {digest} but not in the archive"} \
            in report["findings"]


class TestEventIdNotHex:
    """Invariant: an event id that is not a hex UUID is compared as text, never a crash of verify."""

    def test_text_event_id_is_verified(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant (everything read is hostile): a resealed line whose `event_id` is `not-a-uuid` is verified
        (the report lists the object's events), with the id compared as text."""
        key = copy.stored()[0]
        events = copy.events(key)
        events[1]["event_id"] = "not-a-uuid"
        copy.write_events(key, events)
        reseal(copy, private_key(pristine))

        status, report = run(copy, pristine)

        assert status in (0, 1)
        assert report["counts"]["events"] > len(events)
