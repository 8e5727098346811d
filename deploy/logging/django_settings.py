"""Drop-in for Django's settings.py: `LOGGING` with the audit handler, and a middleware that binds the actor.

Copy LOGGING into settings.py (Django passes it to `logging.config.dictConfig`) and add
"auditlock_middleware.AuditActorMiddleware" (this file's class, saved as a module of yours) to MIDDLEWARE after
AuthenticationMiddleware. Then, in a view:

    logging.getLogger("audit").info("order.updated", extra={"target_type": "Order", "target_id": order.pk,
                                                            "before": {"status": "new"}, "after": {"status": "paid"}})

`auditlock.AuditHandler` reads auditlock.toml from `$AUDITLOCK_CONFIG` (else ./auditlock.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import auditlock

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "audit": {"()": "auditlock.AuditHandler"},
    },
    "loggers": {
        "audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}


class AuditActorMiddleware:
    """Binds the signed-in user (or an anonymous request) as the actor of audit events in the request."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        """Run the view inside an actor block."""
        user = getattr(request, "user", None)
        actor_id = f"user:{user.pk}" if user is not None and user.is_authenticated else None
        # Behind a proxy, take the address your proxy vouches for instead of REMOTE_ADDR.
        with auditlock.actor(actor_id, ip=request.META.get("REMOTE_ADDR"),
                             request_id=request.headers.get("X-Request-ID")):
            return self.get_response(request)
