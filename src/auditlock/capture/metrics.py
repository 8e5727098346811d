"""Capture's metrics (Prometheus text format) and its HTTP endpoint: /metrics, /healthz, /readyz.

The same shape as the agent's endpoint (`agent.metrics`), kept apart so that capture never imports the agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class CaptureMetrics:
    """Every metric capture exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("auditlock_capture_events", "Row-change events made durable in the spool", registry=r)
        self.transactions = Counter("auditlock_capture_transactions", "Transactions captured", registry=r)
        self.errors = Counter("auditlock_capture_errors", "Failed capture passes by kind", ["kind"], registry=r)
        self.lag_bytes = Gauge("auditlock_capture_lag_bytes", "WAL bytes the slot holds that capture has not "
                               "confirmed (pg_current_wal_lsn - confirmed_flush_lsn)", registry=r)
        self.lag_seconds = Gauge("auditlock_capture_lag_seconds", "Seconds since capture last found the slot "
                                 "caught up (0 while it is)", registry=r)
        self.last_commit = Gauge("auditlock_capture_last_commit_timestamp_seconds", "Commit time of the last "
                                 "captured transaction", registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log; access logs are off."""


class HealthServer:
    """/metrics; /healthz (the loop is alive); /readyz (the database checks passed and the last pass succeeded —
    else 503 with the problem as the body)."""

    def __init__(self, metrics: CaptureMetrics, host: str, port: int, *, stale_after_s: float = 120.0) -> None:
        self.metrics = metrics
        self.problem: str | None = "starting"
        self.heartbeat = time.monotonic()
        self.stale_after_s = stale_after_s
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="auditlock-capture-http",
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
            problem = self.problem
            if problem is None:
                return _respond(start_response, "200 OK", b"ready\n")
            return _respond(start_response, "503 Service Unavailable", f"not ready: {problem}\n".encode())
        return _respond(start_response, "404 Not Found", b"not found\n")


def _respond(start_response: StartResponse, status: str, body: bytes,
             content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
