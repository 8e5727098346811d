"""Drop-in structlog configuration with the audit processor; call `configure_logging()` once at start-up.

    configure_logging()
    log = structlog.get_logger()
    with auditlock.actor(f"user:{user.id}", ip=request_ip):
        log.info("order.updated", target_type="Order", target_id=order.id, status="paid")
    log.info("cache.miss", key="k")               # not an audit event: rendered as usual

`auditlock.AuditProcessor()` reads auditlock.toml from `$AUDITLOCK_CONFIG` (else ./auditlock.toml). It sits
after the processors that add metadata (`[events] keep_in_app_log = true` keeps level and timestamp on the
app-log view) and before the renderer. An audit event leaves the log stream once it is in the spool, unless
keep_in_app_log is set; then only its allowlisted, hmac'd view continues.
"""

from __future__ import annotations

import logging
import sys

import structlog

import auditlock


def configure_logging(level: int = logging.INFO) -> None:
    """Configure structlog: context, level, timestamp, the audit processor, then JSON lines on stdout."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            auditlock.AuditProcessor(),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
