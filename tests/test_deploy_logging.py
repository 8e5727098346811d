"""The logging drop-ins in deploy/logging/, each loaded as a user would and routing an event into a real spool."""

from __future__ import annotations

import logging
import logging.config
import os
import runpy
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import auditlock
from tests.support.s3servers import free_port
from tests.support.spool_files import segment_paths, spool_events
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "deploy" / "logging"

TOML = """
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
days = 1
mode = "GOVERNANCE"
"""

WSGI_APP = """
import logging

import auditlock

log = logging.getLogger("audit")


def app(environ, start_response):
    with auditlock.actor("user:7", ip=environ.get("REMOTE_ADDR")):
        log.info("order.updated", extra={"target_type": "Order", "target_id": 42,
                                         "before": {"status": "new"}, "after": {"status": "paid"}})
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""

DJANGO_SCRIPT = """
import logging, runpy, sys, types

import django
from django.conf import settings

ns = runpy.run_path(sys.argv[1])
settings.configure(LOGGING=ns["LOGGING"], LOGGING_CONFIG="logging.config.dictConfig", INSTALLED_APPS=[],
                   ALLOWED_HOSTS=["testserver"])
django.setup()

from django.http import HttpResponse
from django.test import RequestFactory


def view(request):
    logging.getLogger("audit").info("order.updated", extra={"target_type": "Order", "target_id": 5,
                                                            "after": {"status": "shipped"}})
    return HttpResponse("ok")


request = RequestFactory().post("/orders/5/ship", REMOTE_ADDR="10.1.2.3", HTTP_X_REQUEST_ID="req-1")
request.user = types.SimpleNamespace(pk=82, is_authenticated=True)
response = ns["AuditActorMiddleware"](view)(request)
print(response.status_code)
"""


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file under tmp_path named by $AUDITLOCK_CONFIG, as in a deployment; returns its spool directory."""
    spool = tmp_path / "spool"
    config = tmp_path / "auditlock.toml"
    config.write_text(TOML.format(spool=spool))
    monkeypatch.setenv("AUDITLOCK_CONFIG", str(config))
    return spool


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back after a test that ran dictConfig; close the audit logger's handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    audit = logging.getLogger("audit")
    for handler in list(audit.handlers):
        handler.close()
        audit.removeHandler(handler)
    root.handlers[:] = handlers
    root.setLevel(level)


def the_event(spool: Path) -> dict[str, Any]:
    """The one audit event in the spool (writers' clean-end records aside)."""
    [event] = [e for e in spool_events(spool) if e["event_type"] != "auditlock.writer_closed"]
    return event


def open_segments(spool: Path) -> list[str]:
    """Names of segments still open (a writer that exited cleanly leaves none)."""
    return [p.name for p in segment_paths(spool) if ".open." in p.name]


class TestDictConfig:
    @pytest.mark.usefixtures("restore_logging")
    def test_audit_logger_writes_the_spool(self, spool: Path) -> None:
        """dictconfig.LOGGING routes an event on the audit logger into the spool named by $AUDITLOCK_CONFIG."""
        logging.config.dictConfig(runpy.run_path(str(EXAMPLES / "dictconfig.py"))["LOGGING"])
        with auditlock.actor("user:1"):
            logging.getLogger("audit").info("order.updated", extra={"target_type": "Order", "target_id": 3,
                                                                    "after": {"status": "paid"}})
        event = the_event(spool)
        assert (event["event_type"], event["actor_id"]) == ("order.updated", "user:1")
        assert (event["target_type"], event["target_id"]) == ("Order", "3")


class TestStructlogConfig:
    def test_audit_events_spooled_others_rendered(self, spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """configure_logging() spools audit events and renders the rest as JSON lines."""
        runpy.run_path(str(EXAMPLES / "structlog_config.py"))["configure_logging"]()
        try:
            log = structlog.get_logger()
            with auditlock.actor("svc:billing"):
                log.info("order.updated", target_type="Order", target_id=9, status="refunded")
            log.info("cache.miss", key="k")
        finally:
            for processor in structlog.get_config()["processors"]:
                if isinstance(processor, auditlock.AuditProcessor):
                    processor.close()
            structlog.reset_defaults()
        event = the_event(spool)
        assert (event["event_type"], event["actor_id"], event["actor_type"]) == ("order.updated", "svc:billing",
                                                                                "service")
        assert (event["target_type"], event["target_id"], event["payload"]) == ("Order", "9", {"status": "refunded"})
        [line] = capsys.readouterr().out.splitlines()
        assert orjson.loads(line)["event"] == "cache.miss"


class TestDjangoSettings:
    def test_settings_logging_and_middleware(self, spool: Path, tmp_path: Path) -> None:
        """Django configured with LOGGING spools a view's event with the middleware's actor, ip and request id."""
        result = subprocess.run([sys.executable, "-c", DJANGO_SCRIPT, str(EXAMPLES / "django_settings.py")],
                                capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "200"
        event = the_event(spool)
        assert (event["event_type"], event["actor_id"], event["actor_ip"]) == ("order.updated", "user:82", "10.1.2.3")
        assert (event["target_type"], event["target_id"]) == ("Order", "5")
        assert event["payload"]["request_id"] == "req-1"
        assert open_segments(spool) == []


class TestGunicornConf:
    def test_worker_spools_and_seals_on_sigterm(self, spool: Path, tmp_path: Path) -> None:
        """A gunicorn worker configured by gunicorn.conf.py spools a request's event and seals it on SIGTERM."""
        (tmp_path / "wsgi_audit_app.py").write_text(WSGI_APP)
        port = free_port()
        log_path = tmp_path / "gunicorn.log"
        with log_path.open("wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(EXAMPLES / "gunicorn.conf.py"),
                 "--bind", f"127.0.0.1:{port}", "--workers", "1", "--chdir", str(tmp_path), "wsgi_audit_app:app"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ))
            try:
                body = _get_when_up(f"http://127.0.0.1:{port}/orders/42", server, log_path)
            finally:
                server.send_signal(signal.SIGTERM)
                exit_code = server.wait(timeout=60)
        assert body == b"ok\n"
        assert exit_code == 0, log_path.read_text()
        event = the_event(spool)
        assert (event["event_type"], event["actor_id"], event["actor_ip"]) == ("order.updated", "user:7", "127.0.0.1")
        assert (event["target_type"], event["target_id"]) == ("Order", "42")
        assert event["payload"] == {"changes": {"status": ["new", "paid"]}}
        assert open_segments(spool) == [], log_path.read_text()


def _get_when_up(url: str, server: subprocess.Popen[bytes], log_path: Path) -> bytes:
    """GET url once the server answers; fail with the server's log if it exits first."""
    answer: list[bytes] = []

    def answered() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer.append(response.read())
        except OSError:
            return False
        return True

    wait_for(answered, timeout=60, what="gunicorn answering")
    return answer[0]
