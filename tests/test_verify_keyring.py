"""Signing key rotation: `auditlock verify` with a keyring, each digest checked against the key it names."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from auditlock.archive import digest as digest_format
from auditlock.verify.findings import BAD_SIGNATURE, UNKNOWN_SIGNING_KEY
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.verify_env import drain, enable_signing, kinds, make_keypair, subjects, verify


def signed_digests(env: ArchiveEnv) -> dict[str, str]:
    """Each digest key (relative to the prefix) → the fingerprint its signature records."""
    client = env.endpoint.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=env.bucket, Prefix="audit/digests/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=env.bucket, Key=item["Key"])["Body"].read()
            found[item["Key"].removeprefix("audit/")] = orjson.loads(body)["signature"]["public_key_sha256"]
    return found


def switch_signing_key(env: ArchiveEnv, private_key: Path) -> None:
    """The rotation of docs/verify.md: `[agent] signing_key_file` pointed at the new key (then the agent restarts)."""
    lines = [line for line in env.config_path.read_text().splitlines() if not line.startswith("signing_key_file")]
    env.config_path.write_text("\n".join(lines) + f'\nsigning_key_file = "{private_key}"\n')


class RotatedArchive:
    """An archive whose first batch the agent signed with key A and whose second, after a rotation, with key B."""

    def __init__(self, env: ArchiveEnv, keys: Path) -> None:
        keys.mkdir()
        private_a, self.public_a = make_keypair(keys, "2026-a")
        private_b, self.public_b = make_keypair(keys, "2027-b")
        self.keys, self.env = keys, env
        enable_signing(env, private_a)
        env.write_events(5)
        drain(env)
        switch_signing_key(env, private_b)
        env.write_events(5)
        drain(env)
        self.fingerprint_a = digest_format.public_key_fingerprint(digest_format.load_public_key(
            self.public_a.read_bytes()))

    def verify(self, *args: str) -> tuple[int, dict[str, object]]:
        """`auditlock verify --config … ARGS` (JSON report)."""
        return verify("--config", str(self.env.config_path), *args)


def public_ring(rotated: RotatedArchive) -> Path:
    """A directory holding the two public keys."""
    ring = rotated.keys.parent / "ring"
    ring.mkdir()
    for public in (rotated.public_a, rotated.public_b):
        (ring / public.name).write_bytes(public.read_bytes())
    return ring


@pytest.fixture
def rotated(moto_s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RotatedArchive:
    """A rotated archive on a fresh lock bucket of the moto server, credentials in the environment."""
    use_credentials(monkeypatch, moto_s3)
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-keyring-{uuid.uuid4().hex[:12]}")
    (tmp_path / "env").mkdir()
    return RotatedArchive(ArchiveEnv.create(tmp_path / "env", moto_s3, bucket), tmp_path / "keys")


class TestSigningRotation:
    def test_two_keys_given_verify_clean(self, rotated: RotatedArchive) -> None:
        """Digests signed by two keys verify clean with both keys, each digest checked against its own."""
        by_key = signed_digests(rotated.env)
        assert len(set(by_key.values())) == 2
        status, report = rotated.verify("--public-key", str(rotated.public_a), "--public-key", str(rotated.public_b))
        assert (status, report["findings"]) == (0, [])
        assert any(note.startswith("digest signatures by key: 1 by ") for note in report["notes"])

    def test_a_directory_is_a_keyring(self, rotated: RotatedArchive) -> None:
        """A directory of public keys (every *.pem in it) is the ring."""
        status, report = rotated.verify("--public-key", str(public_ring(rotated)))
        assert (status, report["findings"]) == (0, [])

    def test_digest_by_a_key_not_given_is_named(self, rotated: RotatedArchive) -> None:
        """With only the new key, each digest of the old key is an `unknown signing key` naming its fingerprint."""
        status, report = rotated.verify("--public-key", str(rotated.public_b))
        assert status == 1
        assert kinds(report) == {UNKNOWN_SIGNING_KEY}
        old = {key for key, fingerprint in signed_digests(rotated.env).items() if fingerprint == rotated.fingerprint_a}
        assert subjects(report, UNKNOWN_SIGNING_KEY) == old
        detail = report["findings"][0]["detail"]  # type: ignore[index]
        assert f"signed by key {rotated.fingerprint_a[:16]!r}…, which is not among the keys given" in detail
        assert "pass its public key with --public-key" in detail

    def test_right_key_wrong_signature_stays_bad(self, rotated: RotatedArchive) -> None:
        """A digest claiming a ring key's fingerprint but not signed by it is still a `bad signature`."""
        client = rotated.env.endpoint.client()
        key = next(k for k, fp in signed_digests(rotated.env).items() if fp == rotated.fingerprint_a)
        body = client.get_object(Bucket=rotated.env.bucket, Key=f"audit/{key}")["Body"].read()
        (rotated.keys / "copy").mkdir()
        copy = rotated.keys / "copy" / key
        copy.parent.mkdir(parents=True)
        copy.write_bytes(body.replace(b'"created_at":"', b'"created_at":"1'))
        status, report = verify("--source", str(rotated.keys / "copy"), "--public-key", str(rotated.public_a),
                                "--public-key", str(rotated.public_b))
        assert status == 1
        assert BAD_SIGNATURE in kinds(report)
        assert "the signature does not match the digest's content" in {
            f["detail"] for f in report["findings"] if f["kind"] == BAD_SIGNATURE}  # type: ignore[union-attr]

    def test_bad_key_file_in_the_ring_is_a_usage_error(self, rotated: RotatedArchive,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        """A *.pem in a keyring directory that is no Ed25519 public key stops verify (exit 2), naming the file."""
        ring = public_ring(rotated)
        (ring / "not-a-key.pem").write_text("junk\n")
        status, _ = rotated.verify("--public-key", str(ring))
        assert status == 2
        assert "not-a-key.pem is not an Ed25519 public key in PEM" in capsys.readouterr().err
