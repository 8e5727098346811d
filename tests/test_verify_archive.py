"""`auditlock verify` over archives the real agent wrote to moto and RADOS Gateway, clean and tampered with.

How each tampering is done, honestly: a versioned Object Lock bucket refuses to change or delete a locked
*version*, but it accepts a new current version at the same key and a delete marker — exactly what an attacker
with PutObject/DeleteObject (and no bypass) can do, and what a reader then sees. So objects and digests are
"edited", "swapped" and "deleted" that way in the lock bucket itself — and verify, listing versions, names the
overwrite or the delete marker and checks the original version underneath. Where the issue asks for an unlocked
bucket (an edited event line, objects without lock), the archive is copied into a plain bucket first; a forged
digest that was never overwritten is written into a fresh lock bucket holding a copy of the archive.
"""

from __future__ import annotations

import datetime as dt
import gzip
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.archive import layout
from auditlock.spool.format import SEALED_SUFFIX, parse_segment_name
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.calendar import NEXT_MONTH
from tests.support.s3servers import S3Endpoint, content_md5, make_lock_bucket, make_plain_bucket
from tests.support.verify_env import (
    build_archive,
    copy_locked,
    copy_to,
    download,
    drain,
    enable_signing,
    forged_digest,
    keys,
    kinds,
    make_keypair,
    put_new_version,
    read,
    subjects,
    verify,
    version_ids,
)


