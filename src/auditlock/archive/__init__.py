"""The archive's on-S3 layout, digest format and time ranges over its partitions, shared by the agent (writer)
and query/verify (readers). No boto3 here."""
