"""Shared fixtures: configs built in code, spool directories, and the S3 server fixtures."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import auditlock
from auditlock.config import Config, build_config

pytest_plugins = ["tests.support.fixtures", "tests.support.postgres", "tests.support.capture_env",
                  "tests.support.query_env", "tests.support.sqlalchemy_models", "tests.support.athena_env",
                  "tests.support.privacy_env", "tests.support.users",
                  "tests.support.written_spool"]

HMAC_KEY = "test-hmac-key-0123456789"

# No timing assertions: Hypothesis' per-example deadline (200 ms) and its too-slow health check fail on a loaded
# machine, not on a bug.
settings.register_profile("auditlock", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("auditlock")

# The date-sensitive modules, marked `calendar`: archives across months, time ranges and their partitions,
# retention (retain-until against the server's clock), segment rotation at month boundaries. `.ci/run` runs
# `pytest -m calendar` again under a faked clock (just after a New Year, and mid-month); every date they compare
# with the current time comes from tests/support/calendar.py. The one list: add a module here, not a marker there.
# Not here: test_ui_browser.py (its dates are the story's, as test_ui.py's; Chromium under libfaketime runs about
# five times slower, near pytest's timeout).
CALENDAR_MODULES = frozenset({
    "test_agent_archive.py",
    "test_calendar.py",
    "test_legal_hold.py",
    "test_lifecycle.py",
    "test_query_archive.py",
    "test_query_athena.py",
    "test_query_cache.py",
    "test_query_cli.py",
    "test_s3_servers.py",
    "test_spool_writer.py",
    "test_ui.py",
    "test_verify_archive.py",
    "test_verify_archive_edges.py",
    "test_verify_archive_gaps.py",
    "test_verify_archive_mutants.py",
    "test_verify_cli.py",
    "test_verify_invariants.py",
    "test_verify_s3_lock_mutants.py",
    "test_verify_s3_mutants.py",
    "test_verify_spool.py",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of a CALENDAR_MODULES module `calendar`."""
    for item in items:
        if item.path.name in CALENDAR_MODULES:
            item.add_marker(pytest.mark.calendar)


def config_dict(spool_path: Path, **overrides: Any) -> dict[str, Any]:
    """A complete, valid config document; top-level sections in `overrides` are merged in."""
    doc: dict[str, Any] = {
        "service": "shop",
        "spool": {"dir": str(spool_path), "durability": "sync"},
        "events": {"include": ["order.*", "customer.*", "auth.*", "access.*", "data.*"]},
        "targets": {
            "Order": {"fields": ["status", "total", "customer_email"], "hmac": ["customer_email"],
                      "retention": "orders"},
            "Customer": {"fields": ["name", "email"], "hmac": ["email"], "sensitive_reads": True},
            "User": {}, "ApiKey": {},  # the targets of the auth helpers: declared, nothing allowlisted
        },
        "hmac": {"key_env": "AUDITLOCK_TEST_HMAC"},
        "retention": {
            "default": "standard",
            "classes": {
                "standard": {"days": 400, "mode": "GOVERNANCE", "hot_days": 90},
                "orders": {"days": 3650, "mode": "COMPLIANCE"},
                "security": {"days": 730, "mode": "COMPLIANCE"},
            },
            "events": {"auth.*": "security"},
        },
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(section), dict):
            doc[section] = {**doc[section], **value}
        else:
            doc[section] = value
    return doc


@pytest.fixture(autouse=True)
def _hmac_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITLOCK_TEST_HMAC", HMAC_KEY)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A spool directory path (not yet created: the writer creates it)."""
    return tmp_path / "spool"


@pytest.fixture
def make_config(spool_dir: Path) -> Callable[..., Config]:
    """Build a validated Config over `spool_dir`, with section overrides."""

    def make(**overrides: Any) -> Config:
        return build_config(config_dict(spool_dir, **overrides))

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    """The default test config (sync durability)."""
    return make_config()


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Register processors/handlers/writers to close at teardown, so no flusher thread outlives a test."""
    things: list[Any] = []

    def add(thing: Any) -> Any:
        things.append(thing)
        return thing

    yield add
    for thing in reversed(things):
        thing.close()


@pytest.fixture
def audit_log(config: Config, closing: Callable[[Any], Any]) -> Iterator[logging.Logger]:
    """The application's audit logger: a stdlib logger of its own with an AuditHandler over the test spool."""
    logger = logging.getLogger(f"audit.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = closing(auditlock.AuditHandler(config))
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
