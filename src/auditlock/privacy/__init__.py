"""Erasable personal data on write-once storage: crypto-shredding (docs/privacy.md).

`crypto` owns the encrypted value format, `keystore` the data keys (SQL or files, cached in-process),
`erasable` seals values for the handler and reveals them for readers, `erase` and `export` serve data-subject
requests. Nothing here is imported unless a target has erasable fields (or a privacy command runs): importing
`auditlock.handler` stays structlog + orjson.
"""
