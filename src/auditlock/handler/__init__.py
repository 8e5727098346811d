"""The in-process side: turn structlog / logging events into durable audit records."""
