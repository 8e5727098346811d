"""Draining a spool with the real agent in-process, for tests that inject no S3 fault: a failing delivery fails
the test at once, with the agent's own error line, instead of being retried forever until pytest's timeout.

Only the retry loop's errors count (the agent's backoff module logs the first failure of every operation at
once); a quarantined segment is an outcome some tests expect, and does not stop the drain."""

from __future__ import annotations

import logging
import threading

from auditlock.agent.service import Agent, DrainResult
from auditlock.config import Config
from tests.support.waiting import wait_for

DRAIN_TIMEOUT_S = 180.0


class _RetryErrors(logging.Handler):
    """Keeps the error lines of the agent's retry loop (`auditlock.agent.backoff`: "… failed (n times so far)")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.module == "backoff":
            self.lines.append(record.getMessage())


def drain_or_fail(config: Config, timeout: float = DRAIN_TIMEOUT_S, *, agent: Agent | None = None) -> DrainResult:
    """`Agent.run_once()` for a spool whose deliveries must succeed; the first failed one stops the agent and
    fails the test. `agent`: one the test built already (to read its metrics after), else a new one."""
    agent = agent or Agent(config, serve_http=False)
    errors = _RetryErrors()
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
