"""verify's lock, tag, legal-hold and digest-loading checks on S3, where the mutation run found no test looking
(docs/mutation-survivors.md, verify-archive, "S3 only"; the reading and version checks are in
`tests/test_verify_s3_mutants.py`, whose bucket fixtures these tests share).

Heads are what `S3Source.head` reads from objects PUT on moto with the lock, tags or legal hold under test; the
retention classes are read from a config file, as `auditlock verify` reads them.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.archive import layout
from auditlock.archive.timerange import TimeRange
from auditlock.config import load_config
from auditlock.config.model import RetentionClass
from auditlock.verify import objects
from auditlock.verify.archive import ArchiveOptions, verify_archive
from auditlock.verify.digests import load_digests
from auditlock.verify.findings import (
    DIGEST_MODIFIED,
    FOREIGN_OBJECT,
    MISSING_OBJECT,
    OVERWRITTEN_OBJECT,
    UNDER_RETAINED_OBJECT,
    UNLOCKED_OBJECT,
    UNTAGGED_OBJECT,
    Report,
)
from auditlock.verify.source import ObjectHead, S3Source
from tests.support.archive_env import CONFIG_TEMPLATE
from tests.test_verify_s3_mutants import KEY, LATER, PREFIX, delete, lock_bucket, put, sha, source

__all__ = ["lock_bucket", "source"]  # the fixtures, shared with the reading and versions module

LAST = "2026-12-02T03:04:05.000000Z"  # the latest event of every object here
DIGEST = "digests/year=2026/month=12/{}.json"


@pytest.fixture
def classes(tmp_path: Path) -> Mapping[str, RetentionClass]:
    """The classes of the test config (`standard`: GOVERNANCE, `security`: COMPLIANCE), read from its file."""
    path = tmp_path / "auditlock.toml"
    path.write_text(CONFIG_TEMPLATE.format(spool=tmp_path / "spool", segment_max_bytes=4096, standard_days=10,
                                           security_days=20, bucket="b", endpoint="http://127.0.0.1:1",
                                           region="us-east-1", batch_max_bytes=1 << 20, batch_max_age_s=1))
    return load_config(path).retention.classes


def head_of(source: S3Source, retention: str = "standard", tags: str | None = None, **lock: Any) -> ObjectHead:
    """PUT KEY with `lock` (ObjectLockMode=…, …) and tags (default: the agent's for `retention`); its HEAD."""
    put(source, KEY, b"x\n", Tagging=layout.object_tags(retention) if tags is None else tags, **lock)
    head = source.head(KEY)
    assert head is not None
    return head


def locked(mode: str, until: dt.datetime = LATER) -> dict[str, Any]:
    """Object Lock arguments of a PUT."""
    return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}


def check(head: ObjectHead, retention: str | None, classes: Mapping[str, RetentionClass] | None,
          last: str = LAST) -> Report:
    """`check_lock` of KEY into a fresh report."""
    report = Report("test")
    objects.check_lock(KEY, head, retention, last, classes=classes, report=report)
    return report


class TestLockMode:
    """Invariant: a class in COMPLIANCE mode needs a COMPLIANCE lock; a lock of the class's mode passes."""

    def test_governance_lock_of_a_compliance_class(self, source: S3Source,
                                                   classes: Mapping[str, RetentionClass]) -> None:
        """GOVERNANCE (bypassable) on a `security` (COMPLIANCE) object: under-retained, the mode named."""
        report = check(head_of(source, "security", **locked("GOVERNANCE")), "security", classes)
        [finding] = report.findings
        assert (finding.kind, finding.detail) == (UNDER_RETAINED_OBJECT, "lock mode GOVERNANCE, class 'security' "
                                                  "requires COMPLIANCE (GOVERNANCE can be bypassed)")

    @pytest.mark.parametrize(("retention", "mode"), [("security", "COMPLIANCE"), ("standard", "GOVERNANCE")])
    def test_the_class_mode_passes(self, source: S3Source, classes: Mapping[str, RetentionClass], retention: str,
                                   mode: str) -> None:
        """A long enough lock in the class's own mode (as S3 reports it), tagged: no finding."""
        assert check(head_of(source, retention, **locked(mode)), retention, classes).findings == []


class TestRetainUntil:
    """Invariant: retain-until short of the class's days after the latest event is named with what was found."""

    def test_short_lock_names_its_retain_until(self, source: S3Source, classes: Mapping[str, RetentionClass]) -> None:
        """Locked until a day after the last event, class of 10 days: under-retained, both dates in the detail."""
        head = head_of(source, **locked("GOVERNANCE", dt.datetime(2026, 12, 3, tzinfo=dt.UTC)))
        [finding] = check(head, "standard", classes).findings
        assert head.retain_until is not None
        assert finding.kind == UNDER_RETAINED_OBJECT
        assert finding.detail.startswith(f"retain-until {head.retain_until.isoformat()} is before 2026-12-12")

    def test_unlocked_object_is_only_unlocked(self, source: S3Source, classes: Mapping[str, RetentionClass]) -> None:
        """No lock at all on an object of a known class: `unlocked object` alone (no retain-until to compare)."""
        report = check(head_of(source), "standard", classes)
        assert [f.kind for f in report.findings] == [UNLOCKED_OBJECT]
        assert report.notes == []


