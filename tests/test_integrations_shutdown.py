"""A clean stop is a clean end: real uvicorn and gunicorn servers and plain processes, stopped with SIGTERM, leave
every writer's last record `auditlock.writer_closed` and no open segment."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

import auditlock
from auditlock.config import Config
from auditlock.integrations import asgi
from auditlock.integrations.emit import emit_event
from auditlock.spool import shutdown
from auditlock.spool.format import OPEN_SUFFIX
from tests.support.s3servers import free_port
from tests.support.spool_child import REPO_ROOT
from tests.support.spool_files import spool_events
from tests.support.waiting import wait_for

CONFIG = """\
service = "shop"

[spool]
dir = "{spool}"
durability = "sync"

[events]
include = ["order.*"]

[targets.Order]
fields = ["status"]

[retention]
default = "standard"

[retention.classes.standard]
days = 400
mode = "GOVERNANCE"
"""


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a server process: a config file over `tmp_path/spool`."""
    config_file = tmp_path / "auditlock.toml"
    config_file.write_text(CONFIG.format(spool=tmp_path / "spool"))
    return {**os.environ, "AUDITLOCK_CONFIG": str(config_file), "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """The spool directory of `server_env`."""
    return tmp_path / "spool"


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a server or application process in the repository root."""
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)



def answers(port: int) -> bool:
    """Whether the server on `port` answers `GET /`."""
    try:
        request(port, "GET", "/")
    except OSError:
        return False
    return True


