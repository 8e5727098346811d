"""The check before the first PUT: the sink bucket exists, the credentials work, and Object Lock is enabled.

`GetObjectLockConfiguration` answers all three in one request. A bucket without Object Lock is refused before
anything is shipped: objects put there could be deleted, which is what the archive exists to prevent (and the
agent's lock headers would be rejected anyway). A failure that can clear by retrying is raised as it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from auditlock.agent.backoff import Backoff, ErrorReporter, describe, error_kind
from auditlock.agent.metrics import AgentMetrics
from auditlock.agent.s3errors import NO_OBJECT_LOCK_FIX, Permanence, SinkUnusableError, classify, sink_problem
from auditlock.agent.shipper import DeadlineExceededError, StopRequestedError
from auditlock.agent.uploader import Uploader
from auditlock.config.model import AgentConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def check_sink(client: S3Client, bucket: str, endpoint_url: str | None) -> None:
    """Raise `SinkUnusableError` naming the fix if the sink cannot take objects; other errors pass through."""
    try:
        response = client.get_object_lock_configuration(Bucket=bucket)
    except Exception as exc:
        if classify(exc) is Permanence.SINK:
            raise SinkUnusableError(sink_problem(exc, bucket, endpoint_url)) from exc
        raise
    enabled = response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
    if enabled != "Enabled":
        raise SinkUnusableError(f"bucket {bucket!r} at {endpoint_url or 'AWS S3'}: Object Lock is not enabled "
                                f"(ObjectLockEnabled = {enabled!r}); {NO_OBJECT_LOCK_FIX}")


class SinkGate:
    """Holds shipping until `check_sink` passed once; retries the check, reporting what keeps it failing.

    A problem only an operator can fix raises with `fail_fast` (`--once`); otherwise it goes to `on_problem`
    (/readyz 503 with the reason) and is retried at the capped backoff. Other failures are retried with backoff
    and reported to `on_transient` (the agent then counts as ready: it holds the spool, and S3 may merely be down).
    """

    def __init__(self, uploader: Uploader, endpoint_url: str | None, agent: AgentConfig, metrics: AgentMetrics, *,
                 on_problem: Callable[[str | None], None], on_transient: Callable[[], None]) -> None:
        self.uploader = uploader
        self.endpoint_url = endpoint_url
        self.agent = agent
        self.metrics = metrics
        self.on_problem = on_problem
        self.on_transient = on_transient
        self.passed = False

    def wait(self, stop: threading.Event, *, fail_fast: bool, deadline: float | None = None) -> None:
        """Return once the check passed; `StopRequestedError` when `stop` is set, `DeadlineExceededError` when
        the next attempt would end after `deadline` (then `stop` is the second signal)."""
        backoff = Backoff(self.agent.backoff_initial_s, self.agent.backoff_max_s)
        reporter = ErrorReporter()
        while not self.passed:
            try:
                self._attempt(stop, deadline)
            except (StopRequestedError, DeadlineExceededError):
                raise
            except Exception as exc:
                delay = self._failed(exc, backoff, fail_fast=fail_fast)
                reporter.failed("bucket check", exc, delay)
                _wait(stop, delay, deadline, exc)
                continue
            self.on_problem(None)
            reporter.succeeded("bucket check")
            self.passed = True

    def _attempt(self, stop: threading.Event, deadline: float | None) -> None:
        """One check, in a thread of its own: a stalled S3 (reads time out only after `read_timeout_s` and its
        retries) must not hold a SIGTERM back, nor the drain past its deadline."""
        failure: list[Exception] = []
        done = threading.Event()

        def check() -> None:
            try:
                check_sink(self.uploader.client, self.uploader.bucket, self.endpoint_url)
            except Exception as exc:
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=check, name="auditlock-agent-bucket-check", daemon=True).start()
        while not done.wait(_POLL_S):
            if stop.is_set():
                raise DeadlineExceededError("aborted by a second signal") if deadline is not None \
                    else StopRequestedError()
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError("the bucket check did not answer within the grace period")
        if failure:
            raise failure[0]

    def _failed(self, exc: Exception, backoff: Backoff, *, fail_fast: bool) -> float:
        self.metrics.errors.labels(kind=error_kind(exc)).inc()
        if isinstance(exc, SinkUnusableError):
            if fail_fast:
                raise exc
            self.on_problem(str(exc))
            return backoff.maximum
        self.on_transient()
        return backoff.next_delay()


_POLL_S = 0.05  # how often a waiting bucket check looks at the stop event and the deadline


def _wait(stop: threading.Event, delay: float, deadline: float | None, exc: Exception) -> None:
    if deadline is not None and time.monotonic() + delay > deadline:
        raise DeadlineExceededError(f"bucket check still failing: {describe(exc)}") from exc
    if stop.wait(delay):
        if deadline is not None:
            raise DeadlineExceededError("aborted by a second signal") from exc
        raise StopRequestedError