class TestUnknownClass:
    """Invariant: when the class or the last event is unknown, retain-until is not checked and a note says so
    (for a locked object) — never a crash, never a guess."""

    @pytest.mark.parametrize(("retention", "known", "last"), [(None, True, LAST), ("gold", True, LAST),
                                                              ("standard", False, LAST), ("standard", True, "")])
    def test_locked_object_gets_a_note(self, source: S3Source, classes: Mapping[str, RetentionClass],
                                       retention: str | None, known: bool, last: str) -> None:
        """A locked object whose class is None, not configured, or not given any classes, or whose last event is
        unknown: a note, no under-retained finding."""
        tags = layout.object_tags(retention or "standard")
        report = check(head_of(source, tags=tags, **locked("GOVERNANCE")), retention, classes if known else None,
                       last)
        assert UNDER_RETAINED_OBJECT not in report.kinds()
        assert report.notes == [f"{KEY}: retention class {retention!r} unknown here; retain-until not checked"]

    def test_unlocked_object_gets_no_note(self, source: S3Source, classes: Mapping[str, RetentionClass]) -> None:
        """An unlocked object of an unknown class: `unlocked object`, and no note about retain-until."""
        report = check(head_of(source, tags=layout.object_tags("gold")), "gold", classes)
        assert UNLOCKED_OBJECT in report.kinds()
        assert report.notes == []


class TestTags:
    """Invariant: the schema tag, and the class tag when the class is known, must be exactly the agent's."""

    @pytest.mark.parametrize("tag", ["aaa", "zzz"])  # sorting before and after `standard`
    def test_wrong_class_tag(self, source: S3Source, classes: Mapping[str, RetentionClass], tag: str) -> None:
        """A class tag other than the object's class: `untagged object` naming it."""
        head = head_of(source, tags=layout.object_tags(tag), **locked("GOVERNANCE"))
        [finding] = check(head, "standard", classes).findings
        assert finding.kind == UNTAGGED_OBJECT
        assert finding.detail.startswith(f"tags {layout.TAG_RETENTION}='{tag}' (wanted 'standard')")

    def test_missing_tags(self, source: S3Source, classes: Mapping[str, RetentionClass]) -> None:
        """No tags at all: `untagged object` naming both."""
        [finding] = check(head_of(source, tags="", **locked("GOVERNANCE")), "standard", classes).findings
        assert finding.kind == UNTAGGED_OBJECT
        assert f"{layout.TAG_RETENTION}=None" in finding.detail
        assert f"{layout.TAG_SCHEMA}=None" in finding.detail

    def test_unknown_class_checks_the_schema_tag_only(self, source: S3Source) -> None:
        """No class known (None): any class tag passes, the schema tag is still checked."""
        head = head_of(source, tags=layout.object_tags("whatever"), **locked("GOVERNANCE"))
        assert UNTAGGED_OBJECT not in check(head, None, None).kinds()


class TestLegalHold:
    """Invariant: the keys under a legal hold, and only those, are listed in the report."""

    def test_held_key_is_listed(self, source: S3Source) -> None:
        """Two objects, one under a legal hold: HEAD says so, and verify lists that key alone."""
        held = KEY.replace("standard", "security")
        put(source, KEY, b"free\n", Tagging=layout.object_tags("standard"), **locked("GOVERNANCE"))
        put(source, held, b"held\n", Tagging=layout.object_tags("security"), ObjectLockLegalHoldStatus="ON")
        assert source.head(held).legal_hold  # type: ignore[union-attr]
        assert not source.head(KEY).legal_hold  # type: ignore[union-attr]
        assert verify_archive(source, ArchiveOptions()).legal_holds == [held]


