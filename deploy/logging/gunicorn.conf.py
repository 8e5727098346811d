"""gunicorn configuration with audit logging: `gunicorn -c gunicorn.conf.py myapp.wsgi:application`.

Application code logs audit events on the "audit" logger (see dictconfig.py). gunicorn applies
`logconfig_dict` in the master before it forks workers; no `post_fork` hook is needed: auditlock's spool writer
re-initialises in a forked child (each worker writes its own segment under its own writer id) and seals its
segment when the worker exits. `auditlock.AuditHandler` reads auditlock.toml from `$AUDITLOCK_CONFIG`.

gunicorn replaces its own logging defaults with whatever top-level keys this dict sets, so the gunicorn.error and
gunicorn.access loggers are spelled out here.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Within the Kubernetes grace period: app shutdown (this) + [agent] grace_period_s (25 s) + margin (deploy/k8s).
graceful_timeout = 20

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        "audit": {"()": "auditlock.AuditHandler"},
    },
    "loggers": {
        "audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}
