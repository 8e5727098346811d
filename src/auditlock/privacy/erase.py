"""`auditlock erase`: destroy a data subject's keys, recorded first (fail closed).

The order: check the subject and the store (a read), record `privacy.subject_erased` and seal the writer's
segment (the record is durable), then destroy the keys. If recording fails nothing is destroyed; if destroying
fails after the record, the error says so and running the command again finishes it (erasing is idempotent:
a subject without keys is erased). The archive is not touched: its values stay sealed under a key that no longer
exists, so `verify` stays clean and every reader shows them as `[erased]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from auditlock.config.model import Config
from auditlock.errors import AuditlockError, EventError, KeyStoreError, SpoolError
from auditlock.handler import event_types
from auditlock.handler.core import AuditCore
from auditlock.privacy.crypto import SUBJECT
from auditlock.privacy.keystore import KeyStore, open_store


@dataclass(frozen=True)
class ErasureReport:
    """What `erase_subject` did: the key ids it destroyed (empty: the subject had none) and the event it wrote."""

    subject: str
    key_ids: list[str]
    event_id: str | None


class ErasureIncomplete(AuditlockError):
    """The erasure was recorded but its keys could not all be destroyed; running it again finishes it."""


def check_subject(subject: str) -> str:
    """The subject id if it is `<Type>:<id>`; an `EventError` saying what one looks like otherwise."""
    if not SUBJECT.match(subject):
        raise EventError(f"subject {subject[:80]!r} is not <Type>:<id> (e.g. Customer:42): a type of letters, "
                         "digits and '_', a colon, and the subject's printable id of at most 256 characters")
    return subject


def erase_subject(config: Config, subject: str, *, actor: str, reason: str, request_id: str | None = None,
                  store: KeyStore | None = None) -> ErasureReport:
    """Record the erasure of `subject`, then destroy its keys (see the module docstring for the order)."""
    check_subject(subject)
    if not reason.strip():
        raise EventError("--reason is empty: say why the subject is erased (e.g. the request it answers)")
    store = store or open_store(config.erasure)
    try:
        keys = 0 if store.subject_key(subject) is None else 1
        payload = {"subject": subject, "reason": reason, "request_id": request_id, "keys": keys}
        event_id = record(config, event_types.SUBJECT_ERASED, actor, payload)
        try:
            destroyed = store.erase(subject)
        except KeyStoreError as exc:
            raise ErasureIncomplete(f"the erasure of {subject} was recorded (event {event_id}) but its keys were "
                                    f"not destroyed: {exc}; run the same `auditlock erase` again once the store "
                                    "is reachable") from exc
    finally:
        store.close()
    return ErasureReport(subject, destroyed, event_id)


def record(config: Config, event_type: str, actor: str, payload: Mapping[str, object]) -> str | None:
    """Write one event of a privacy command and seal the segment; a `SpoolError` if it could not be written."""
    core = AuditCore(config)
    try:
        written = core.emit(event_type, {"actor_id": actor, "payload": {k: v for k, v in payload.items()
                                                                         if v is not None}})
        if written is None:  # on_error = "drop": for a privacy command, not recorded means not done
            raise SpoolError(f"{event_type} could not be written to the spool {config.spool.dir} (dropped: "
                             "[spool] on_error = \"drop\"); nothing was done — free the spool and run it again")
    finally:
        core.writer.close()
    event_id = written.get("event_id")
    return event_id if isinstance(event_id, str) else None
