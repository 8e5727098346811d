"""Checks of one archive object: its bytes against the digests, its JSONL, its Object Lock and its tags."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from auditlock.archive import content, layout
from auditlock.config.model import RetentionClass
from auditlock.verify.digests import Listing
from auditlock.verify.findings import (
    MODIFIED_OBJECT,
    SWAPPED_OBJECT,
    UNDER_RETAINED_OBJECT,
    UNLISTED_OBJECT,
    UNLOCKED_OBJECT,
    UNTAGGED_OBJECT,
    Report,
)
from auditlock.verify.source import ObjectHead

# S3 keeps retain-until at a coarser precision than the agent's microseconds (seconds on some servers).
RETAIN_UNTIL_SLACK = dt.timedelta(seconds=1)
_CLASS_IN_NAME = re.compile(r"/[0-9TZ]+-(.+)-[0-9a-f]{32}" + re.escape(layout.OBJECT_SUFFIX) + r"\Z")


def check_bytes(key: str, data: bytes, listings: list[Listing], listed: Mapping[str, str], report: Report) -> None:
    """The stored bytes hash to what the digests list for this key (else: modified, or another object's bytes)."""
    actual = hashlib.sha256(data).hexdigest()
    if not listings:
        report.add(UNLISTED_OBJECT, key, "no digest lists this object (its digest is missing, or it was added)")
        return
    if any(listing.sha256 == actual for listing in listings):
        return
    other = listed.get(actual)
    if other is not None and other != key:
        report.add(SWAPPED_OBJECT, key, f"holds the bytes of {other} (sha256 {actual[:16]}…), not its own")
        return
    report.add(MODIFIED_OBJECT, key, f"its bytes hash to {actual[:16]}…; {listings[0].digest} lists "
                                     f"{listings[0].sha256[:16]}…")


def inflate(data: bytes, limit: int) -> tuple[bytes | None, str | None]:
    """The content of a gzip JSONL object, at most `limit` bytes, and what is wrong with it (None: nothing).

    Too large (a gzip bomb, or an object no agent wrote) is `OBJECT_TOO_LARGE`'s detail, prefixed `too large:`."""
    try:
        inflated = content.gunzip_bounded(data, limit)
    except content.ObjectTooLarge as exc:
        return None, f"too large: {exc}"
    except (OSError, EOFError, zlib.error) as exc:
        return None, f"not gzip: {exc}"
    if inflated and not inflated.endswith(b"\n"):
        return inflated, "the last line has no newline (the object was cut short)"
    return inflated, None


def jsonl_lines(inflated: bytes) -> Iterator[bytes]:
    """The lines (without newlines) of an object's content, one at a time."""
    return content.split_lines(inflated)


def lines_readers_skip(inflated: bytes, already: list[int]) -> str | None:
    """The lines query and the view skip (`content.unreadable_line`) that are not in `already` (lines verify
    reported as not events), as a finding's detail; None if there are none."""
    shown: list[str] = []
    more = 0
    for number, line in enumerate(content.split_lines(inflated), 1):
        problem = content.unreadable_line(line)
        if problem is None or number in already:
            continue
        if len(shown) < 10:
            shown.append(f"{number} ({problem})")
        else:
            more += 1
    if not shown:
        return None
    return (f"lines {', '.join(shown)}{f' and {more} more' if more else ''} are skipped by query and the view "
            "(the writer refuses such lines: they were not written through auditlock)")


def class_of(key: str, listings: list[Listing]) -> str | None:
    """An object's retention class: as its digest lists it, else as its name says."""
    if listings:
        return listings[0].retention
    match = _CLASS_IN_NAME.search(key)
    return match[1] if match else None


def check_lock(key: str, head: ObjectHead, retention: str | None, last_occurred_at: str, *,
               classes: Mapping[str, RetentionClass] | None, report: Report) -> None:
    """Locked (a mode), long enough (class days after the latest event, the class's mode), and tagged."""
    if head.lock_mode is None:
        report.add(UNLOCKED_OBJECT, key, "the current version has no Object Lock retention: it can be deleted "
                                         "or overwritten")
    if retention is None or classes is None or retention not in classes or not last_occurred_at:
        if head.lock_mode is not None:
            report.notes.append(f"{key}: retention class {retention!r} unknown here; retain-until not checked")
    elif head.lock_mode is not None:
        _check_retention(key, head, retention, classes[retention], last_occurred_at=last_occurred_at, report=report)
    _check_tags(key, head, retention, report)


def _check_retention(key: str, head: ObjectHead, retention: str, wanted: RetentionClass, *, last_occurred_at: str,
                     report: Report) -> None:
    needed = layout.retain_until(last_occurred_at, wanted.days)
    if head.retain_until is None or head.retain_until < needed - RETAIN_UNTIL_SLACK:
        found = head.retain_until.isoformat() if head.retain_until else "none"
        report.add(UNDER_RETAINED_OBJECT, key, f"retain-until {found} is before {needed.isoformat()} (last event "
                                               f"{last_occurred_at} + {wanted.days} days of class {retention!r})")
    if wanted.mode == "COMPLIANCE" and head.lock_mode != "COMPLIANCE":
        report.add(UNDER_RETAINED_OBJECT, key, f"lock mode {head.lock_mode}, class {retention!r} requires "
                                               "COMPLIANCE (GOVERNANCE can be bypassed)")


def _check_tags(key: str, head: ObjectHead, retention: str | None, report: Report) -> None:
    wanted = {layout.TAG_SCHEMA: layout.SCHEMA_TAG_VALUE}
    if retention is not None:
        wanted[layout.TAG_RETENTION] = retention
    wrong = {k: head.tags.get(k) for k, v in wanted.items() if head.tags.get(k) != v}
    if wrong:
        shown = ", ".join(f"{k}={v!r} (wanted {wanted[k]!r})" for k, v in sorted(wrong.items()))
        report.add(UNTAGGED_OBJECT, key, f"tags {shown}: the lifecycle rules filter on them")


def digest_lock_basis(body: dict[str, Any], classes: Mapping[str, RetentionClass] | None) -> tuple[str | None, str]:
    """The class and last event a digest must be locked for: its longest-locked listed object's (as the agent)."""
    best: tuple[dt.datetime, str, str] | None = None
    for entry in body.get("objects", []):
        try:
            retention, last = str(entry["retention"]), str(entry["last_occurred_at"])
            until = layout.retain_until(last, classes[retention].days) if classes and retention in classes else None
        except (KeyError, TypeError, ValueError):
            continue
        if until is not None and (best is None or until > best[0]):
            best = (until, retention, last)
    return (best[1], best[2]) if best else (None, "")
