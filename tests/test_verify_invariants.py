"""verify's core invariants, each shown to catch the one tampering that only it can see (issue #14 items 2, 3, 10).

The archive is written once per module by the real agent (signed digests, on moto) and downloaded; each test
tampers with its own copy of that download and runs `verify --source DIR`. Most tamperings are done by a forger
holding the signing key (`verify_forgery.reseal`): every other hash, record and signature agrees again, so the
finding asserted is the only one — and the test fails if verify stops checking that invariant. Each docstring
names the invariant. Tampering in the lock bucket itself (overwrites, delete markers) is tested in
tests/test_verify_archive.py.
"""

from __future__ import annotations

import base64
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditlock.archive import digest as digest_format
from auditlock.spool.format import SEALED_SUFFIX, parse_segment_name
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.verify_env import (
    build_archive,
    download,
    drain,
    enable_signing,
    kinds,
    make_keypair,
    subjects,
    verify,
)
from tests.support.verify_forgery import PREFIX, ArchiveCopy, reseal

ARCHIVE_CACHE_ENV = "AUDITLOCK_TEST_ARCHIVE_CACHE"


@pytest.fixture(scope="module")
def pristine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A download of a clean signed archive the real agent wrote (three batches, two classes, a month boundary);
    the signing key pair lies next to it (`digest-key.pem`, `digest-key.pub.pem`).

    With `AUDITLOCK_TEST_ARCHIVE_CACHE=DIR` (set by tools/mutation.sh for groups that mutate only `verify/`, which
    builds no archive) the first build is kept in DIR and reused by later test runs instead of being rebuilt."""
    cache = os.environ.get(ARCHIVE_CACHE_ENV)
    if not cache:
        return _build_pristine(request, tmp_path_factory.mktemp("invariants"))
    kept = Path(cache) / "kept"
    if not kept.is_dir():
        built = _build_pristine(request, Path(tempfile.mkdtemp(prefix="building-", dir=cache)))
        built.parent.rename(kept)  # whole or not at all: a run stopped mid-build leaves only a building-* dir
    return kept / "copy"


def _build_pristine(request: pytest.FixtureRequest, root: Path) -> Path:
    """Build the archive with the agent on moto under `root` and download it to `root/copy`."""
    moto_s3: S3Endpoint = request.getfixturevalue("moto_s3")
    with pytest.MonkeyPatch.context() as patch:
        use_credentials(patch, moto_s3)
        bucket = make_lock_bucket(moto_s3.client(), f"auditlock-invariants-{uuid.uuid4().hex[:12]}")
        env = ArchiveEnv.create(root, moto_s3, bucket)
        private, _public = make_keypair(root)
        enable_signing(env, private)
        build_archive(env)
        return download(env, root / "copy")


@pytest.fixture
def env(moto_s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool and config shipping to a fresh lock bucket on moto, digests signed; credentials in the environment."""
    use_credentials(monkeypatch, moto_s3)
    archive = ArchiveEnv.create(tmp_path, moto_s3, make_lock_bucket(moto_s3.client(),
                                                                   f"auditlock-head-{uuid.uuid4().hex[:12]}"))
    private, _public = make_keypair(tmp_path)
    enable_signing(archive, private)
    return archive


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> ArchiveCopy:
    """This test's own copy of the pristine download."""
    return ArchiveCopy.of(pristine, tmp_path / "copy")


def private_key(pristine: Path) -> bytes:
    """The agent's signing key (PEM)."""
    return (pristine.parent / "digest-key.pem").read_bytes()


def run(copy: ArchiveCopy, pristine: Path, *args: str, signed: bool = True) -> tuple[int, dict[str, Any]]:
    """verify --source over the copy, with the agent's public key unless `signed` is False."""
    key = ("--public-key", str(pristine.parent / "digest-key.pub.pem")) if signed else ()
    return verify("--source", str(copy.root), *key, *args)


def only_finding(status: int, report: dict[str, Any], kind: str) -> dict[str, str]:
    """The report's single finding, of `kind` (exit status 1)."""
    assert [f["kind"] for f in report["findings"]] == [kind], report["findings"]
    assert status == 1
    finding: dict[str, str] = report["findings"][0]
    return finding


