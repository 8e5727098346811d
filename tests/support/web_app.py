"""The applications the shutdown tests serve in real servers (uvicorn, gunicorn) and run as plain processes.

Configured by the environment: `AUDITLOCK_CONFIG` (the config file); `WEB_APP_MIDDLEWARE=0` leaves
`AuditMiddleware` out of the ASGI app. Every `POST /orders/<id>` emits one `order.updated` by `user#1`;
`GET /` answers 200 (the tests wait on it). `python -m tests.support.web_app` is a plain process: it emits one
event, prints `ready`, and waits for EOF on stdin (or a signal); `--own-sigterm` first installs the application's
own SIGTERM handler, which exits with status 3; `--uvicorn PORT` serves the ASGI app with `uvicorn.run()` (the
handler exists before the server starts; lifespan off, so only the SIGTERM hook can close the writer).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

import auditlock


def _own_sigterm(signum: int, frame: object) -> None:
    sys.exit(3)


if __name__ == "__main__" and "--own-sigterm" in sys.argv:
    signal.signal(signal.SIGTERM, _own_sigterm)  # before the audit handler exists, as an app would

audit_log = logging.getLogger("audit.web_app")
audit_log.propagate = False
audit_log.setLevel(logging.INFO)
audit_log.addHandler(auditlock.AuditHandler())


def order_updated(order_id: str) -> None:
    """The one audit event the applications emit."""
    audit_log.info("order.updated", extra={"actor_id": "user#1", "target_type": "Order", "target_id": order_id,
                                           "status": "paid"})


def _asgi_app() -> Any:
    from fastapi import FastAPI

    from auditlock.integrations.asgi import AuditMiddleware

    app = FastAPI()
    if os.environ.get("WEB_APP_MIDDLEWARE", "1") != "0":
        app.add_middleware(AuditMiddleware)

    @app.get("/")
    async def ready() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/orders/{order_id}")
    async def update(order_id: str) -> dict[str, str]:
        order_updated(order_id)
        return {"ok": "yes"}

    return app


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
    """The WSGI form (gunicorn's sync workers)."""
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") == "POST" and path.startswith("/orders/"):
        order_updated(path.removeprefix("/orders/"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def __getattr__(name: str) -> Any:
    # The ASGI app is built on first use, so the plain process and the WSGI workers never import FastAPI.
    if name == "asgi_app":
        app = _asgi_app()
        globals()["asgi_app"] = app
        return app
    raise AttributeError(name)


def _serve_with_uvicorn(port: int) -> None:
    import uvicorn

    uvicorn.run(_asgi_app(), host="127.0.0.1", port=port, lifespan="off", log_level="warning")


if __name__ == "__main__":
    if "--uvicorn" in sys.argv:
        _serve_with_uvicorn(int(sys.argv[sys.argv.index("--uvicorn") + 1]))
    else:
        order_updated("plain")
        print("ready", flush=True)
        sys.stdin.read()
