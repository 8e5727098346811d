"""The spool: durable local segment files shared by the in-process writer and the agent."""

from auditlock.spool.format import SCHEMA, SegmentName, parse_segment_name
from auditlock.spool.writer import SpoolWriter

__all__ = ["SCHEMA", "SegmentName", "SpoolWriter", "parse_segment_name"]
