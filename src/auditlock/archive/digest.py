"""Digests: the archive's own evidence that nothing went missing or changed (after CloudTrail's digest files).

Layout: `<prefix>/digests/year=YYYY/month=MM/<created>-<agent id>.json`, partitioned by the digest's creation
month (UTC), Object-Locked like the events (the longest lock among the objects it covers) and tagged with that
object's retention class so the lifecycle keeps it as long as what it covers.

Format (`auditlock-digest/1`, one JSON object, keys sorted):

    {"schema": "auditlock-digest/1",
     "agent": {"id": "<32 hex, stable across restarts>", "host": "<host>"},
     "created_at": "<RFC 3339 UTC>",
     "previous": {"key": "...", "sha256": "<hex of the previous digest object's bytes>"} | null,
     "objects": [{"key", "sha256", "content_sha256", "bytes", "events", "first_occurred_at",
                  "last_occurred_at", "retention"}, ...],
     "writers": {"<writer>": {"first_seq": n, "last_seq": n, "last_hash": "<hex>", "closed": bool}, ...},
     "state_recovery": {"damaged_file": "<name>", "recovered_at": "<RFC 3339>"},   # optional, see below
     "app_drops": {"<writer>": {"dropped": {"<reason>": n}, "first_dropped_at", "last_dropped_at"}},  # optional
     "witness": {"heads": {"<writer>": {"seq": n, "hash": "<hex>"}, ...},                          # optional
                 "findings": [{"id", "finding", "segment", "detail", "writer", "witnessed_seq", "witnessed_hash",
                               "witnessed_bytes", "detected_at"}, ...]},
     "signature": {"algorithm": "ed25519", "public_key_sha256": "<hex>", "value": "<base64>"}}   # optional

Invariants
- One agent writes one chain: each digest names its predecessor's key and SHA-256 (`previous` is null only for
  an agent's first digest). An agent's id and chain head live in its state directory.
- Each batch of delivered objects gets exactly one digest, written before the batch's segments are deleted.
- `state_recovery` appears in the first digest after the agent recovered from a damaged ledger or chain state
  (docs/agent.md); `app_drops` carries applications' drop files (`spool.drops`) that changed since the previous
  digest of the agent process. Both are evidence for an auditor; verify shows them as notes.
- `witness` (issue #16, `agent.witness`): `heads` holds, per writer of the batch, the last line the agent's witness
  had copied before the batch shipped (its seq and line hash; verify checks the archive's line against it:
  `witness mismatch`); `findings` the segments the agent set aside since its last delivered digest because they
  disagreed with the witness (`rewritten before shipping`) or vanished (`witnessed segment missing`), which verify
  reports as findings. Added to `auditlock-digest/1` as an optional key, like `app_drops`: digests without it
  stay valid, and a verifier that does not know it ignores it.
- The signature covers the canonical bytes (sorted keys, compact) of the digest without `signature`;
  verifying needs only the public key. Unsigned digests are still chained.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from auditlock.archive.layout import DIGESTS_DIR, partition_prefix

DIGEST_SCHEMA = "auditlock-digest/1"
SIGNATURE_ALGORITHM = "ed25519"


def digest_key(prefix: str, created_at: str, agent_id: str) -> str:
    """The key of a digest created at `created_at` (RFC 3339 UTC) by an agent."""
    year, month = int(created_at[:4]), int(created_at[5:7])
    stamp = created_at.replace("-", "").replace(":", "")
    return f"{partition_prefix(prefix, year, month, DIGESTS_DIR)}{stamp}-{agent_id}.json"


def canonical_bytes(digest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the digest without `signature`, keys sorted, compact."""
    unsigned = {k: v for k, v in digest.items() if k != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def encode(digest: dict[str, Any]) -> bytes:
    """The digest object's body."""
    return orjson.dumps(digest, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sign(digest: dict[str, Any], private_key_pem: bytes) -> dict[str, Any]:
    """The digest with an Ed25519 signature added (needs the `cryptography` package)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: PLC0415

    key = load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the digest signing key must be an Ed25519 private key (PEM)")
    signature = key.sign(canonical_bytes(digest))
    return {**digest, "signature": {
        "algorithm": SIGNATURE_ALGORITHM,
        "public_key_sha256": public_key_fingerprint(key.public_key()),
        "value": base64.b64encode(signature).decode("ascii"),
    }}


def public_key_fingerprint(public_key: Any) -> str:
    """Hex SHA-256 of an Ed25519 public key's raw 32 bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: PLC0415

    return sha256_hex(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def load_public_key(pem: bytes) -> Any:
    """An Ed25519 public key from PEM; ValueError if it is not one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_public_key  # noqa: PLC0415

    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key must be an Ed25519 public key (PEM)")
    return key


def signature_problem(digest: dict[str, Any], public_key: Any) -> str | None:
    """None if the digest carries a valid signature by `public_key`, else what is wrong."""
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

    signature = digest.get("signature")
    if not isinstance(signature, dict):
        return "the digest is not signed"
    if signature.get("public_key_sha256") != public_key_fingerprint(public_key):
        return "signed by another key (fingerprint differs)"
    value = _signature_bytes(signature.get("value"))
    if value is None:
        return "the signature value is not base64 text"
    try:
        public_key.verify(value, canonical_bytes(digest))
    except InvalidSignature:
        return "the signature does not match the digest's content"
    return None


def _signature_bytes(value: Any) -> bytes | None:
    """The bytes of a signature's base64 text; None for anything else (strict: no skipped characters, so that
    no two texts carry one signature)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        return None