def newest_digest(copy: ArchiveCopy) -> str:
    """The newest digest: it has no successor, so only its signature protects it."""
    return copy.stored("digests")[-1]


class TestForgerBaseline:
    def test_reseal_of_an_untouched_copy_is_clean(self, copy: ArchiveCopy, pristine: Path) -> None:
        """The forger's reseal adds nothing by itself: an untouched resealed copy verifies clean."""
        reseal(copy, private_key(pristine))
        status, report = run(copy, pristine)
        assert report["findings"] == []
        assert status == 0


class TestDigestSignatures:
    def test_resigned_by_another_key_under_the_right_fingerprint(self, copy: ArchiveCopy, pristine: Path,
                                                                 tmp_path: Path) -> None:
        """Invariant: a signature must verify under the public key — a matching fingerprint alone proves nothing."""
        other, _public = make_keypair(tmp_path, "forger")
        key = newest_digest(copy)
        body = copy.digest(key)
        fingerprint = body["signature"]["public_key_sha256"]
        forged = digest_format.sign(body, other.read_bytes())
        forged["signature"]["public_key_sha256"] = fingerprint
        copy.write_digest(key, forged)
        finding = only_finding(*run(copy, pristine), "bad signature")
        assert finding["subject"] == key
        assert finding["detail"] == "the signature does not match the digest's content"

    def test_flipped_signature_bit(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: the signature bytes are checked — one flipped bit is a bad signature."""
        key = newest_digest(copy)
        body = copy.digest(key)
        value = bytearray(base64.b64decode(body["signature"]["value"]))
        value[7] ^= 0x01
        body["signature"]["value"] = base64.b64encode(bytes(value)).decode("ascii")
        copy.write_digest(key, body)
        finding = only_finding(*run(copy, pristine), "bad signature")
        assert finding["subject"] == key

    @pytest.mark.parametrize(("edit", "found"), [
        (lambda body: body["agent"].update(host="elsewhere"), {"bad signature"}),
        (lambda body: body["objects"][0].update(sha256="ab" * 32), {"bad signature", "modified object"}),
    ], ids=["host", "object-sha256"])
    def test_digest_edited_keeping_its_signature(self, copy: ArchiveCopy, pristine: Path,
                                                 edit: Callable[[dict[str, Any]], None], found: set[str]) -> None:
        """Invariant: the signature covers the whole digest — an edit that keeps the old signature is caught."""
        key = newest_digest(copy)
        body = copy.digest(key)
        edit(body)
        copy.write_digest(key, body)
        status, report = run(copy, pristine)
        assert status == 1
        assert kinds(report) == found
        assert subjects(report, "bad signature") == {key}

    @pytest.mark.parametrize("value", [123, None, {"value": "x"}, ["AAAA"]], ids=["int", "null", "object", "list"])
    def test_signature_value_of_another_type(self, copy: ArchiveCopy, pristine: Path, value: object) -> None:
        """Invariant: a hostile signature is a finding, never a crash — a value that is not a string is bad."""
        key = newest_digest(copy)
        body = copy.digest(key)
        body["signature"]["value"] = value
        copy.write_digest(key, body)
        finding = only_finding(*run(copy, pristine), "bad signature")
        assert finding["subject"] == key
        assert "not base64 text" in finding["detail"]

    def test_signature_text_with_extra_characters(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: the signature is exactly base64 — characters a lenient decoder would skip make it bad."""
        key = newest_digest(copy)
        body = copy.digest(key)
        body["signature"]["value"] = "*" + body["signature"]["value"]
        copy.write_digest(key, body)
        finding = only_finding(*run(copy, pristine), "bad signature")
        assert "not base64 text" in finding["detail"]


class TestDigestChainLinks:
    @pytest.mark.parametrize("index", [0, 1], ids=["first", "middle"])
    def test_digest_removed_from_the_chain(self, copy: ArchiveCopy, pristine: Path, index: int) -> None:
        """Invariant: every digest's predecessor exists — a removed digest breaks its successor's link."""
        removed, successor = copy.stored("digests")[index:index + 2]
        listed = {entry["key"].removeprefix(PREFIX) for entry in copy.digest(removed)["objects"]}
        copy.remove(removed)
        status, report = run(copy, pristine)
        assert status == 1
        assert kinds(report) == {"broken digest chain", "unlisted object"}
        [broken] = [f for f in report["findings"] if f["kind"] == "broken digest chain"]
        assert broken["subject"] == successor
        assert broken["detail"] == f"its previous digest {removed} is missing"
        assert subjects(report, "unlisted object") == listed

    @pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
    def test_middle_digest_edited_keeping_its_signature(self, copy: ArchiveCopy, pristine: Path,
                                                        signed: bool) -> None:
        """Invariant: a digest hashes to what its successor recorded — even without a public key, an edit shows."""
        middle, successor = copy.stored("digests")[1:3]
        body = copy.digest(middle)
        body["agent"]["host"] = "elsewhere"
        copy.write_digest(middle, body)
        status, report = run(copy, pristine, signed=signed)
        assert status == 1
        assert kinds(report) == ({"digest modified", "bad signature"} if signed else {"digest modified"})
        [modified] = [f for f in report["findings"] if f["kind"] == "digest modified"]
        assert modified["subject"] == middle
        assert f"but its successor {successor} recorded" in modified["detail"]

    def test_predecessor_hash_edited_and_resigned(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: `previous.sha256` is compared — a re-signed digest naming another hash breaks the link."""
        middle, newest = copy.stored("digests")[1:3]
        body = copy.digest(newest)
        body["previous"]["sha256"] = "ab" * 32
        copy.resign(newest, body, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "digest modified")
        assert finding["subject"] == middle
        assert finding["detail"].endswith(f"but its successor {newest} recorded abababababababab…")

    def test_predecessor_relinked_around_a_digest(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: one successor per digest — a re-signed digest linking past its predecessor is a fork."""
        first, middle, newest = copy.stored("digests")
        body = copy.digest(newest)
        body["previous"] = {"key": PREFIX + first, "sha256": copy.sha256(first)}
        copy.resign(newest, body, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "broken digest chain")
        assert finding["subject"] == first
        assert finding["detail"] == f"fork: 2 digests name it as their previous ({middle}, {newest})"

    def test_predecessor_of_another_agent(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: one agent writes one chain — a re-signed digest of another agent linked into it is named."""
        middle, newest = copy.stored("digests")[1:3]
        body = copy.digest(newest)
        agent, body["agent"]["id"] = body["agent"]["id"], "f" * 32
        copy.resign(newest, body, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "broken digest chain")
        assert finding == {"kind": "broken digest chain", "subject": newest,
                           "detail": f"its previous digest {middle} belongs to agent {agent}, this digest to agent "
                                     f"{'f' * 32} (one agent writes one chain)"}

    def test_predecessor_key_names_no_digest(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a predecessor named by key must exist — a re-signed link to nothing is a broken chain."""
        middle, newest = copy.stored("digests")[1:3]
        body = copy.digest(newest)
        nowhere = middle.replace(".json", "0.json")
        body["previous"]["key"] = PREFIX + nowhere
        copy.resign(newest, body, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "broken digest chain")
        assert finding == {"kind": "broken digest chain", "subject": newest,
                           "detail": f"its previous digest {nowhere} is missing"}


def month_boundary_writer(copy: ArchiveCopy) -> tuple[str, str, str]:
    """(writer, its head object, its next object) of the writer whose events cross a month boundary: its head
    holds seq 0 and no other writer's events, its next object lies in the following month."""
    months: dict[str, set[str]] = {}
    for key in copy.stored():
        for event in copy.events(key):
            months.setdefault(event["writer"], set()).add(month_of(key))
    [writer] = [writer for writer, seen in months.items() if len(seen) > 1]
    head, following = copy.writer_objects(writer)[:2]
    assert {event["writer"] for event in copy.events(head)} == {writer}
    assert copy.events(head)[0]["seq"] == 0
    assert month_of(head) < month_of(following)
    return writer, head, following


def month_of(key: str) -> str:
    """`YYYY-MM` of an `events/year=YYYY/month=MM/…` key."""
    _kind, year, month, _name = key.split("/")
    return f"{year.removeprefix('year=')}-{month.removeprefix('month=')}"


class TestWriterStart:
    def test_head_object_removed_and_resealed(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: every writer starts at seq 0 — a writer whose first object is gone (digests resealed) is a gap."""
        writer, head, following = month_boundary_writer(copy)
        first_present = copy.events(following)[0]["seq"]
        copy.remove(head)
        reseal(copy, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "seq gap")
        assert finding == {"kind": "seq gap", "subject": f"writer {writer}",
                           "detail": f"seq 0–{first_present - 1} missing (the first event present is seq "
                                     f"{first_present}, in {following})"}

    def test_head_segment_never_shipped(self, env: ArchiveEnv) -> None:
        """Invariant: every writer starts at seq 0 — a first segment lost before upload leaves a gap from seq 0."""
        env.write_events(40)
        segments = sorted(env.spool.glob(f"*{SEALED_SUFFIX}"))
        head, following = (parse_segment_name(segment.name) for segment in segments[:2])
        assert head is not None
        assert following is not None
        assert head.first_seq == 0
        segments[0].unlink()
        drain(env)
        status, report = verify("--config", str(env.config_path), "--public-key", str(env.root / "digest-key.pub.pem"))
        finding = only_finding(status, report, "seq gap")
        assert finding["subject"] == f"writer {head.writer}"
        assert finding["detail"].startswith(f"seq 0–{following.first_seq - 1} missing (the first event present is "
                                            f"seq {following.first_seq}, in events/")

    def test_range_excuses_a_late_start_in_its_first_month_only(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: with --since, only a writer first seen in the range's first month may start after seq 0."""
        writer, head, following = month_boundary_writer(copy)
        copy.remove(head)
        reseal(copy, private_key(pristine))
        status, report = run(copy, pristine, "--since", month_of(following))
        assert report["findings"] == []
        assert status == 0
        finding = only_finding(*run(copy, pristine, "--since", month_of(head)), "seq gap")
        assert finding["subject"] == f"writer {writer}"
        assert finding["detail"].endswith(f"or the writer began before --since and wrote nothing in "
                                          f"{month_of(head)}: verify from an earlier --since to tell)")


class TestDuplicatesAcrossObjects:
    @pytest.mark.parametrize("spelling", [str, str.upper], ids=["same", "uppercase"])
    def test_event_id_repeated_in_another_object(self, copy: ArchiveCopy, pristine: Path,
                                                 spelling: Callable[[str], str]) -> None:
        """Invariant: an event_id appears once in the archive — reused in another object (resealed) it is named."""
        first, second = copy.stored()[:2]
        event_id = copy.events(first)[1]["event_id"]
        events = copy.events(second)
        events[2]["event_id"] = spelling(event_id)
        copy.write_events(second, events)
        reseal(copy, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "duplicate event")
        assert finding["subject"] == f"event {event_id}"
        assert finding["detail"].startswith(f"seen again in {second} (writer ")

    def test_writer_seq_range_in_two_objects(self, copy: ArchiveCopy, pristine: Path) -> None:
        """Invariant: a writer's seq ranges do not overlap — its lines again (new ids) in another object are named."""
        source = max(copy.stored(), key=lambda key: len(copy.lines(key)))
        lines = copy.events(source)[3:6]
        writer = lines[0]["writer"]
        target = next(key for key in copy.stored() if key not in copy.writer_objects(writer))
        repeated = [{**line, "event_id": str(uuid.uuid4())} for line in lines]
        copy.write_events(target, copy.events(target) + repeated)
        reseal(copy, private_key(pristine))
        finding = only_finding(*run(copy, pristine), "duplicate event")
        first, last = lines[0]["seq"], lines[-1]["seq"]
        assert finding["subject"] == f"writer {writer}"
        assert finding["detail"] == f"seq {first}–{last} present more than once ({target} and {source})"