class TestDigestLockBasis:
    """Invariant: a digest must be locked as its longest-locked listed object — the first of equals, as the
    agent's `max` picks it — and an entry that cannot say is skipped, not fatal."""

    @staticmethod
    def entry(retention: str, last: str = LAST) -> dict[str, Any]:
        """One listed object of a digest body."""
        return {"retention": retention, "last_occurred_at": last}

    @pytest.mark.parametrize("order", [1, -1])
    def test_the_longest_locked_entry(self, classes: Mapping[str, RetentionClass], order: int) -> None:
        """`security` (20 days) outlasts `standard` (10) listed before or after it."""
        body = {"objects": [self.entry("standard"), self.entry("security")][::order]}
        assert objects.digest_lock_basis(body, classes) == ("security", LAST)

    def test_the_first_of_equals(self, classes: Mapping[str, RetentionClass]) -> None:
        """`security` 20 days after the 2nd and `standard` 10 days after the 12th end together: the first."""
        body = {"objects": [self.entry("security", "2026-12-02T00:00:00.000000Z"),
                            self.entry("standard", "2026-12-12T00:00:00.000000Z")]}
        assert objects.digest_lock_basis(body, classes) == ("security", "2026-12-02T00:00:00.000000Z")

    def test_hostile_entries_are_skipped(self, classes: Mapping[str, RetentionClass]) -> None:
        """Entries without a last event, of another type, with a bad date or an unknown class go before a good
        one: the good one is the basis."""
        body = {"objects": [{"retention": "security"}, 7, self.entry("security", "yesterday"),
                            self.entry("gold"), self.entry("standard")]}
        assert objects.digest_lock_basis(body, classes) == ("standard", LAST)

    def test_no_known_class(self) -> None:
        """No classes given: no basis."""
        assert objects.digest_lock_basis({"objects": [self.entry("standard")]}, None) == (None, "")


class TestClassOfAnUnlistedObject:
    """Invariant: an object no digest lists has the class its name says."""

    def test_class_from_the_name(self) -> None:
        """The agent's name `<stamp>-<class>-<32 hex>.jsonl.gz` gives the class; another name gives none."""
        assert objects.class_of(KEY, []) == "standard"
        assert objects.class_of("events/year=2026/month=12/forged.jsonl.gz", []) is None


def digest(agent: Any = None, previous: dict[str, str] | None = None, objects: Any = (),
           writers: Any = None) -> bytes:
    """A digest body (unsigned) as the agent encodes it."""
    return orjson.dumps({"schema": "auditlock-digest/1", "agent": {"id": "a1"} if agent is None else agent,
                         "previous": previous, "objects": list(objects), "writers": writers or {}},
                        option=orjson.OPT_SORT_KEYS)


def loaded(source: S3Source) -> tuple[Report, Any]:
    """load_digests over the whole tree, with its versions; (report, the digest set)."""
    report = Report("test")
    return report, load_digests(source, None, report, source.list_versions("digests", None))


