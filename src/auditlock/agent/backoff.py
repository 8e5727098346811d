"""Retrying forever, politely: capped exponential backoff with full jitter, and error logs that do not flood."""

from __future__ import annotations

import logging
import random
import time

log = logging.getLogger("auditlock.agent")

ERROR_LOG_INTERVAL_S = 30.0


class Backoff:
    """Delays of `uniform(c/2, c)` with `c = min(maximum, initial * 2**n)` for the n-th consecutive failure."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (jittered, so many agents do not retry in step)."""
        ceiling = min(self.maximum, self.initial * 2 ** min(self.failures, 30))
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        """Back to the initial delay after a success."""
        self.failures = 0


class ErrorReporter:
    """Logs a failing operation at most every 30 s, with how often it failed, and logs when it recovers."""

    def __init__(self, interval: float = ERROR_LOG_INTERVAL_S) -> None:
        self.interval = interval
        self.failing_since: float | None = None
        self.failures = 0
        self._last_logged = float("-inf")

    def failed(self, operation: str, exc: BaseException, retry_in: float) -> None:
        """Record one failure; log it if the last log line is older than the interval."""
        now = time.monotonic()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if now - self._last_logged >= self.interval:
            self._last_logged = now
            log.error("auditlock agent: %s failed (%d times so far), retrying in %.1f s: %s",
                      operation, self.failures, retry_in, describe(exc))

    def succeeded(self, operation: str) -> None:
        """Log recovery if there were failures."""
        if self.failing_since is not None:
            log.warning("auditlock agent: %s recovered after %d failures over %.1f s", operation, self.failures,
                        time.monotonic() - self.failing_since)
        self.failing_since = None
        self.failures = 0
        self._last_logged = float("-inf")


def describe(exc: BaseException) -> str:
    """A one-line description of an exception with its type."""
    return f"{type(exc).__name__}: {exc}"


def error_kind(exc: BaseException) -> str:
    """A short, bounded label for metrics: the S3 error code, or the exception's class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str) and code:
            return code[:40]
    return type(exc).__name__[:40]
