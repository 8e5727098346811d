"""Draining a spool with the real agent in-process, for tests that inject no fault: an S3 failure fails the test
at once, with the agent's own error line, instead of the agent retrying it until pytest's timeout."""

from __future__ import annotations

import logging
import threading

from auditlock.agent.service import Agent, DrainResult
from auditlock.config import Config
from tests.support.waiting import wait_for

DRAIN_TIMEOUT_S = 180.0


class _ErrorLines(logging.Handler):
    """Keeps the agent's ERROR lines (the first failure of an upload is always logged)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def drain_or_fail(config: Config, timeout: float = DRAIN_TIMEOUT_S) -> DrainResult:
    """`Agent.run_once()` for a spool that must ship cleanly; the first agent error stops it and fails the test."""
    agent = Agent(config, serve_http=False)
    errors = _ErrorLines()
    outcome: list[DrainResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(agent.run_once())
        except BaseException as exc:  # handed to the test thread, which raises it
            outcome.append(exc)

    logger = logging.getLogger("auditlock.agent")
    logger.addHandler(errors)
    worker = threading.Thread(target=run, name="test-agent-drain", daemon=True)
    try:
        worker.start()
        wait_for(lambda: outcome or errors.lines, timeout, what="the agent draining the spool")
    finally:
        agent.stop.set()  # ends a retry wait at once (the agent's own stop request); no-op once it returned
        agent.abort.set()
        worker.join(timeout)
        logger.removeHandler(errors)
    if errors.lines:
        raise AssertionError("the agent failed to ship (no fault was injected): " + "\n".join(errors.lines))
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return result
