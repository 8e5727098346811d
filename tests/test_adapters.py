"""The two adapters over one core: the structlog processor and the stdlib logging handler."""

from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import auditlock
from auditlock import EventError, SpoolError
from auditlock.config import Config
from auditlock.handler.record import AUDIT_ARGUMENTS
from tests.conftest import config_dict
from tests.support.spool_files import spool_events

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


@pytest.fixture
def app_log() -> Iterator[list[bytes]]:
    """Configure structlog to render the app log into a list (after any processors put before it)."""
    yield []
    structlog.reset_defaults()


def configure_structlog(processor: auditlock.AuditProcessor, out: list[bytes]) -> Any:
    """structlog with the audit processor first and a JSON renderer collecting lines into `out`."""

    def collect(_logger: Any, _name: str, event_dict: Any) -> Any:
        out.append(orjson.dumps(event_dict))
        raise structlog.DropEvent

    structlog.configure(processors=[processor, collect], cache_logger_on_first_use=False)
    return structlog.get_logger()


class TestStructlogProcessor:
    def test_audit_events_leave_the_app_log(self, config: Config, app_log: list[bytes],
                                            closing: Callable[[Any], Any]) -> None:
        """With keep_in_app_log = false an audit event is spooled and dropped from the log stream."""
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        with auditlock.actor("user#1"):
            log.info("order.updated", target_type="Order", target_id=1, status="paid")
        assert [e["payload"] for e in spool_events(config.spool.dir)] == [{"status": "paid"}]
        assert app_log == []

    def test_other_events_pass_untouched(self, config: Config, app_log: list[bytes],
                                         closing: Callable[[Any], Any]) -> None:
        """An event whose name does not match include passes through and is not spooled."""
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        log.info("cache.miss", key="k", password="pw")
        assert [orjson.loads(line) for line in app_log] == [{"key": "k", "password": "pw", "event": "cache.miss"}]
        assert not config.spool.dir.exists()

    def test_kept_events_carry_only_allowlisted_values(self, make_config: Callable[..., Config],
                                                       app_log: list[bytes], closing: Callable[[Any], Any]) -> None:
        """With keep_in_app_log = true the app log gets the allowlisted, hmac'd view only."""
        config = make_config(events={"keep_in_app_log": True})
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        with auditlock.actor("user#1"):
            log.info("order.updated", target_type="Order", target_id=1, status="paid", customer_email="a@b.c",
                     password="pw", level="info")
        [kept] = [orjson.loads(line) for line in app_log]
        assert kept["event"] == "order.updated"
        assert kept["level"] == "info"
        assert kept["payload"]["status"] == "paid"
        assert kept["payload"]["customer_email"].startswith("hmac-sha256:")
        assert "password" not in kept
        assert kept["event_id"] == spool_events(config.spool.dir)[0]["event_id"]

    def test_misspelt_audit_event_is_refused_not_logged(self, config: Config, app_log: list[bytes],
                                                         closing: Callable[[Any], Any]) -> None:
        """An event carrying audit arguments whose type matches no include pattern raises; its raw values go nowhere."""
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        with pytest.raises(EventError, match=r"event 'orders\.updated' carries audit arguments \(after, before, "
                                             r"target_type\) but matches no \[events\] include pattern") as refused, \
                auditlock.actor("user:1"):
            log.info("orders.updated", target_type="Order", before={"status": "new"}, after={"status": "paid"},
                     customer_email="leak@example.com")
        assert "add a pattern matching it to [events] include" in str(refused.value)
        assert app_log == []
        assert not config.spool.dir.exists()

    def test_refusal_message_is_bounded(self, config: Config, app_log: list[bytes],
                                        closing: Callable[[Any], Any]) -> None:
        """A huge unmatched event name is cut in the refusal's message."""
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        with pytest.raises(EventError) as refused:
            log.info("x" * 100_000, target_type="Order")
        assert len(str(refused.value)) < 800

    @pytest.mark.parametrize("argument", sorted(AUDIT_ARGUMENTS))
    def test_each_audit_argument_marks_an_audit_event(self, config: Config, app_log: list[bytes],
                                                      closing: Callable[[Any], Any], argument: str) -> None:
        """Any one of the audit arguments is enough for an unmatched event to be refused."""
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        with pytest.raises(EventError, match=f"carries audit arguments \\({argument}\\)"):
            log.info("cache.miss", **{argument: "x"})
        assert app_log == []

    def test_errors_reach_the_caller(self, config: Config, app_log: list[bytes],
                                     closing: Callable[[Any], Any]) -> None:
        """An EventError raises from the logging call itself."""
        log = configure_structlog(closing(auditlock.AuditProcessor(config)), app_log)
        with pytest.raises(EventError):
            log.info("order.updated")


@pytest.fixture
def audit_logger(tmp_path: Path, spool_dir: Path) -> Iterator[logging.Logger]:
    """A logger configured by dictConfig with AuditHandler from a TOML path."""
    path = tmp_path / "auditlock.toml"
    path.write_text(TOML.format(spool=spool_dir))
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"audit": {"()": "auditlock.AuditHandler", "config": str(path)}},
        "loggers": {"audit": {"handlers": ["audit"], "level": "INFO", "propagate": False}},
    })
    logger = logging.getLogger("audit")
    yield logger
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