class TestDigestsLoaded:
    """Invariant: every readable digest is loaded, whatever comes before it in key order; an overwritten one is
    read as its successor recorded it."""

    def test_overwritten_digest_is_read_as_recorded(self, source: S3Source) -> None:
        """A digest overwritten after its successor recorded it: the original is checked, the successor named."""
        first, second = DIGEST.format(1), DIGEST.format(2)
        original = digest()
        put(source, first, original)
        put(source, second, digest(previous={"key": f"{PREFIX}/{first}", "sha256": sha(original)}))
        put(source, first, digest(agent={"id": "forger"}))
        report, found = loaded(source)
        assert found.digests[first].agent == "a1"
        [finding] = report.findings
        assert finding.kind == OVERWRITTEN_OBJECT
        assert f"the original: {second} recorded its SHA-256" in finding.detail

    @pytest.mark.parametrize("newest", ["marker", "junk"])
    def test_older_digests_load_after_an_unreadable_newest(self, source: S3Source, newest: str) -> None:
        """The newest digest key is a bare delete marker, or not a digest: the older ones are still loaded."""
        put(source, DIGEST.format(1), digest())
        if newest == "marker":  # an unlocked version deleted by id under its marker: the marker alone is left
            version = put(source, DIGEST.format(9), digest())
            delete(source, DIGEST.format(9))
            source.client.delete_object(Bucket=source.bucket, Key=f"{PREFIX}/{DIGEST.format(9)}", VersionId=version)
        else:
            put(source, DIGEST.format(9), b"not json")
        _report, found = loaded(source)
        assert set(found.digests) == {DIGEST.format(1)}

    @pytest.mark.parametrize("agent", [{}, "a1"])
    def test_digest_with_a_bad_agent_is_modified(self, source: S3Source, agent: Any) -> None:
        """A digest whose agent has no id, or is not an object: `digest modified`, not an error."""
        put(source, DIGEST.format(1), digest(agent=agent))
        report, found = loaded(source)
        assert found.digests == {}
        assert report.kinds() == {DIGEST_MODIFIED}

    def test_bad_listing_entries_are_skipped_and_named(self, source: S3Source) -> None:
        """Listed entries without a hash or of another type are skipped and named; the good one is listed."""
        good = {"key": f"{PREFIX}/{KEY}", "sha256": "ab", "retention": "standard", "last_occurred_at": LAST}
        put(source, DIGEST.format(1), digest(objects=[{"key": f"{PREFIX}/{KEY}"}, 7, good]))
        report, found = loaded(source)
        assert [listing.sha256 for listing in found.listed[KEY]] == ["ab"]
        assert [(f.kind, f.subject, f.detail.split(" are ")[0]) for f in report.findings] == [
            (DIGEST_MODIFIED, DIGEST.format(1), "2 of its 3 object entries")]

    def test_writers_that_are_no_map_are_named(self, source: S3Source) -> None:
        """A digest whose `writers` is a list is read for its listings and named: `digest modified`."""
        body = orjson.loads(digest(objects=[listing(KEY)]))
        body["writers"] = ["w"]
        put(source, DIGEST.format(1), orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        report, found = loaded(source)
        assert list(found.listed) == [KEY]
        assert [(f.kind, f.detail) for f in report.findings] == [
            (DIGEST_MODIFIED, "its writers are not a map of writer records")]


def listing(key: str) -> dict[str, str]:
    """A digest's entry for the events object `key`."""
    return {"key": f"{PREFIX}/{key}", "sha256": "ab" * 32, "retention": "standard", "last_occurred_at": LAST}


def subjects(report: Report, kind: str) -> set[str]:
    """The subjects of one kind's findings."""
    return {f.subject for f in report.findings if f.kind == kind}


class TestMonthRange:
    """Invariant: a month range checks the versions of its own months' objects, the listed objects of its
    months, and the digests (with their versions) one month either side — no more, no less."""

    def test_december(self, source: S3Source) -> None:
        """Range December 2026: December's overwritten object and missing listed object are named, November's
        overwritten digest too; January's overwritten object is not checked."""
        january = KEY.replace("year=2026/month=12/20261202", "year=2027/month=01/20270102")
        missing = KEY.replace("standard", "security")
        november = DIGEST.replace("month=12", "month=11").format(1)
        for key in (KEY, january):
            put(source, key, b"original\n")
            put(source, key, b"overwritten\n")
        put(source, november, digest())
        put(source, november, digest(agent={"id": "forger"}))
        put(source, DIGEST.format(1), digest(objects=[listing(missing)]))
        december = TimeRange(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
        report = verify_archive(source, ArchiveOptions(time_range=december))
        assert subjects(report, OVERWRITTEN_OBJECT) == {KEY, november}
        assert subjects(report, MISSING_OBJECT) == {missing}


class TestDigestRecordsAndLocksInARun:
    """Invariant: a run checks every well-formed writer record of a digest past malformed ones, the digests'
    own locks, and names a nested key as foreign."""

    def test_hostile_writer_records(self, source: S3Source) -> None:
        """Writers a (no fields), b (a number), c (a seq that is no number) and d (seq 0–3, absent): d's events
        are a seq gap; the unlocked digest is an unlocked object; the nested key is a foreign object."""
        writers = {"a": {}, "b": 5, "c": {"first_seq": 0, "last_seq": "x"},
                   "d": {"first_seq": 0, "last_seq": 3, "last_hash": "0" * 64, "closed": True}}
        put(source, DIGEST.format(1), digest(writers=writers))
        nested = "events/year=2026/month=12/0/forged.jsonl.gz"
        put(source, nested, b"forged\n")
        report = verify_archive(source, ArchiveOptions(time_range=TimeRange()))  # unbounded, as the CLI makes it
        assert [f.detail.split(":")[0] for f in report.findings if f.subject == "writer d"] == ["seq 0–3 missing"]
        [named] = [f.detail for f in report.findings if f.kind == DIGEST_MODIFIED]
        assert named.startswith("3 writer records are not the agent's")
        assert named.endswith(": a, b, c")
        assert DIGEST.format(1) in subjects(report, UNLOCKED_OBJECT)
        assert subjects(report, FOREIGN_OBJECT) == {nested}


class TestCutShortGzip:
    """Invariant: bytes that end inside a gzip stream are "not gzip", a finding — not an error out of verify."""

    def test_truncated_gzip(self) -> None:
        """A gzip object missing its last ten bytes: no content, the problem named."""
        content, problem = objects.inflate(gzip.compress(b"x\n" * 100)[:-10], 1 << 20)
        assert content is None
        assert problem is not None
        assert problem.startswith("not gzip: ")


class TestNothingToVerifyNote:
    """Invariant: the empty-archive note says "at all" for an unbounded range, however the range was made."""

    def test_unbounded_range_built_apart(self, source: S3Source) -> None:
        """An empty bucket, the range an unbounded `TimeRange()` equal to `ALL_TIME` (as the CLI parses no
        --since/--until): nothing to verify, the note says "at all"."""
        report = verify_archive(source, ArchiveOptions(time_range=TimeRange()))
        assert report.nothing_to_verify
        assert any(note.startswith("nothing to verify: ") and note.split(". ")[0].endswith(" at all")
                   for note in report.notes), report.notes