@pytest.fixture
def env(bucket: tuple[S3Endpoint, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """A spool and config shipping to a fresh lock bucket, digests signed; credentials in the environment."""
    endpoint, name = bucket
    use_credentials(monkeypatch, endpoint)
    archive = ArchiveEnv.create(tmp_path, endpoint, name)
    private, _public = make_keypair(tmp_path)
    enable_signing(archive, private)
    return archive


@pytest.fixture
def archive(env: ArchiveEnv) -> ArchiveEnv:
    """`env` holding a clean signed archive of three batches (two classes, a month boundary)."""
    build_archive(env)
    return env


@pytest.fixture
def plain_bucket(env: ArchiveEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket without Object Lock on the same server; verify is pointed at it."""
    client = env.endpoint.client()
    name = make_plain_bucket(client, f"auditlock-plain-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("AUDITLOCK_SINK_BUCKET", name)
    yield name
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):  # a test may enable versioning
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
    client.delete_bucket(Bucket=name)


def run(env: ArchiveEnv, *args: str) -> tuple[int, dict[str, object]]:
    """verify with this env's config and its public key."""
    return verify("--config", str(env.config_path), "--public-key", str(env.root / "digest-key.pub.pem"), *args)


def edit_line(body: bytes, index: int) -> bytes:
    """The gzip object with line `index` changed (its actor), every other byte the same."""
    lines = gzip.decompress(body).split(b"\n")
    lines[index] = lines[index].replace(b'"actor_id":"user#', b'"actor_id":"user#9')
    return gzip.compress(b"\n".join(lines), mtime=0)


def largest_object(env: ArchiveEnv) -> str:
    """The events object with the most bytes (one with many lines of one writer)."""
    client = env.endpoint.client()
    return max(keys(env), key=lambda k: client.head_object(Bucket=env.bucket, Key=k)["ContentLength"])


class TestCleanArchive:
    def test_clean_archive_verifies_clean(self, archive: ArchiveEnv) -> None:
        """An archive written by the agent in several signed batches verifies clean with exit 0."""
        status, report = run(archive)
        assert report["findings"] == []
        assert status == 0
        assert not any("versions" in line for line in report["skipped"] + report["notes"])
        assert report["counts"]["digests"] >= 3
        assert report["counts"]["events"] == 40 + 10 + 12 + 30 + 4  # + four clean-end records
        assert report["counts"]["writers"] == 4
        assert len({k.split("/")[3] for k in keys(archive)}) == 2  # this month and the next (the month boundary)

    def test_month_range_selects_partitions(self, archive: ArchiveEnv) -> None:
        """--since/--until select months: the next month alone holds a writer that began in this one, not a gap."""
        status, report = run(archive, "--since", NEXT_MONTH.iso, "--until", NEXT_MONTH.iso)
        assert report["findings"] == []
        assert status == 0
        assert report["counts"]["events"] == 7 + 1


class TestTamperingInTheLockBucket:
    def test_object_deleted(self, archive: ArchiveEnv) -> None:
        """A delete marker over an events object is named with both version ids; its locked data is still checked."""
        key = largest_object(archive)
        archive.endpoint.client().delete_object(Bucket=archive.bucket, Key=key)
        [original], [marker] = version_ids(archive, key)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"delete marker"}
        [finding] = report["findings"]
        assert finding["subject"] == key.removeprefix("audit/")
        assert f"delete marker {marker}: readers see no object" in finding["detail"]
        assert f"(version {original}); checked: {original}" in finding["detail"]
        assert report["counts"]["events"] == 40 + 10 + 12 + 30 + 4

    def test_object_overwritten(self, archive: ArchiveEnv) -> None:
        """A new version with an edited line over a locked object: one finding naming the recorded original."""
        key = largest_object(archive)
        put_new_version(archive, key, edit_line(read(archive, key), 3))
        [current, original], _ = version_ids(archive, key)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"overwritten object"}
        [finding] = report["findings"]
        assert finding["subject"] == key.removeprefix("audit/")
        assert f"2 versions; checked: {original} " in finding["detail"]
        assert "the original: digests/" in finding["detail"]
        assert f"the current version {current} differs" in finding["detail"]

    def test_object_swapped(self, archive: ArchiveEnv) -> None:
        """A new version holding another listed object's bytes is an overwrite that says whose bytes they are."""
        first, second = keys(archive)[:2]
        put_new_version(archive, second, read(archive, first))
        [current, _original], _ = version_ids(archive, second)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"overwritten object"}
        [finding] = report["findings"]
        assert finding["subject"] == second.removeprefix("audit/")
        assert f"the current version {current} holds the bytes of {first.removeprefix('audit/')}" in finding["detail"]

    def test_digest_deleted(self, archive: ArchiveEnv) -> None:
        """A delete marker over a digest mid-chain is named; the hidden digest still links the chain."""
        middle = keys(archive, "digests")[1]
        archive.endpoint.client().delete_object(Bucket=archive.bucket, Key=middle)
        _, [marker] = version_ids(archive, middle)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"delete marker"}
        assert subjects(report, "delete marker") == {middle.removeprefix("audit/")}
        assert marker in report["findings"][0]["detail"]

    def test_digest_overwritten(self, archive: ArchiveEnv) -> None:
        """A digest overwritten with changed content: the version its successor recorded is checked, and named."""
        first = keys(archive, "digests")[0]
        digest = orjson.loads(read(archive, first))
        digest["objects"][0]["events"] += 1
        put_new_version(archive, first, orjson.dumps(digest, option=orjson.OPT_SORT_KEYS))
        [current, original], _ = version_ids(archive, first)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"overwritten object"}
        [finding] = report["findings"]
        assert finding["subject"] == first.removeprefix("audit/")
        assert f"checked: {original} " in finding["detail"]
        assert f"the current version {current} differs" in finding["detail"]

    def test_newest_digest_overwritten(self, archive: ArchiveEnv) -> None:
        """The newest digest has no successor: its oldest version is checked, the forged current one named."""
        newest = keys(archive, "digests")[-1]
        put_new_version(archive, newest, forged_digest(archive, newest, _forge_last_hash))
        [current, original], _ = version_ids(archive, newest)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"overwritten object"}
        [finding] = report["findings"]
        assert f"checked: {original} " in finding["detail"]
        assert "the oldest: no digest records a SHA-256 for this key" in finding["detail"]
        assert f"the current version {current} differs" in finding["detail"]

    def test_bad_signature(self, archive: ArchiveEnv, tmp_path: Path) -> None:
        """Verifying with another public key names every digest as signed by a key it was not given."""
        _private, other = make_keypair(tmp_path, "other")
        status, report = verify("--config", str(archive.config_path), "--public-key", str(other))
        assert status == 1
        assert kinds(report) == {"unknown signing key"}
        assert len(report["findings"]) == report["counts"]["digests"]


