"""Drop-in for `logging.config.dictConfig`: audit events to the spool, the rest of the log to stderr.

    import logging.config
    logging.config.dictConfig(LOGGING)            # copy LOGGING into your code, or import this file

    log = logging.getLogger("audit")
    with auditlock.actor(f"user:{user.id}", ip=request_ip):
        log.info("order.updated", extra={"target_type": "Order", "target_id": order.id,
                                         "before": {"status": "new"}, "after": {"status": "paid"}})

`auditlock.AuditHandler` reads auditlock.toml from `$AUDITLOCK_CONFIG` (else ./auditlock.toml); give it
`"config": "/path/auditlock.toml"` to name the file instead. The record's message is the event type; the
fields come from `extra=`. Audit events go to a logger of their own ("audit", not propagated), so their
arguments never reach the ordinary log. A failure to spool raises from the logging call (fail closed).
"""

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "audit": {"()": "auditlock.AuditHandler"},
    },
    "loggers": {
        "audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}