class TestLoggingHandler:
    def test_dict_config_drop_in(self, audit_logger: logging.Logger, spool_dir: Path) -> None:
        """AuditHandler from dictConfig writes fields given with extra=."""
        with auditlock.actor("user#1"):
            audit_logger.info("order.updated", extra={"target_type": "Order", "target_id": 3,
                                                      "before": {"status": "new"}, "after": {"status": "paid"},
                                                      "card": "4111"})
        [event] = spool_events(spool_dir)
        assert event["event_type"] == "order.updated"
        assert event["target_id"] == "3"
        assert event["payload"] == {"changes": {"status": ["new", "paid"]}}

    def test_failures_raise_from_the_logging_call(self, audit_logger: logging.Logger) -> None:
        """Unlike other handlers, a failure is raised, not printed by handleError."""
        with pytest.raises(EventError, match="has no actor"):
            audit_logger.info("order.updated")

    def test_spool_failure_raises(self, audit_logger: logging.Logger, spool_dir: Path) -> None:
        """A spool that cannot be written raises SpoolError from the call (fail closed)."""
        spool_dir.parent.mkdir(exist_ok=True)
        spool_dir.write_text("not a directory")
        with pytest.raises(SpoolError, match="audit event not written to spool"), auditlock.actor("user#1"):
            audit_logger.info("order.updated")

    def test_misspelt_audit_event_is_refused_not_dropped(self, audit_logger: logging.Logger,
                                                          spool_dir: Path) -> None:
        """A record with audit arguments in extra= whose type matches no include pattern raises from the call."""
        expected = r"event 'orders\.updated' carries audit arguments \(target_id, target_type\) but matches no " \
                   r"\[events\] include pattern \(order\.\*\)"
        with pytest.raises(EventError, match=expected), auditlock.actor("user:1"):
            audit_logger.info("orders.updated", extra={"target_type": "Order", "target_id": 3,
                                                       "customer_email": "leak@example.com"})
        assert not spool_dir.exists()

    def test_non_audit_records_are_ignored(self, audit_logger: logging.Logger, spool_dir: Path) -> None:
        """Records whose message is not an audit event type are not spooled."""
        audit_logger.info("starting up %s", "now")
        assert not spool_dir.exists()


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter, to its exit (atexit hooks included)."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)


class TestFailedConstruction:
    def test_kept_config_error_leaves_a_clean_exit(self, tmp_path: Path) -> None:
        """A ConfigError caught and kept (with the handler in its traceback) still lets the process exit cleanly."""
        result = run_python("import auditlock\n"
                            "try:\n"
                            f"    auditlock.AuditHandler({str(tmp_path / 'missing.toml')!r})\n"
                            "except auditlock.ConfigError as exc:\n"
                            "    kept = exc  # as a test runner or error reporter keeps it\n"
                            "    print('refused')\n")
        assert (result.returncode, result.stdout, result.stderr) == (0, "refused\n", "")

    def test_config_error_is_the_only_traceback(self, tmp_path: Path) -> None:
        """A ConfigError in AuditHandler() leaves no half-built handler for logging.shutdown to trip over at exit."""
        path = tmp_path / "auditlock.toml"
        path.write_text('service = "shop"\n')  # no [spool], [events], [retention]
        result = run_python(f"import auditlock\nauditlock.AuditHandler({str(path)!r})\n")
        assert result.returncode == 1
        assert result.stderr.count("Traceback (most recent call last)") == 1
        assert "auditlock.errors.ConfigError" in result.stderr
        assert "AttributeError" not in result.stderr

    def test_dict_config_failure_leaves_nothing_for_exit(self, tmp_path: Path) -> None:
        """The same through dictConfig: logging's own error, and nothing from the atexit shutdown."""
        handlers = {"audit": {"()": "auditlock.AuditHandler", "config": str(tmp_path / "missing.toml")}}
        doc = {"version": 1, "handlers": handlers, "root": {"handlers": ["audit"]}}
        result = run_python(f"import logging.config\nlogging.config.dictConfig({doc!r})\n")
        assert result.returncode == 1
        assert "Unable to configure handler 'audit'" in result.stderr
        assert "Exception ignored in atexit" not in result.stderr
        assert "AttributeError" not in result.stderr


class TestOneCore:
    def test_both_adapters_write_the_same_record(self, config: Config, closing: Callable[[Any], Any]) -> None:
        """The processor and the handler build identical records from the same input."""
        processor = closing(auditlock.AuditProcessor(config))
        handler = closing(auditlock.AuditHandler(config))
        fields = {"target_type": "Order", "target_id": "1", "status": "paid", "other": 1}
        with auditlock.actor("user#1"):
            a = processor.core.build("order.updated", {"event": "order.updated", **fields})
            record = logging.LogRecord("audit", logging.INFO, __file__, 1, "order.updated", None, None)
            record.__dict__.update(fields)
            handler.emit(record)
        [written] = spool_events(config.spool.dir)
        assert {k: written[k] for k in a if a[k] is not None} == {k: v for k, v in a.items() if v is not None}


class TestLightImport:
    def test_handler_never_imports_agent_dependencies(self, tmp_path: Path) -> None:
        """With the handler in use, boto3, watchfiles and duckdb are not imported."""
        doc = config_dict(tmp_path / "spool")
        script = f"""
import sys, logging, structlog, auditlock
from auditlock.config import build_config
config = build_config({doc!r})
handler = auditlock.AuditHandler(config)
processor = auditlock.AuditProcessor(config)
with auditlock.actor("user#1"):
    processor.core.emit("order.created", {{"target_type": "Order"}})
loaded = [m for m in ("boto3", "botocore", "watchfiles", "duckdb") if m in sys.modules]
print(",".join(loaded) or "none")
"""
        env = {**os.environ, "AUDITLOCK_TEST_HMAC": "k" * 20}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        assert result.stdout.strip() == "none"