def _forge_last_hash(digest: dict[str, Any]) -> None:
    for recorded in digest["writers"].values():
        recorded["last_hash"] = "ab" * 32


def _forge_closed(digest: dict[str, Any]) -> None:
    for recorded in digest["writers"].values():
        recorded["closed"] = not recorded["closed"]


class TestForgedDigestRecords:
    @pytest.mark.parametrize(("change", "kind", "detail"), [
        (_forge_last_hash, "digest hash mismatch", "it records last_hash abababababababab…, the archive's line "
                                                   "hashes to "),
        (_forge_closed, "digest closed mismatch", "it records the writer not closed, the archive's line is "
                                                  "'auditlock.writer_closed'"),
    ])
    def test_forged_writer_record(self, archive: ArchiveEnv, monkeypatch: pytest.MonkeyPatch,
                                  change: Callable[[dict[str, Any]], None], kind: str, detail: str) -> None:
        """A re-signed newest digest whose writer record disagrees with the writer's last line is named."""
        newest = keys(archive, "digests")[-1]
        forged = forged_digest(archive, newest, change)
        client = archive.endpoint.client()
        name = make_lock_bucket(client, f"auditlock-forged-{uuid.uuid4().hex[:12]}")
        copy_locked(archive, name, {newest: forged})
        monkeypatch.setenv("AUDITLOCK_SINK_BUCKET", name)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {kind}
        [finding] = report["findings"]
        assert finding["subject"] == newest.removeprefix("audit/")
        assert detail in finding["detail"]
        [writer] = orjson.loads(forged)["writers"]
        assert finding["detail"].startswith(f"writer {writer} seq ")

    def test_faithful_copy_is_clean(self, archive: ArchiveEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """The copy helper itself adds nothing: an unforged copy verifies clean."""
        client = archive.endpoint.client()
        name = make_lock_bucket(client, f"auditlock-copy-{uuid.uuid4().hex[:12]}")
        copy_locked(archive, name, {})
        monkeypatch.setenv("AUDITLOCK_SINK_BUCKET", name)
        status, report = run(archive)
        assert report["findings"] == []
        assert status == 0


class TestTamperingBeforeUpload:
    def test_events_removed_from_the_middle(self, env: ArchiveEnv) -> None:
        """Lines cut from a sealed segment: the agent quarantines it, verify names the writer's missing range."""
        env.write_events(60)
        segments = sorted(env.spool.glob(f"*{SEALED_SUFFIX}"))
        assert len(segments) >= 4
        victim, after = segments[1], segments[2]
        lines = victim.read_bytes().splitlines(keepends=True)
        victim.write_bytes(b"".join(lines[:2] + lines[4:]))
        drain(env)
        status, report = run(env)
        assert status == 1
        assert kinds(report) == {"seq gap"}
        first, following = parse_segment_name(victim.name), parse_segment_name(after.name)
        assert first is not None
        assert following is not None
        [gap] = report["findings"]
        assert gap["subject"] == f"writer {first.writer}"
        assert f"seq {first.first_seq}–{following.first_seq - 1} missing" in gap["detail"]

    def test_writer_tail_removed(self, env: ArchiveEnv) -> None:
        """Without its last segment (and clean-end record) a writer's tail is missing once past the grace."""
        env.write_events(40)
        segments = sorted(env.spool.glob(f"*{SEALED_SUFFIX}"))
        segments[-1].unlink()
        drain(env)
        status, report = run(env, "--open-grace", "0")
        assert status == 1
        assert kinds(report) == {"writer tail missing"}
        status, report = run(env)
        assert status == 0
        assert len(report["open_writers"]) == 1


class TestUnlockedBucket:
    def test_objects_without_lock(self, archive: ArchiveEnv, plain_bucket: str) -> None:
        """The same archive in a bucket without Object Lock: every object and digest is an unlocked object."""
        copy_to(archive, plain_bucket)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"unlocked object"}
        assert len(report["findings"]) == len(keys(archive)) + len(keys(archive, "digests"))

    def test_event_line_edited(self, archive: ArchiveEnv, plain_bucket: str) -> None:
        """An event line edited and the object re-uploaded: a modified object and a chain break at the next line."""
        copy_to(archive, plain_bucket)
        key = largest_object(archive)
        body = edit_line(read(archive, key), 3)
        client = archive.endpoint.client()
        client.put_object(Bucket=plain_bucket, Key=key, Body=body, Tagging=layout.object_tags("standard"))
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"unlocked object", "modified object", "chain break"}
        assert subjects(report, "modified object") == {key.removeprefix("audit/")}
        [chain_break] = [f for f in report["findings"] if f["kind"] == "chain break"]
        assert chain_break["detail"].startswith("seq 4 in ")
        assert chain_break["detail"].endswith("prev does not match the hash of seq 3")


    def test_data_gone_under_a_delete_marker(self, archive: ArchiveEnv, plain_bucket: str) -> None:
        """In a versioned bucket without lock, a listed key whose data was removed under a delete marker is both."""
        copy_to(archive, plain_bucket)
        client = archive.endpoint.client()
        client.put_bucket_versioning(Bucket=plain_bucket, VersioningConfiguration={"Status": "Enabled"})
        key = largest_object(archive)
        marker = client.delete_object(Bucket=plain_bucket, Key=key)["VersionId"]
        client.delete_object(Bucket=plain_bucket, Key=key, VersionId="null")  # the copy, made before versioning
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"unlocked object", "missing object", "delete marker", "seq gap"}
        assert subjects(report, "missing object") == subjects(report, "delete marker") == {key.removeprefix("audit/")}
        [finding] = [f for f in report["findings"] if f["kind"] == "delete marker"]
        assert finding["detail"] == (f"the latest version is delete marker {marker}, and no data version is left "
                                     "under it")


