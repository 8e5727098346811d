"""The bucket: the on-S3 configuration of the archive bucket, derived from `auditlock.toml`.

This room owns the *bucket-level* format, the way `archive.layout` owns the object-level one:

- **Prefix id** (`lifecycle.prefix_id`): several services may share one bucket, each under its own `[sink]
  prefix`, so every rule ID and deny-delete Sid carries the prefix's id — its letters and digits (at most 24;
  `bucket` for no prefix) and 8 hex digits of SHA-256(`<prefix>/`), e.g. `auditlock2beb854a`: alphanumeric (a
  Sid must be), stable, short, and distinct for `a/b` and `ab`.
- **Lifecycle rules** (`lifecycle.py`): one rule per retention class, ID `auditlock-<prefix id>-retention-<class>`
  (cut with a hash at S3's 255 characters), filtered by prefix `<prefix>/` AND tag `auditlock-retention=<class>`
  — events objects and digests alike, since the agent tags a digest with the class of the longest-locked object
  it covers and locks it as long. A class rule transitions to `COLD_STORAGE_CLASS` after `hot_days` and expires
  the current version after `days` (counted from the object's creation, which is never before its last event,
  so never before its retain-until date). One housekeeping rule (`auditlock-<prefix id>-housekeeping`, prefix
  only) removes noncurrent versions once their lock allows it, expired delete markers and incomplete multipart
  uploads.
- **Object Lock** (`lifecycle.py`): enabled, default retention = the default class's mode and days — the
  safety net for an object PUT without lock headers (the agent always sends them).
- **Protection** (`protection.py`): public access block, default encryption (SSE-KMS with `[sink]
  kms_key_id`, else SSE-S3), a bucket policy denying plain-HTTP requests (`AuditlockDenyInsecureTransport`,
  bucket-wide) and deletion under the prefix (`AuditlockDenyObjectDeletion<prefix id>`).
- **Ownership** (`ownership.py`): whose each rule and statement is — by ID, and for the legacy un-prefixed IDs
  an older auditlock wrote (`auditlock-retention-<class>`, `auditlock-housekeeping`,
  `AuditlockDenyObjectDeletion`) by the prefix their filter or Resource names.

Invariants
- Everything here is derived from a `Config`; nothing in this room but `provision.py` talks to S3 (and it
  imports boto3 lazily). `deploy/cloudformation/auditlock-bucket.yaml` renders the same rules; a test keeps
  them equal for `examples/auditlock.toml`.
- Provisioning never weakens: it refuses (`ProvisionError`) to shorten or soften a lock, to shorten a class's
  expiry, to keep a foreign rule that would expire our objects early, or to use a bucket without Object
  Lock; it never turns a public-access flag off and never removes a protecting policy statement. It touches
  only its own prefix's rules and statements: another prefix's are kept as they are, and it refuses to replace
  one (a rule or statement with our ID over another prefix) or to expire another prefix's objects sooner than
  that prefix's own rule does. Our legacy rules are replaced only by per-prefix ones at least as long, our
  legacy statement only by one at least as strong. Checks run before the first write, so a refusal leaves the
  bucket as it was.
"""
