"""The digest side of verify: load digests, walk each agent's chain, check signatures, list what they cover.

A digest names its predecessor's key and the SHA-256 of the predecessor's bytes (see `archive.digest`). So a
digest that was *changed* is caught by its successor (`digest modified`), one that was *removed* leaves its
successor pointing at nothing (`broken digest chain`), and two digests naming the same predecessor are a fork;
a digest naming another agent's digest breaks "one agent, one chain" (`broken digest chain`).
The newest digest of a chain has no successor: its removal shows only as `unlisted object`s, its change only
as a `bad signature` (when signed and `--public-key` is given) — docs/verify.md says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditlock.archive import digest as digest_format
from auditlock.archive.layout import DIGESTS_DIR
from auditlock.verify.findings import (
    BAD_SIGNATURE,
    BROKEN_DIGEST_CHAIN,
    DIGEST_MODIFIED,
    UNKNOWN_SIGNING_KEY,
    Report,
)
from auditlock.verify.keyring import SHOWN_FINGERPRINT, SigningKeyring
from auditlock.verify.source import ArchiveSource, KeyVersions, key_month, relative_key
from auditlock.verify.versions import resolve


@dataclass(frozen=True)
class Listing:
    """One events object as a digest lists it."""

    key: str
    sha256: str
    retention: str
    last_occurred_at: str
    digest: str


@dataclass
class LoadedDigest:
    """A digest object read from the archive."""

    key: str
    sha256: str
    body: dict[str, Any]
    agent: str
    previous: tuple[str, str] | None
    version_id: str | None = None  # the version read, when the key has several (None: the current one)


@dataclass
class DigestSet:
    """The digests of the selected months, and every events object they list (by relative key)."""

    digests: dict[str, LoadedDigest] = field(default_factory=dict)
    listed: dict[str, list[Listing]] = field(default_factory=dict)

    def listed_sha256s(self) -> dict[str, str]:
        """Listed SHA-256 → the key it is listed for (to recognise a swapped object)."""
        return {listing.sha256: key for key, listings in self.listed.items() for listing in listings}


def load_digests(source: ArchiveSource, months: Iterable[tuple[int, int]] | None, report: Report,
                 versions: Mapping[str, KeyVersions] | None = None) -> DigestSet:
    """Read every digest in the months (for an overwritten or delete-marked one, the version its successor
    recorded: see `versions`); unreadable ones are findings."""
    versions = versions or {}
    recorded: dict[str, dict[str, str]] = {}  # digest key → {SHA-256 its successor recorded: the successor}
    loaded_all: list[LoadedDigest] = []
    # Newest first, so that a digest's successor (created later, so a later key) has been read before it.
    for key in sorted(set(source.list_keys(DIGESTS_DIR, months)) | set(versions), reverse=True):
        resolved = resolve(source, key, versions.get(key), recorded.get(key, {}), {})
        for kind, detail in resolved.findings:
            report.add(kind, key, detail)
        if resolved.data is None:
            continue  # deleted between listing and reading, or only a delete marker; its successor will say so
        loaded = _parse(key, resolved.data, resolved.version_id)
        report.count("digests")
        if loaded is None:
            report.add(DIGEST_MODIFIED, key, f"not an {digest_format.DIGEST_SCHEMA} JSON object")
            continue
        if loaded.previous is not None:
            previous_key = relative_key(loaded.previous[0]) or loaded.previous[0]
            recorded.setdefault(previous_key, {}).setdefault(loaded.previous[1], key)
        loaded_all.append(loaded)
    found = DigestSet()
    for loaded in sorted(loaded_all, key=lambda d: d.key):
        found.digests[loaded.key] = loaded
        entries, unread = loaded.body.get("objects", []), 0
        for entry in entries:
            listing = _listing(entry, loaded.key)
            if listing is None:
                unread += 1
            else:
                found.listed.setdefault(listing.key, []).append(listing)
        for detail in _malformed_parts(loaded.body, unread, len(entries)):
            report.add(DIGEST_MODIFIED, loaded.key, detail)
    return found


def _malformed_parts(body: Mapping[str, Any], unread: int, entries: int) -> list[str]:
    """What of a digest's object entries and writer records the agent never writes. verify reads past each (the
    rest of the digest still counts, as far as it can be read), and names it: never a silent skip."""
    problems = []
    if unread:
        problems.append(f"{unread} of its {entries} object entries are not an events object's listing (a "
                        "string key under the archive's prefix, sha256, retention and last_occurred_at)")
    writers = body.get("writers")
    if not isinstance(writers, dict):
        problems.append("its writers are not a map of writer records")
        return problems
    malformed = sorted(str(writer) for writer, recorded in writers.items() if not _well_formed_record(recorded))
    if malformed:
        shown = ", ".join(malformed[:_SHOWN_WRITERS]) + (", …" if len(malformed) > _SHOWN_WRITERS else "")
        problems.append(f"{len(malformed)} writer records are not the agent's (integer first_seq and last_seq, a "
                        f"last_hash string, a closed flag): {shown}")
    return problems


_SHOWN_WRITERS = 5


def _well_formed_record(recorded: Any) -> bool:
    """Whether a digest's writer record is as the agent writes it (`archive.digest`: first_seq, last_seq,
    last_hash, closed)."""
    return (isinstance(recorded, dict) and type(recorded.get("first_seq")) is int
            and type(recorded.get("last_seq")) is int and isinstance(recorded.get("last_hash"), str)
            and isinstance(recorded.get("closed"), bool))


def _parse(key: str, data: bytes, version_id: str | None) -> LoadedDigest | None:
    try:
        body = orjson.loads(data)
        agent = str(body["agent"]["id"])
        previous = body["previous"]
        prev = None if previous is None else (str(previous["key"]), str(previous["sha256"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if body.get("schema") != digest_format.DIGEST_SCHEMA or not isinstance(body.get("objects"), list):
        return None
    return LoadedDigest(key, hashlib.sha256(data).hexdigest(), body, agent, prev, version_id)


def _listing(entry: Any, digest_key: str) -> Listing | None:
    try:
        key = relative_key(str(entry["key"]))
        listing = Listing(key or "", str(entry["sha256"]), str(entry["retention"]), str(entry["last_occurred_at"]),
                          digest_key)
    except (KeyError, TypeError):
        return None
    return listing if key else None


def check_chains(found: DigestSet, months: list[tuple[int, int]] | None, report: Report) -> None:
    """Every digest's predecessor is present and unchanged; no two digests share one; one start per agent."""
    successors: dict[str, list[str]] = {}
    starts: dict[str, list[str]] = {}
    for key, loaded in sorted(found.digests.items()):
        if loaded.previous is None:
            starts.setdefault(loaded.agent, []).append(key)
            continue
        previous_key = relative_key(loaded.previous[0]) or loaded.previous[0]
        successors.setdefault(previous_key, []).append(key)
        _check_previous(found, loaded, previous_key, loaded.previous[1], months=months, report=report)
    for previous_key, keys in successors.items():
        if len(keys) > 1:
            report.add(BROKEN_DIGEST_CHAIN, previous_key, f"fork: {len(keys)} digests name it as their previous "
                                                          f"({', '.join(keys)})")
    for agent, keys in starts.items():
        if len(keys) > 1:
            report.add(BROKEN_DIGEST_CHAIN, f"agent {agent}",
                       f"{len(keys)} digests start a chain (previous is null): {', '.join(keys)}")
    note_agent_records(found, report)