class TestDirectorySource:
    def test_downloaded_copy_verifies_clean(self, archive: ArchiveEnv, tmp_path: Path) -> None:
        """A downloaded copy of the prefix verifies clean, saying lock and tag checks were skipped."""
        copy = download(archive, tmp_path / "copy")
        status, report = verify("--source", str(copy), "--public-key", str(archive.root / "digest-key.pub.pem"))
        assert report["findings"] == []
        assert status == 0
        assert any("Object Lock" in line for line in report["skipped"])
        assert any(line.startswith("object versions and delete markers: a directory copy")
                   for line in report["skipped"])
        assert report["counts"]["events"] == 40 + 10 + 12 + 30 + 4

    def test_edited_object_in_a_copy(self, archive: ArchiveEnv, tmp_path: Path) -> None:
        """An event line edited in a downloaded object is a modified object and a chain break."""
        copy = download(archive, tmp_path / "copy")
        key = largest_object(archive).removeprefix("audit/")
        (copy / key).write_bytes(edit_line((copy / key).read_bytes(), 5))
        status, report = verify("--source", str(copy))
        assert status == 1
        assert kinds(report) == {"modified object", "chain break"}
        assert subjects(report, "modified object") == {key}


class TestShortLockAndTags:
    def test_under_retained_and_untagged(self, archive: ArchiveEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """Copies locked for an hour in GOVERNANCE and without tags are under-retained and untagged objects."""
        client = archive.endpoint.client()
        name = make_lock_bucket(client, f"auditlock-short-{uuid.uuid4().hex[:12]}")
        until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        for key in keys(archive) + keys(archive, "digests"):
            body = read(archive, key)
            client.put_object(Bucket=name, Key=key, Body=body, ContentMD5=content_md5(body),
                              ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
        monkeypatch.setenv("AUDITLOCK_SINK_BUCKET", name)
        status, report = run(archive)
        assert status == 1
        assert kinds(report) == {"under-retained object", "untagged object"}
        assert len(subjects(report, "untagged object")) == len(keys(archive)) + len(keys(archive, "digests"))
