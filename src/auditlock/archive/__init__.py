"""The archive's on-S3 layout, shared by the agent (writer) and query/verify (readers). No boto3 here."""
