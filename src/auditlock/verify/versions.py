"""Object versions and delete markers: which version of a key verify checks, and what it reports about the rest.

An Object Lock bucket is versioned. The lock protects *versions*, not keys: a plain PUT adds a new current version
over a locked one, and a DELETE without a version id adds a delete marker that hides the key from readers. The
locked original stays. auditlock never overwrites or deletes (archive/layout.py), so any key with more than one
data version, or a delete marker, is a finding — and the original is still there to be checked.

Which version is checked (decided here, documented in docs/verify.md):
- a key with one data version and no delete marker on top: the current version (the common case, one GET);
- otherwise every data version is read and hashed, and verify checks
  1. the oldest version whose SHA-256 a digest recorded (the original the agent wrote), else
  2. when no digest records a SHA-256 for the key (an unlisted object, the newest digest of a chain): the
     oldest version — the agent writes each key once, so the first version is its;
  3. when a digest records a SHA-256 that no version has: the newest data version (what readers saw), so the
     usual `modified object` / `swapped object` / chain findings describe it as before.
  The rest of the report (seq gaps, prev chains, locks, tags, digest chain) then describes the checked version:
  one tampering gives one precise finding instead of a cascade of consequences.
- `overwritten object`: more than one data version; the detail names the checked version, why, and how the
  newest one relates to it (differs, holds another listed object's bytes, or has the same bytes).
- `delete marker`: the latest version is a delete marker; the detail names the marker and the data version it
  hides. It replaces `missing object` when data is still there; a listed key whose data is gone altogether is
  a `missing object` as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from auditlock.verify.findings import DELETE_MARKER, OVERWRITTEN_OBJECT
from auditlock.verify.source import ArchiveSource, KeyVersions


@dataclass
class Resolved:
    """The bytes verify checks for one key, which version they are, and findings about the key's versions."""

    data: bytes | None
    version_id: str | None = None  # None: the current version, read without a version id
    findings: list[tuple[str, str]] = field(default_factory=list)


def resolve(source: ArchiveSource, key: str, versions: KeyVersions | None, recorded: Mapping[str, str],
            listed: Mapping[str, str]) -> Resolved:
    """Read the version of `key` to check (see the module docstring).

    `recorded`: SHA-256 → the digest that recorded it for this key; `listed`: SHA-256 → the key a digest lists
    with it (to recognise another object's bytes).
    """
    if versions is None or versions.plain:
        return Resolved(source.read(key))
    hashes: dict[str, str] = {}
    blobs: dict[str, bytes] = {}
    for version_id in versions.data:
        data = source.read(key, version_id)
        if data is not None:
            blobs[version_id], hashes[version_id] = data, hashlib.sha256(data).hexdigest()
    present = [v for v in versions.data if v in hashes]  # newest first
    if not present:
        resolved = Resolved(None)
    else:
        chosen, why = _choose(present, hashes, recorded)
        resolved = Resolved(blobs[chosen], chosen)
        if len(present) > 1:
            detail = _overwritten(key, present, hashes, chosen, why=why, listed=listed, deleted=versions.deleted)
            resolved.findings.append((OVERWRITTEN_OBJECT, detail))
    if versions.deleted:
        resolved.findings.append((DELETE_MARKER, _marker(versions.markers[0], present, resolved.version_id)))
    return resolved


def _choose(present: list[str], hashes: Mapping[str, str], recorded: Mapping[str, str]) -> tuple[str, str]:
    """The version to check and why, in words."""
    for version_id in reversed(present):  # oldest first
        digest = recorded.get(hashes[version_id])
        if digest is not None:
            return version_id, f"the original: {digest} recorded its SHA-256"
    if not recorded:
        return present[-1], "the oldest: no digest records a SHA-256 for this key"
    wanted = next(iter(recorded))
    return present[0], (f"the newest: no version has the SHA-256 {recorded[wanted]} recorded "
                        f"({wanted[:16]}…)")


def _overwritten(key: str, present: list[str], hashes: Mapping[str, str], chosen: str, *, why: str,
                 listed: Mapping[str, str], deleted: bool) -> str:
    newest = present[0]
    text = f"{len(present)} versions; checked: {chosen} (sha256 {hashes[chosen][:16]}…), {why}"
    if newest != chosen:
        label = "the newest version, hidden by a delete marker," if deleted else "the current version"
        text += f"; {label} {newest} {_relation(key, hashes[newest], hashes[chosen], listed)}"
    others = [v for v in present if v not in (chosen, newest)]
    if others:
        text += "; also " + ", ".join(f"{v} (sha256 {hashes[v][:16]}…)" for v in others)
    return text


def _relation(key: str, sha256: str, checked: str, listed: Mapping[str, str]) -> str:
    if sha256 == checked:
        return "has the same bytes"
    other = listed.get(sha256)
    if other is not None and other != key:
        return f"holds the bytes of {other}"
    return f"differs (sha256 {sha256[:16]}…)"


def _marker(marker: str, present: list[str], checked: str | None) -> str:
    if not present:
        return f"the latest version is delete marker {marker}, and no data version is left under it"
    return (f"the latest version is delete marker {marker}: readers see no object, but its data is still there "
            f"(version {present[0]}); checked: {checked}")
