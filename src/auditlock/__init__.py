"""auditlock."""
