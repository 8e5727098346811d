"""`auditlock demo`: the whole pipeline on an embedded S3 server, for someone who has never seen auditlock.

`server` runs moto's S3 in this process on loopback, `workspace` writes the config and keys and keeps a copy of
the archive, `service` is the sample shop that emits audit events, `show` prints what landed in S3 and what the
query engine, verify and Object Lock say about it, and `run` strings the steps together.
"""