def request(port: int, method: str, path: str) -> int:
    """One request; its status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def serve_and_stop(process: subprocess.Popen[bytes], port: int, orders: int = 3) -> int:
    """Wait for the server, send `orders` audited requests, SIGTERM it, wait for it to exit; its exit status."""
    wait_for(lambda: process.poll() is not None or answers(port), timeout=60, what="the server answering")
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    for n in range(orders):
        assert request(port, "POST", f"/orders/{n}") == 200
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def assert_clean_end(spool: Path, orders: int) -> None:
    """No open segment; every writer's last event is its clean-end record; `auditlock verify --spool` passes."""
    assert not [p.name for p in spool.iterdir() if p.name.endswith(OPEN_SUFFIX)]
    events = spool_events(spool)
    assert sorted(e["target_id"] for e in events if e["event_type"] == "order.updated") == \
        sorted(str(n) for n in range(orders))
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["writer"] not in last or event["seq"] > last[event["writer"]]["seq"]:
            last[event["writer"]] = event
    assert {event["event_type"] for event in last.values()} == {"auditlock.writer_closed"}
    verify = subprocess.run([str(Path(sys.executable).with_name("auditlock")), "verify", "--spool", str(spool)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


class TestServersStoppedBySigterm:
    def test_uvicorn(self, server_env: dict[str, str], spool: Path, processes: list[Any]) -> None:
        """uvicorn re-raises SIGTERM after its shutdown; the middleware closed the writer on lifespan shutdown."""
        port = free_port()
        processes.append(server := start([sys.executable, "-m", "uvicorn", "tests.support.web_app:asgi_app",
                                          "--port", str(port), "--log-level", "warning"], server_env))
        assert serve_and_stop(server, port) == -signal.SIGTERM  # killed by the re-raised signal: no atexit
        assert_clean_end(spool, 3)

    def test_uvicorn_run_without_middleware(self, server_env: dict[str, str], spool: Path,
                                            processes: list[Any]) -> None:
        """`uvicorn.run()` with lifespan off and no middleware: the SIGTERM hook it restores closes the writer."""
        port = free_port()
        env = {**server_env, "WEB_APP_MIDDLEWARE": "0"}
        processes.append(server := start([sys.executable, "-m", "tests.support.web_app", "--uvicorn", str(port)],
                                         env))
        assert serve_and_stop(server, port) == -signal.SIGTERM
        assert_clean_end(spool, 3)

    def test_gunicorn_uvicorn_workers(self, server_env: dict[str, str], spool: Path,
                                      processes: list[Any]) -> None:
        """gunicorn with two uvicorn workers, stopped with SIGTERM: each worker's writer ends cleanly."""
        port = free_port()
        processes.append(server := start([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                          "-k", "uvicorn.workers.UvicornWorker", "tests.support.web_app:asgi_app"],
                                         server_env))
        assert serve_and_stop(server, port, orders=6) == 0
        assert_clean_end(spool, 6)

    def test_gunicorn_sync_workers(self, server_env: dict[str, str], spool: Path, processes: list[Any]) -> None:
        """gunicorn with two sync workers serving a WSGI app, stopped with SIGTERM: every writer ends cleanly."""
        port = free_port()
        processes.append(server := start([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                          "tests.support.web_app:wsgi_app"], server_env))
        assert serve_and_stop(server, port, orders=6) == 0
        assert_clean_end(spool, 6)


class TestPlainProcessStoppedBySigterm:
    def start_app(self, env: dict[str, str], *options: str) -> subprocess.Popen[bytes]:
        """The plain application process, once it has written its event."""
        process = start([sys.executable, "-m", "tests.support.web_app", *options], env)
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        return process

    def test_default_disposition(self, server_env: dict[str, str], spool: Path, processes: list[Any]) -> None:
        """A process using the handler, SIGTERM'd: writer closed, and it still dies by SIGTERM."""
        processes.append(app := self.start_app(server_env))
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == -signal.SIGTERM
        events = spool_events(spool)
        assert [e["event_type"] for e in events] == ["order.updated", "auditlock.writer_closed"]
        assert not list(spool.glob(f"*{OPEN_SUFFIX}"))

    def test_applications_own_handler_is_kept(self, server_env: dict[str, str], spool: Path,
                                              processes: list[Any]) -> None:
        """An application's own SIGTERM handler is not replaced: it runs (exit 3) and atexit closes the writer."""
        processes.append(app := self.start_app(server_env, "--own-sigterm"))
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 3
        assert [e["event_type"] for e in spool_events(spool)] == ["order.updated", "auditlock.writer_closed"]


INTERRUPTED_INSIDE_THE_WRITER = """
import logging, sys
import auditlock
from auditlock.spool import shutdown
shutdown.SIGNAL_CLOSE_TIMEOUT_S = 0.5
log = logging.getLogger("audit")
log.addHandler(handler := auditlock.AuditHandler())
log.setLevel(logging.INFO)
log.info("order.updated", extra={"actor_id": "user#1", "target_type": "Order", "target_id": "1"})
handler.core.writer._lock.acquire()  # as if SIGTERM arrived while the main thread was appending
print("ready", flush=True)
sys.stdin.read()
"""


class TestSigtermHookNeverDeadlocks:
    def test_main_thread_holding_the_writer_lock(self, server_env: dict[str, str], spool: Path,
                                                 processes: list[Any]) -> None:
        """SIGTERM while the main thread holds the writer's lock: the hook gives up waiting and the process dies
        by SIGTERM, its segment left open and whole for the agent to recover."""
        processes.append(app := start([sys.executable, "-c", INTERRUPTED_INSIDE_THE_WRITER], server_env))
        assert app.stdout is not None
        assert app.stdout.readline() == b"ready\n"
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == -signal.SIGTERM
        [segment] = spool.glob(f"*{OPEN_SUFFIX}")
        assert [e["event_type"] for e in spool_events(spool)] == ["order.updated"]
        assert segment.read_bytes().endswith(b"\n")


class TestLifespanShutdown:
    def test_shutdown_closes_every_writer(self, audit_log: logging.Logger, config: Config) -> None:
        """Lifespan shutdown seen by the middleware writes the clean end, after the app's own shutdown events."""
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            emit_event(audit_log, "order.updated", target_type="Order", target_id="shutdown", actor_id="svc:shop")

        app = Starlette(lifespan=lifespan, middleware=[Middleware(asgi.AuditMiddleware)])
        with TestClient(app):
            pass
        assert [e["event_type"] for e in spool_events(config.spool.dir)] == ["order.updated",
                                                                           "auditlock.writer_closed"]

    def test_hook_is_not_installed_over_a_handler(self) -> None:
        """install_sigterm_hook leaves an existing SIGTERM handler alone."""
        previous = signal.signal(signal.SIGTERM, _ignore)
        try:
            assert shutdown.install_sigterm_hook() is False
            assert signal.getsignal(signal.SIGTERM) is _ignore
        finally:
            signal.signal(signal.SIGTERM, previous)

    def test_close_all_writers_twice(self, audit_log: logging.Logger, config: Config) -> None:
        """Closing every writer twice writes one clean end; an event afterwards reopens the chain."""
        audit_log.info("order.updated", extra={"actor_id": "user#1", "target_type": "Order", "target_id": "1"})
        shutdown.close_all_writers()
        shutdown.close_all_writers()
        with auditlock.actor("user#1"):
            audit_log.info("order.updated", extra={"target_type": "Order", "target_id": "2"})
        assert [e["event_type"] for e in spool_events(config.spool.dir)] == [
            "order.updated", "auditlock.writer_closed", "order.updated"]


def _ignore(signum: int, frame: object) -> None:
    """A stand-in application handler."""
