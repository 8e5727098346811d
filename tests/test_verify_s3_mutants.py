"""verify's S3-only code where the mutation run found no test looking (docs/mutation-survivors.md, verify-archive,
"S3 only"): reading and listing S3, the version verify checks, locks, tags and legal holds.

Every bucket is on the session's moto server over HTTP; objects are PUT the way an agent or an attacker would.
The version and lock checks are driven through `S3Source` and the functions `verify_archive` calls with what it
reads; whole verify runs over a real agent's archive are in `tests/test_verify_archive.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import pytest

from auditlock.verify.findings import DELETE_MARKER, OVERWRITTEN_OBJECT
from auditlock.verify.source import S3Source, SourceError, VersionsUnavailable
from auditlock.verify.versions import Resolved, resolve
from tests.support.faultproxy import FaultProxy
from tests.support.s3servers import S3Endpoint, content_md5, make_lock_bucket

KEY = "events/year=2026/month=12/20261202T030405Z-standard-0123456789abcdef0123456789abcdef.jsonl.gz"
PREFIX = "audit"
LATER = dt.datetime(2126, 1, 1, tzinfo=dt.UTC)  # a retain-until far past any event these tests date


@pytest.fixture
def lock_bucket(moto_s3: S3Endpoint) -> str:
    """A fresh Object Lock (so versioned) bucket on the session's moto server."""
    return make_lock_bucket(moto_s3.client(), f"auditlock-s3mut-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def source(moto_s3: S3Endpoint, lock_bucket: str) -> S3Source:
    """verify's source over `lock_bucket`, prefix `audit`."""
    return S3Source(moto_s3.client(), lock_bucket, PREFIX)


def put(source: S3Source, key: str, body: bytes, **extra: Any) -> str:
    """PUT one version of `audit/<key>`; its version id."""
    answer = source.client.put_object(Bucket=source.bucket, Key=f"{PREFIX}/{key}", Body=body,
                                      ContentMD5=content_md5(body), **extra)
    return str(answer["VersionId"])


def delete(source: S3Source, key: str) -> str:
    """A DELETE without a version id: a delete marker on top; its id."""
    return str(source.client.delete_object(Bucket=source.bucket, Key=f"{PREFIX}/{key}")["VersionId"])


def sha(body: bytes) -> str:
    """SHA-256, hex."""
    return hashlib.sha256(body).hexdigest()


def resolved(source: S3Source, recorded: dict[str, str] | None = None, listed: dict[str, str] | None = None,
             key: str = KEY) -> Resolved:
    """`resolve` for `key` with its versions as S3Source lists them."""
    versions = source.list_versions("events", None).get(key)
    return resolve(source, key, versions, recorded or {}, listed or {})


def only_detail(result: Resolved, kind: str) -> str:
    """The detail of the one finding of `kind`."""
    [detail] = [d for k, d in result.findings if k == kind]
    return detail


class TestRefusedReadsAreErrors:
    """Invariant: only "no such key" and "no such version" read as absent; any other refusal fails verify."""

    @pytest.mark.parametrize("code", ["AccessDenied", "SignatureDoesNotMatch"])  # sorting before and after
    def test_a_refused_get_is_a_source_error(self, proxy: FaultProxy, moto_s3: S3Endpoint, lock_bucket: str,
                                             code: str) -> None:
        """A 403 answering GetObject or GetObjectTagging raises `SourceError` — not an object that is missing."""
        direct = S3Source(moto_s3.client(), lock_bucket, PREFIX)
        put(direct, KEY, b"x\n")
        proxied = S3Source(S3Endpoint(proxy.url, moto_s3.access_key, moto_s3.secret_key, moto_s3.region,
                                      "moto").client(), lock_bucket, PREFIX)
        proxy.plan(lambda method, _path, _n: ("status", 403, code) if method == "GET" else "pass")
        with pytest.raises(SourceError, match="cannot read"):
            proxied.read(KEY)
        with pytest.raises(SourceError, match="cannot HEAD"):
            proxied.head(KEY)

    def test_listing_a_missing_bucket_is_a_source_error(self, moto_s3: S3Endpoint) -> None:
        """ListObjectsV2 refused names the source (`SourceError`); ListObjectVersions refused is
        `VersionsUnavailable` (verify goes on with current versions)."""
        gone = S3Source(moto_s3.client(), f"auditlock-gone-{uuid.uuid4().hex[:12]}", PREFIX)
        with pytest.raises(SourceError, match="cannot list"):
            gone.list_keys("events", None)
        with pytest.raises(VersionsUnavailable, match="s3:ListBucketVersions"):
            gone.list_versions("events", None)


class TestAbsentReadsAsNone:
    """Invariant: a key or version that is not there reads as None (a finding later), never as an error."""

    def test_missing_key(self, source: S3Source) -> None:
        """GET and HEAD of a key that does not exist: None."""
        assert source.read(KEY) is None
        assert source.head(KEY) is None

    def test_missing_version(self, source: S3Source) -> None:
        """GET and HEAD of a version id the key does not have (`NoSuchVersion`): None."""
        put(source, KEY, b"x\n")
        missing = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
        assert source.read(KEY, missing) is None
        assert source.head(KEY, missing) is None


class TestVersionsListed:
    """Invariant: ListObjectVersions is read key by key, archive keys only, markers apart from data."""

    def test_a_foreign_key_does_not_stop_the_listing(self, source: S3Source) -> None:
        """A nested key listed before an archive key is left out, and the keys after it are still listed."""
        nested = "events/year=2026/month=12/0/forged.jsonl.gz"  # listed before KEY
        put(source, nested, b"forged\n")
        put(source, KEY, b"one\n")
        put(source, KEY, b"two\n")
        listed = source.list_versions("events", None)
        assert set(listed) == {KEY}
        assert len(listed[KEY].data) == 2
        assert not listed[KEY].plain
        assert source.list_keys("events", None) == [KEY]

    def test_plain_is_one_data_version_without_a_marker(self, source: S3Source) -> None:
        """One version: plain; two: not; one under a delete marker: not (its data is read by version)."""
        other = KEY.replace("standard", "security")
        put(source, KEY, b"one\n")
        put(source, other, b"one\n")
        assert source.list_versions("events", None)[KEY].plain
        put(source, KEY, b"two\n")
        delete(source, other)
        listed = source.list_versions("events", None)
        assert not listed[KEY].plain
        assert not listed[other].plain
        assert listed[other].deleted


class TestWhichVersionIsChecked:
    """Invariant: the oldest recorded version is checked, else the oldest, else (a recorded hash no version has)
    the newest — with three versions, so that "oldest" is not "the other one"."""

    @pytest.fixture
    def three(self, source: S3Source) -> list[tuple[str, bytes]]:
        """Three versions of KEY, newest first: (version id, bytes)."""
        bodies = [b"original\n", b"second\n", b"third\n"]
        ids = [put(source, KEY, body) for body in bodies]
        return list(zip(reversed(ids), reversed(bodies), strict=True))

    def test_oldest_when_no_digest_records_the_key(self, source: S3Source, three: list[tuple[str, bytes]]) -> None:
        """No recorded hash: the oldest version is checked; the detail names the current one and the third."""
        (newest, _), (middle, middle_body), (oldest, body) = three
        result = resolved(source)
        assert (result.version_id, result.data) == (oldest, body)
        detail = only_detail(result, OVERWRITTEN_OBJECT)
        assert detail.startswith(f"3 versions; checked: {oldest} (sha256 {sha(body)[:16]}…), the oldest")
        assert f"; the current version {newest} differs" in detail
        assert detail.endswith(f"; also {middle} (sha256 {sha(middle_body)[:16]}…)")

    def test_the_recorded_version(self, source: S3Source, three: list[tuple[str, bytes]]) -> None:
        """The middle version's hash recorded: the middle one is checked, the recording digest named."""
        _newest, (middle, body), _oldest = three
        result = resolved(source, {sha(body): "digests/recording"})
        assert (result.version_id, result.data) == (middle, body)
        assert "the original: digests/recording recorded its SHA-256" in only_detail(result, OVERWRITTEN_OBJECT)

    def test_the_oldest_of_two_recorded(self, source: S3Source, three: list[tuple[str, bytes]]) -> None:
        """Two versions' hashes recorded: the older one is checked."""
        _newest, (_, middle_body), (oldest, body) = three
        result = resolved(source, {sha(middle_body): "digests/b", sha(body): "digests/a"})
        assert result.version_id == oldest

    def test_newest_when_no_version_has_the_recorded_hash(self, source: S3Source,
                                                          three: list[tuple[str, bytes]]) -> None:
        """A recorded hash no version has: the newest (what readers saw) is checked, the hash named."""
        (newest, body), _middle, _oldest = three
        result = resolved(source, {"0123456789abcdef" * 4: "digests/recording"})
        assert (result.version_id, result.data) == (newest, body)
        assert "the newest: no version has the SHA-256 digests/recording recorded (0123456789abcdef…)" in \
            only_detail(result, OVERWRITTEN_OBJECT)


class TestVersionFindings:
    """Invariant: `overwritten object` for more than one data version, `delete marker` for a marker on top,
    each detail naming the versions it is about."""

    def test_one_version_under_a_marker_is_no_overwrite(self, source: S3Source) -> None:
        """One data version under a delete marker: a `delete marker` naming both, no `overwritten object`."""
        version = put(source, KEY, b"one\n")
        marker = delete(source, KEY)
        result = resolved(source)
        assert [k for k, _ in result.findings] == [DELETE_MARKER]
        assert only_detail(result, DELETE_MARKER) == (
            f"the latest version is delete marker {marker}: readers see no object, but its data is still there "
            f"(version {version}); checked: {version}")

    def test_two_versions_are_an_overwrite(self, source: S3Source) -> None:
        """Two data versions and no marker: one `overwritten object`, no `delete marker`."""
        put(source, KEY, b"one\n")
        put(source, KEY, b"two\n")
        assert [k for k, _ in resolved(source).findings] == [OVERWRITTEN_OBJECT]

    def test_the_latest_of_two_markers_is_named(self, source: S3Source) -> None:
        """Two delete markers over two versions: the latest marker and the newest data version are named; the
        overwrite calls the newest the one hidden by a marker."""
        oldest = put(source, KEY, b"one\n")
        newest = put(source, KEY, b"two\n")
        delete(source, KEY)
        latest = delete(source, KEY)
        result = resolved(source)
        assert only_detail(result, DELETE_MARKER).startswith(f"the latest version is delete marker {latest}: ")
        assert f"(version {newest}); checked: {oldest}" in only_detail(result, DELETE_MARKER)
        assert f"; the newest version, hidden by a delete marker, {newest} differs" in \
            only_detail(result, OVERWRITTEN_OBJECT)

    def test_checked_newest_names_no_current_version(self, source: S3Source) -> None:
        """When the newest version is the one checked, the detail has no "current version" part — whichever way
        the two version ids sort (keys are tried until both orders are seen)."""
        seen: set[bool] = set()
        for n in range(64):
            key = KEY.replace("0123456789abcdef0123", f"{n:020d}")
            oldest, newest = put(source, key, b"one\n"), put(source, key, b"two\n")
            if (newest < oldest) in seen:
                continue
            seen.add(newest < oldest)
            assert "current version" not in only_detail(resolved(source, {sha(b"two\n"): "d"}, key=key),
                                                          OVERWRITTEN_OBJECT)
            assert f"the current version {newest}" in only_detail(resolved(source, key=key), OVERWRITTEN_OBJECT)
            if len(seen) == 2:
                return
        pytest.fail("64 keys without both orders of version ids")


def two_bodies() -> tuple[bytes, bytes]:
    """Two object bodies, the first with the lower SHA-256."""
    low, high = sorted([b"alpha\n", b"beta\n"], key=sha)
    return low, high


class TestHowTheNewestRelates:
    """Invariant: the overwrite's detail says whether the current version has the checked bytes, another listed
    object's, or others — for hashes and keys on either side of the compared one."""

    @pytest.mark.parametrize("newest_is_low", [True, False])
    def test_other_bytes_differ(self, source: S3Source, newest_is_low: bool) -> None:
        """A current version with other bytes "differs", whichever hash sorts first."""
        low, high = two_bodies()
        original, current = (high, low) if newest_is_low else (low, high)
        put(source, KEY, original)
        put(source, KEY, current)
        detail = only_detail(resolved(source, {sha(original): "digests/d"}), OVERWRITTEN_OBJECT)
        assert detail.endswith(f"differs (sha256 {sha(current)[:16]}…)")

    def test_same_bytes(self, source: S3Source) -> None:
        """The same bytes PUT again: "has the same bytes" (two hashes computed apart, equal)."""
        put(source, KEY, b"same\n")
        put(source, KEY, b"same\n")
        assert only_detail(resolved(source), OVERWRITTEN_OBJECT).endswith("has the same bytes")

    @pytest.mark.parametrize("other", ["events/year=2026/month=12/0-standard-a.jsonl.gz",
                                       "events/year=2026/month=12/Z-standard-a.jsonl.gz"])
    def test_another_objects_bytes(self, source: S3Source, other: str) -> None:
        """A current version holding bytes a digest lists for another key names that key (sorting either side)."""
        put(source, KEY, b"mine\n")
        put(source, KEY, b"theirs\n")
        detail = only_detail(resolved(source, {sha(b"mine\n"): "d"}, {sha(b"theirs\n"): other}),
                             OVERWRITTEN_OBJECT)
        assert detail.endswith(f"holds the bytes of {other}")

    def test_its_own_listed_bytes_are_not_another_objects(self, source: S3Source) -> None:
        """Bytes a digest lists for this same key (an equal string read from elsewhere) are not "another
        object's": the version "differs"."""
        put(source, KEY, b"mine\n")
        put(source, KEY, b"relisted\n")
        same_key = "".join(KEY.partition("/"))  # equal to KEY, not the same object: as parsed from a digest
        detail = only_detail(resolved(source, {sha(b"mine\n"): "d"}, {sha(b"relisted\n"): same_key}),
                             OVERWRITTEN_OBJECT)
        assert "differs" in detail
