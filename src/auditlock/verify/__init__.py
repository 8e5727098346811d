"""`auditlock verify`: prove the archive (or the spool) is complete and unchanged, or name what is not.

Room map (imports archive/, spool/, config/ and archive.timerange; never agent/; boto3 and cryptography lazily):

- `findings` the finding kinds, the report, its text and JSON forms (design comment)
- `source`   the archive as an S3 bucket + prefix, or a downloaded copy in a directory
- `versions` overwritten and delete-marked keys: which version to check, and the findings about the others
- `digests`  load digests, walk each agent's chain, check signatures
- `objects`  one object: bytes against the digests, JSONL, Object Lock, retain-until, tags
- `events`   per-writer seq continuity and prev chains across objects and months; duplicate event ids
- `archive`  the archive run: digests, then objects, then writers
- `spool`    the local spool run (`--spool DIR`)
"""

from auditlock.verify.archive import ArchiveOptions, verify_archive
from auditlock.verify.findings import KINDS, Finding, Report
from auditlock.verify.source import DirectorySource, S3Source, SourceError, s3_source
from auditlock.verify.spool import verify_spool

__all__ = [
    "KINDS", "ArchiveOptions", "DirectorySource", "Finding", "Report", "S3Source", "SourceError", "s3_source",
    "verify_archive", "verify_spool",
]
