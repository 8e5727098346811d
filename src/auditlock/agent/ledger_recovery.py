"""Recovering from a damaged ledger: find out from the archive and the spool what the lost batch did.

A ledger that cannot be read (see `agent.ledger`) named at most one batch in flight, which may have got this far:
- **its digest landed but the chain head did not advance** (a crash between the digest's PUT and `advance`):
  this agent's digests after the head are listed (from the head's month, or the month of the agent id — a
  UUIDv7 — to now); the one naming the head as its `previous` becomes the new head. Otherwise the next digest
  would name the same predecessor: a fork, which verify reports as `broken digest chain`.
- **its digest landed and some of its segments were deleted** ("confirmed"): the sealed segments whose writer
  the head digest records, in its seq range, are compared line by line (SHA-256 of every line) with the objects
  that digest lists. A segment whose every line is there was delivered: it is deleted, not sent a second time.
- **objects landed without a digest** ("uploading", "digesting"): the spool's segments ship as usual; the same
  segments rebuild into the same objects, which HEAD finds already present (no duplicate, no second version).

What recovery cannot know: if segments sealed since the crash join the rebuilt batch, its objects differ from
the ones that landed. Then nothing is lost, but those landed objects are listed by no digest: verify reports
them as `unlisted object` and their events as `duplicate event`; the ERROR line and
`auditlock_ledger_damaged_total` say when this happened, and the next digest records `state_recovery`.

The damaged file is renamed aside (`ledger.damaged-<stamp>.json`, kept) only once recovery is complete, so a crash
or a stop during recovery repeats it at the next start; every step is idempotent. Every S3 failure is retried
with the shipper's backoff, like a delivery.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from auditlock.agent.backoff import error_kind
from auditlock.agent.batch import SealedSegment, list_sealed
from auditlock.agent.ledger import LedgerDamagedError
from auditlock.archive import digest as digest_format
from auditlock.archive.layout import DIGESTS_DIR, partition_prefix
from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import fsync_dir

if TYPE_CHECKING:
    from auditlock.agent.shipper import Shipper

log = logging.getLogger("auditlock.agent")

MAX_DIGEST_BYTES = 64 * 1024 * 1024
# Bounds against a hostile object (ours are about one batch): what is read, and what it may inflate to.
MAX_OBJECT_BYTES = 512 * 1024 * 1024
MAX_OBJECT_CONTENT_BYTES = 4 * MAX_OBJECT_BYTES
MAX_LINE_BYTES = 16 * 1024 * 1024  # far above [events] max_event_bytes; a longer "line" is read in pieces
T = TypeVar("T")


class LedgerRecovery:
    """Recovers one damaged ledger for a shipper (see the module docstring)."""

    def __init__(self, shipper: Shipper, error: LedgerDamagedError, deadline: float | None) -> None:
        self.shipper = shipper
        self.error = error
        self.deadline = deadline
        self.client = shipper.uploader.client
        self.bucket = shipper.uploader.bucket

    def run(self) -> Path:
        """Adopt a landed digest, delete what was delivered, set the damaged file aside; returns where it went."""
        log.error("auditlock agent: LEDGER DAMAGED: %s: %s; recovering from the spool and the archive",
                  self.error.path, self.error.reason)
        self.shipper.metrics.ledger_damaged.inc()
        adopted = self._adopt_landed_digest()
        head = self.shipper.digests.last
        deleted = self._delete_delivered(head) if head is not None else []
        aside = self.shipper.ledger.set_aside()
        self.shipper.digests.note_state_recovery({"damaged_file": aside.name, "recovered_at": _utc_now()})
        log.error("auditlock agent: ledger recovered: damaged file kept as %s; digest adopted as chain head: %s; "
                  "%d delivered segments deleted; the rest ships from the spool (run `auditlock verify`)",
                  aside, adopted or "none", len(deleted))
        return aside

    # --- the digest chain ----------------------------------------------------------------------------

    def _adopt_landed_digest(self) -> str | None:
        chain = self.shipper.digests
        for key in self._later_digest_keys():
            body = self._get(key, MAX_DIGEST_BYTES)
            if _follows(body, chain.last):
                chain.advance(key, digest_format.sha256_hex(body))
                log.warning("auditlock agent: digest %s had landed before the ledger was lost; it is the chain head "
                            "now (no fork)", key)
                return key
            log.warning("auditlock agent: digest %s of this agent does not follow the chain head; left alone", key)
        return None

    def _later_digest_keys(self) -> list[str]:
        """This agent's digest keys after the chain head, oldest first."""
        chain = self.shipper.digests
        head_key = chain.last[0] if chain.last is not None else ""
        suffix = f"-{chain.agent_id}.json"
        keys = []
        for year, month in _months_since(_start_month(head_key, chain.agent_id)):
            prefix = partition_prefix(chain.prefix, year, month, DIGESTS_DIR)
            keys += [k for k in self._list(prefix, head_key) if k.endswith(suffix) and k > head_key]
        return sorted(keys)

    # --- segments already delivered ------------------------------------------------------------------

    def _delete_delivered(self, head: tuple[str, str]) -> list[str]:
        digest = _parse_digest(self._get(head[0], MAX_DIGEST_BYTES))
        if digest is None:
            log.error("auditlock agent: the chain head %s is not a readable digest; nothing deleted", head[0])
            return []
        candidates = _covered_segments(list_sealed(self.shipper.spool), digest.get("writers"))
        if not candidates:
            return []
        bound = self.shipper.max_segment_bytes
        lines = {segment.path.name: _line_hashes(segment.path, bound) for segment in candidates}
        missing = set().union(*lines.values())
        for entry in digest.get("objects") or []:
            if missing and isinstance(entry, dict) and isinstance(entry.get("key"), str):
                missing -= self._object_line_hashes(entry["key"])
        delivered = [s for s in candidates if lines[s.path.name] and not lines[s.path.name] & missing]
        for segment in delivered:
            segment.path.unlink(missing_ok=True)
            log.warning("auditlock agent: %s was delivered in %s before the ledger was lost: deleted",
                        segment.path.name, head[0])
        if delivered:
            fsync_dir(self.shipper.spool)
            self.shipper.witness.release(s.path.name for s in delivered)
        return [s.path.name for s in delivered]

    def _object_line_hashes(self, key: str) -> set[bytes]:
        hashes: set[bytes] = set()
        content = 0
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(self._get(key, MAX_OBJECT_BYTES))) as lines:
                for line in iter(lambda: lines.readline(MAX_LINE_BYTES), b""):
                    content += len(line)
                    if content > MAX_OBJECT_CONTENT_BYTES:
                        log.error("auditlock agent: object %s inflates past %d bytes; read no further", key,
                                  MAX_OBJECT_CONTENT_BYTES)
                        break
                    hashes.add(hashlib.sha256(line.rstrip(b"\n")).digest())
        except (OSError, EOFError) as exc:
            log.error("auditlock agent: object %s listed by the chain head is not readable gzip (%s)", key, exc)
        return hashes

    # --- S3, retried ---------------------------------------------------------------------------------

    def _list(self, prefix: str, start_after: str) -> list[str]:
        def call() -> list[str]:
            keys: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, StartAfter=start_after):
                keys += [o["Key"] for o in page.get("Contents", [])]
            return keys

        return self._retrying(f"listing s3://{self.bucket}/{prefix}", call)

    def _get(self, key: str, limit: int) -> bytes:
        def call() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            data: bytes = body.read(limit + 1)
            body.close()
            return data[:limit]

        return self._retrying(f"reading s3://{self.bucket}/{key}", call)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        from auditlock.agent.shipper import DeadlineExceededError, StopRequestedError  # noqa: PLC0415 - a cycle

        shipper = self.shipper
        while True:
            try:
                result = call()
            except Exception as exc:  # every failure is retried, as deliveries are
                shipper.metrics.errors.labels(kind=error_kind(exc)).inc()
                delay = shipper.backoff.next_delay()
                shipper.errors.failed(what, exc, delay)
                if self.deadline is not None and time.monotonic() + delay > self.deadline:
                    raise DeadlineExceededError(f"{what} still failing: {exc}") from exc
                if (shipper.stop if self.deadline is None else shipper.abort).wait(delay):
                    if shipper.abort.is_set():
                        raise DeadlineExceededError("aborted by a second signal") from exc
                    raise StopRequestedError from exc
                continue
            shipper.backoff.reset()
            shipper.errors.succeeded(what)
            return result


