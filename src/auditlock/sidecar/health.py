"""/metrics, /healthz and /readyz of a sidecar, on a small WSGI server in a background thread.

- `/metrics`: the Prometheus text of whatever `metrics.render()` returns.
- `/healthz`: 200 while the main loop calls `beat()` at least every `stale_after_s`, else 503 — a liveness probe
  restarts a stalled loop, never a busy one (every pass and every delivery attempt beats).
- `/readyz`: 503 with `problem` as the body while there is one (something only an operator can fix, or the start
  not finished), else 200 when `ready`, else 503.
Access logs are off: probes every few seconds would flood the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST

StartResponse = Any


class Renders(Protocol):
    """Anything with Prometheus text to serve."""

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log; access logs are off."""


class HealthServer:
    """Serves a sidecar's /metrics, /healthz and /readyz (see the module docstring)."""

    def __init__(self, metrics: Renders, host: str, port: int, *, name: str, ready: bool = False,
                 problem: str | None = None, stale_after_s: float = 120.0) -> None:
        self.metrics = metrics
        self.ready = ready
        self.problem = problem
        self.heartbeat = time.monotonic()
        self.stale_after_s = stale_after_s
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"auditlock-{name}-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_port)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        """The main loop calls this every pass."""
        self.heartbeat = time.monotonic()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return _respond(start_response, "200 OK", self.metrics.render(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            alive = time.monotonic() - self.heartbeat < self.stale_after_s
            return _respond(start_response, "200 OK" if alive else "503 Service Unavailable",
                            b"ok\n" if alive else b"main loop stalled\n")
        if path == "/readyz":
            return self._readyz(start_response)
        return _respond(start_response, "404 Not Found", b"not found\n")

    def _readyz(self, start_response: StartResponse) -> list[bytes]:
        problem = self.problem
        if problem is not None:
            return _respond(start_response, "503 Service Unavailable", f"not ready: {problem}\n".encode())
        return _respond(start_response, "200 OK" if self.ready else "503 Service Unavailable",
                        b"ready\n" if self.ready else b"not ready\n")


def _respond(start_response: StartResponse, status: str, body: bytes,
             content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
