"""The signing keyring of `auditlock verify`: every public key digests may be signed by, matched by fingerprint.

A digest records the SHA-256 of its signer's raw public key (`signature.public_key_sha256`, see
`archive.digest`). After a signing key rotation (the agent's `[agent] signing_key_file` switched) the archive
holds digests of both keys; verify is given both (`--public-key` repeated, or a directory of `*.pem` files) and
checks each digest against the key its fingerprint names. A digest whose fingerprint names no key of the ring is
a finding of its own (`unknown signing key`): a key verify was not given — a rotation nobody recorded, or a
forger's key. The recorded fingerprint is archive data (hostile): it is only compared and shown cut short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlock.archive import digest as digest_format
from auditlock.errors import AuditlockError

SHOWN_FINGERPRINT = 16  # hex digits of a fingerprint in messages


class KeyringError(AuditlockError):
    """A public key file could not be read or is not an Ed25519 public key; the message names the file."""


@dataclass(frozen=True)
class SigningKeyring:
    """Ed25519 public keys by fingerprint (hex SHA-256 of the raw key), and the file each came from."""

    keys: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Any) -> SigningKeyring:
        """A ring from a ring (returned as it is), one public key, or an iterable of public keys."""
        if isinstance(keys, SigningKeyring):
            return keys
        many = list(keys) if isinstance(keys, Iterable) else [keys]
        return cls({digest_format.public_key_fingerprint(key): key for key in many})

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> SigningKeyring:
        """The keys of PEM files and of directories' `*.pem` files; a `KeyringError` names a bad one."""
        keys: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for path in paths:
            files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
            if not files:
                raise KeyringError(f"{path}: a directory without *.pem files; put the public keys there")
            for file in files:
                key = _load(file)
                fingerprint = digest_format.public_key_fingerprint(key)
                keys[fingerprint] = key
                sources.setdefault(fingerprint, str(file))
        return cls(keys, sources)

    def describe(self) -> str:
        """The ring's keys for a message: short fingerprints and their files."""
        return ", ".join(f"{fp[:SHOWN_FINGERPRINT]}… ({self.sources[fp]})" if fp in self.sources
                         else f"{fp[:SHOWN_FINGERPRINT]}…" for fp in sorted(self.keys))

    def signer(self, digest: dict[str, Any]) -> str | None:
        """The fingerprint a digest's signature records, if it is a string (None: no usable signature)."""
        signature = digest.get("signature")
        recorded = signature.get("public_key_sha256") if isinstance(signature, dict) else None
        return recorded if isinstance(recorded, str) else None

    def problem(self, digest: dict[str, Any]) -> tuple[bool, str] | None:
        """None if a key of the ring validly signed the digest; else (unknown key?, what is wrong)."""
        fingerprint = self.signer(digest)
        if not self.keys:
            return True, "no public key given to check it against"
        if fingerprint is not None and fingerprint not in self.keys:
            return True, (f"signed by key {fingerprint[:SHOWN_FINGERPRINT]!r}…, which is not among the keys given "
                          f"({self.describe()}); if that key is yours, pass its public key with --public-key")
        # Without a fingerprint there is nothing to match: any key's check says what is missing.
        key = next(iter(self.keys.values())) if fingerprint is None else self.keys[fingerprint]
        detail = digest_format.signature_problem(digest, key)
        return None if detail is None else (False, detail)


def _load(file: Path) -> Any:
    try:
        pem = file.read_bytes()
    except OSError as exc:
        raise KeyringError(f"cannot read {file}: {exc.strerror}") from exc
    try:
        return digest_format.load_public_key(pem)
    except ImportError as exc:
        raise KeyringError(f"reading {file} needs the 'cryptography' package ({exc})") from exc
    except (ValueError, TypeError) as exc:
        raise KeyringError(f"{file} is not an Ed25519 public key in PEM: {exc}") from exc