def _covered_segments(sealed: list[SealedSegment], writers: Any) -> list[SealedSegment]:
    """Sealed segments starting inside a writer's seq range as a digest records it."""
    if not isinstance(writers, dict):
        return []
    covered = []
    for segment in sealed:
        seq_range = writers.get(segment.name.writer)
        if not isinstance(seq_range, dict):
            continue
        first, last = seq_range.get("first_seq"), seq_range.get("last_seq")
        if isinstance(first, int) and isinstance(last, int) and first <= segment.name.first_seq <= last:
            covered.append(segment)
    return covered


def _line_hashes(path: Path, max_bytes: int) -> set[bytes]:
    """The hashes of a segment's lines; none (so never deleted here) for one gone, or refused (`spool.files`)."""
    try:
        with open_spool_file(path, max_bytes) as f:
            return {hashlib.sha256(line.rstrip(b"\n")).digest() for line in f}
    except (FileNotFoundError, UnsafeSpoolFileError):
        return set()


def _parse_digest(body: bytes) -> dict[str, Any] | None:
    try:
        digest = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return digest if isinstance(digest, dict) and digest.get("schema") == digest_format.DIGEST_SCHEMA else None


def _follows(body: bytes, head: tuple[str, str] | None) -> bool:
    """Whether a digest body names `head` as its previous (or starts the chain when there is no head)."""
    digest = _parse_digest(body)
    if digest is None:
        return False
    previous = digest.get("previous")
    if head is None:
        return previous is None
    return isinstance(previous, dict) and (previous.get("key"), previous.get("sha256")) == head


def _start_month(head_key: str, agent_id: str) -> tuple[int, int]:
    """The month of the head digest's partition, else the month the agent id (a UUIDv7) was made."""
    match = re.search(r"/year=(\d{4})/month=(\d{2})/", head_key)
    if match is not None:
        return int(match[1]), int(match[2])
    created = dt.datetime.fromtimestamp(int(agent_id[:12], 16) / 1000, dt.UTC)
    return created.year, created.month


def _months_since(start: tuple[int, int]) -> list[tuple[int, int]]:
    now = dt.datetime.now(dt.UTC)
    months, (year, month) = [], start
    while (year, month) <= (now.year, now.month):
        months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