def note_agent_records(found: DigestSet, report: Report) -> None:
    """What agents recorded in their digests for an auditor: recoveries from damaged state, applications' drops.
    Notes, not findings: the archive's own checks say whether anything is missing or doubled."""
    for key, loaded in sorted(found.digests.items()):
        recovery = loaded.body.get("state_recovery")
        if isinstance(recovery, dict):
            report.notes.append(
                f"{key}: the agent recovered from a damaged state file ({recovery.get('damaged_file')!s:.80}) at "
                f"{recovery.get('recovered_at')!s:.40}: if the batch then in flight was rebuilt differently, its "
                "landed objects show as unlisted with duplicate events (nothing lost); after a damaged chain state a "
                "new chain (a new agent id) starts")
        drops = loaded.body.get("app_drops")
        if isinstance(drops, dict) and drops:
            total = sum(n for d in drops.values() if isinstance(d, dict) and isinstance(d.get("dropped"), dict)
                        for n in d["dropped"].values() if isinstance(n, int))
            report.notes.append(f"{key}: applications reported {total} audit events dropped so far "
                                f"(on_error = drop) by {len(drops)} writers; see its app_drops")


def _check_previous(found: DigestSet, loaded: LoadedDigest, previous_key: str, recorded_sha256: str, *,
                    months: list[tuple[int, int]] | None, report: Report) -> None:
    """The digest's predecessor is there, hashes to what it recorded, and is of the same agent."""
    key = loaded.key
    previous = found.digests.get(previous_key)
    if previous is not None:
        if previous.sha256 != recorded_sha256:
            report.add(DIGEST_MODIFIED, previous_key,
                       f"its bytes hash to {previous.sha256[:16]}…, but its successor {key} recorded "
                       f"{recorded_sha256[:16]}…")
        if previous.agent != loaded.agent:
            report.add(BROKEN_DIGEST_CHAIN, key, f"its previous digest {previous_key} belongs to agent "
                                                 f"{previous.agent}, this digest to agent {loaded.agent} (one agent "
                                                 "writes one chain)")
        return
    month = key_month(previous_key)
    if months is not None and (month is None or month < min(months)):
        report.notes.append(f"{key}: its previous digest {previous_key} lies before the selected months")
        return
    report.add(BROKEN_DIGEST_CHAIN, key, f"its previous digest {previous_key} is missing")


def check_signatures(found: DigestSet, public_keys: Any, report: Report) -> None:
    """Every digest carries a valid Ed25519 signature by a key of `public_keys` (a `SigningKeyring`, one key or
    several), the one its recorded fingerprint names; a digest signed by a key not given is named as such."""
    ring = SigningKeyring.of(public_keys)
    signed_by: dict[str, int] = {}
    for key, loaded in sorted(found.digests.items()):
        problem = ring.problem(loaded.body)
        if problem is None:
            fingerprint = ring.signer(loaded.body) or ""
            signed_by[fingerprint] = signed_by.get(fingerprint, 0) + 1
            continue
        unknown, detail = problem
        report.add(UNKNOWN_SIGNING_KEY if unknown else BAD_SIGNATURE, key, detail)
    if len(ring.keys) > 1 and signed_by:
        report.notes.append("digest signatures by key: " + ", ".join(
            f"{n} by {fp[:SHOWN_FINGERPRINT]}…" for fp, n in sorted(signed_by.items())))
