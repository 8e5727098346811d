"""`auditlock subject export`: every event of a data subject, decrypted, as JSONL — for an access request.

The subject's events are those whose target is the subject (`Customer:42` → target_type `Customer`, target_id
`42`), those holding values sealed under the subject's data key (an Order's events whose `subject =
"Customer:customer_id"`), and the privacy events naming it (`payload.subject`). The export is recorded
(`privacy.subject_exported`) and the segment sealed before a line is written: nothing is shown unrecorded.
Events after an erasure show the erased values as `[erased]`; the archive is read through the query cache, as
`auditlock query` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from auditlock.archive.timerange import ALL_TIME, TimeRange
from auditlock.config.model import Config
from auditlock.errors import ConfigError
from auditlock.handler import event_types
from auditlock.privacy.crypto import PREFIX, PREFIX_V2
from auditlock.privacy.erasable import revealer_for
from auditlock.privacy.erase import check_subject, record
from auditlock.query import output
from auditlock.query.filters import EventFilter
from auditlock.query.session import open_database

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def export_subject(config: Config, subject: str, out: IO[str], *, actor: str, cache_dir: Path,
                   request_id: str | None = None, reason: str | None = None, time_range: TimeRange = ALL_TIME,
                   include_spool: bool = False, err: IO[str] | None = None, client: S3Client | None = None) -> int:
    """Record the export, then write the subject's events (oldest first) to `out` as JSONL; the event count."""
    check_subject(subject)
    revealer = revealer_for(config)
    if revealer is None:
        raise ConfigError("auditlock subject export needs [erasure] (the key store that decrypts the subject's "
                          "values); see docs/privacy.md")
    try:
        key_id = revealer.subject_key_id(subject)
    finally:
        revealer.close()
    record(config, event_types.SUBJECT_EXPORTED, actor,
           {"subject": subject, "request_id": request_id, "reason": reason})
    where, params = subject_condition(subject, key_id, time_range)
    with open_database(config, time_range, cache_dir, err, include_spool=include_spool,
                       client=client) as (database, _report):
        return output.write_jsonl(database.events(where, params, oldest_first=True), out, events=True)


def subject_condition(subject: str, key_id: str | None, time_range: TimeRange) -> tuple[str, list[Any]]:
    """The WHERE clause of a subject's events (see the module docstring) within the range."""
    base, params = EventFilter(time_range=time_range).where()
    kind, _, ident = subject.partition(":")
    mine = ["(target_type = ? AND target_id = ?)", "json_extract_string(payload, '$.subject') = ?"]
    params += [kind, ident, subject]
    if key_id is not None:
        mine.append("strpos(CAST(payload AS VARCHAR), ?) > 0")
        params.append(f"{PREFIX}{key_id}:")
        mine.append("strpos(CAST(payload AS VARCHAR), ?) > 0")
        params.append(f"{PREFIX_V2}{key_id}:")
    return f"{base} AND ({' OR '.join(mine)})", params
