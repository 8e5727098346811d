"""A forger with the digest signing key, over a downloaded copy of the archive (`verify --source DIR`).

`ArchiveCopy` reads and rewrites the copy's events objects and digests. `reseal` then makes everything agree
again, as a forger holding the signing key would: each writer's `prev` links are recomputed in seq order, every
digest lists the objects' new SHA-256s (and drops the removed ones), records its writers' new `last_hash`, names
its predecessor's new SHA-256 and is re-signed. After `reseal`, only the invariant a test is about can notice the
edit — so that test fails if verify stops checking it.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditlock.archive import digest as digest_format

PREFIX = "audit/"


@dataclass(frozen=True)
class ArchiveCopy:
    """A `--source` directory: `events/…jsonl.gz` and `digests/…json`, keys relative to the prefix."""

    root: Path

    @classmethod
    def of(cls, pristine: Path, target: Path) -> ArchiveCopy:
        """A fresh copy of the directory `pristine` at `target`."""
        shutil.copytree(pristine, target)
        return cls(target)

    def stored(self, kind: str = "events") -> list[str]:
        """The relative keys under `kind/`, sorted (for digests: chain order, a key starts with its time)."""
        return sorted(str(p.relative_to(self.root)) for p in (self.root / kind).rglob("*") if p.is_file())

    def lines(self, key: str) -> list[bytes]:
        """The JSONL lines of an events object (without newlines)."""
        return gzip.decompress((self.root / key).read_bytes()).splitlines()

    def events(self, key: str) -> list[dict[str, Any]]:
        """The events of an object, in order."""
        return [orjson.loads(line) for line in self.lines(key)]

    def write_events(self, key: str, events: list[dict[str, Any]]) -> None:
        """Replace an object's content with these events (serialised as the writer does)."""
        self.write_lines(key, [orjson.dumps(event) for event in events])

    def write_lines(self, key: str, lines: list[bytes]) -> None:
        """Replace an object's content with these lines."""
        (self.root / key).write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0))

    def digest(self, key: str) -> dict[str, Any]:
        """A digest's body."""
        body: dict[str, Any] = orjson.loads((self.root / key).read_bytes())
        return body

    def write_digest(self, key: str, body: dict[str, Any]) -> None:
        """Write a digest body as the agent encodes it (no re-signing: see `resign`)."""
        (self.root / key).write_bytes(digest_format.encode(body))

    def resign(self, key: str, body: dict[str, Any], private_key_pem: bytes) -> None:
        """Write a digest body signed with `private_key_pem`."""
        self.write_digest(key, digest_format.sign(body, private_key_pem))

    def sha256(self, key: str) -> str:
        """Hex SHA-256 of a stored file's bytes."""
        return hashlib.sha256((self.root / key).read_bytes()).hexdigest()

    def remove(self, key: str) -> None:
        """Delete one object or digest from the copy."""
        (self.root / key).unlink()

    def writer_objects(self, writer: str) -> list[str]:
        """The events objects holding a line of `writer`, in key order."""
        return [key for key in self.stored() if any(event["writer"] == writer for event in self.events(key))]


def first_closing_line(copy: ArchiveCopy) -> tuple[str, int]:
    """The object and line index of the first clean-end record in the copy."""
    for key in copy.stored():
        for index, event in enumerate(copy.events(key)):
            if event["event_type"] == "auditlock.writer_closed":
                return key, index
    raise AssertionError("the pristine archive has no closed writer")

def reseal(copy: ArchiveCopy, private_key_pem: bytes) -> None:
    """Make every hash, record and signature in the copy agree with its (edited) events again."""
    line_hashes = _relink(copy)
    previous: tuple[str, str] | None = None
    for key in copy.stored("digests"):
        body = copy.digest(key)
        body["objects"] = [_relisted(copy, entry) for entry in body["objects"]
                           if (copy.root / _relative(entry["key"])).exists()]
        for writer, recorded in body["writers"].items():
            recorded["last_hash"] = line_hashes.get((writer, recorded["last_seq"]), recorded["last_hash"])
        if previous is not None:
            body["previous"] = {"key": PREFIX + previous[0], "sha256": previous[1]}
        copy.resign(key, body, private_key_pem)
        previous = (key, copy.sha256(key))


def _relink(copy: ArchiveCopy) -> dict[tuple[str, int], str]:
    """Recompute every line's `prev` as the hash of its writer's line seq-1 (in the same object if it is there,
    else the first one seen); rewrite the objects whose lines changed. Returns (writer, seq) → the line's hash."""
    located = [(event["writer"], event["seq"], key, index, event)
               for key in copy.stored() for index, event in enumerate(copy.events(key))
               if isinstance(event, dict) and {"writer", "seq", "prev"} <= event.keys()]  # a planted non-event stays
    hashes: dict[tuple[str, int], str] = {}
    in_object: dict[tuple[str, int, str], str] = {}
    contents = {key: copy.lines(key) for key in copy.stored()}
    for writer, seq, key, index, event in sorted(located, key=lambda item: item[:4]):
        link = in_object.get((writer, seq - 1, key)) or hashes.get((writer, seq - 1), event["prev"])
        if link != event["prev"] and seq > 0:
            event["prev"] = link
            contents[key][index] = orjson.dumps(event)
        line_hash = hashlib.sha256(contents[key][index]).hexdigest()
        hashes.setdefault((writer, seq), line_hash)
        in_object[writer, seq, key] = line_hash
    for key, lines in contents.items():
        if lines != copy.lines(key):
            copy.write_lines(key, lines)
    return hashes


def _relisted(copy: ArchiveCopy, entry: dict[str, Any]) -> dict[str, Any]:
    key = _relative(entry["key"])
    sha256 = copy.sha256(key)
    return {**entry, "sha256": sha256, "content_sha256": sha256, "bytes": (copy.root / key).stat().st_size,
            "events": len(copy.lines(key))}


def _relative(key: str) -> str:
    return key.removeprefix(PREFIX)
