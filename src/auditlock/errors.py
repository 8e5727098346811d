"""The one small error hierarchy of auditlock.

Every message names what is wrong (the key, field or file), the bad value where there is one, and what to do.
"""

from __future__ import annotations


class AuditlockError(Exception):
    """Base class of every error auditlock raises on purpose."""


class ConfigError(AuditlockError):
    """The configuration is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str] | str, *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            super().__init__(f"{where}{self.problems[0]}")
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            super().__init__(f"{where}{len(self.problems)} configuration errors:\n{lines}")


class EventError(AuditlockError):
    """An audit event is malformed (missing actor, bad field value, too large); nothing was written."""


class SpoolError(AuditlockError):
    """An audit event could not be made durable in the spool (disk full, spool over max_bytes, I/O error)."""


class KeyStoreError(SpoolError):
    """The erasure key store could not give the data key an event's erasable values need (unreachable, unreadable,
    refused): the event is refused, as for every other failure to record (counted under `on_error = "drop"`)."""


class UploadError(AuditlockError):
    """The agent could not deliver an object to S3, or found a conflicting object already there."""


class ProvisionError(AuditlockError):
    """`auditlock provision` cannot or will not bring the bucket to the configuration: a bad bucket name, a bucket
    without Object Lock, or a change that would weaken retention (which it always refuses); nothing was changed."""
