"""A sink lost after the agent's preflight: the shipper's own handling of a failure of the whole sink.

The preflight (`agent.preflight`) refuses a missing bucket before any PUT, so the tests of `--once` against an
unusable sink never reach the shipper's `_sink_failed`. These call the real in-process shipper of an `Agent`
whose bucket does not exist (as if it were deleted after the preflight), against the session's moto server:
`--once` (`fail_fast`) raises the sink problem; the long-running agent reports it through `on_sink_problem`,
waits, and leaves the wait at once on a stop request (on an abort during a drain). The `on_sink_problem`
callback below ends every test deterministically: a second call means the wait was not ended, and fails the test.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from auditlock.agent.s3errors import SinkUnusableError
from auditlock.agent.service import Agent
from auditlock.agent.shipper import DeadlineExceededError, StopRequestedError
from tests.support.archive_env import ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint

DRAIN_DEADLINE_S = 120.0
LONG_BACKOFF_S = 3600.0


class SinkProblems:
    """The `on_sink_problem` callback: records each report, then sets `then` (the agent's stop or abort)."""

    def __init__(self, agent: Agent, *, then: str) -> None:
        self.agent = agent
        self.then = then
        self.reports: list[str] = []

    def __call__(self, problem: str | None) -> None:
        if problem is None:
            return
        self.reports.append(problem)
        if len(self.reports) > 1:
            raise AssertionError(f"the {self.then} request did not end the shipper's retry wait")
        getattr(self.agent, self.then).set()


def gone_bucket_env(root: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """Sealed segments waiting in a spool whose config ships to a bucket that does not exist."""
    use_credentials(monkeypatch, moto_s3)
    env = ArchiveEnv.create(root, moto_s3, f"auditlock-gone-{uuid.uuid4().hex[:12]}")
    env.write_events(3)
    return env


@pytest.fixture
def agent(tmp_path: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Agent:
    """An in-process agent with sealed segments waiting, shipping to a bucket that does not exist."""
    return Agent(gone_bucket_env(tmp_path, moto_s3, monkeypatch).config, serve_http=False)


@pytest.fixture
def patient_agent(tmp_path: Path, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Agent:
    """As `agent`, with `[agent] backoff_max_s` an hour: the next try of a failed delivery (a lost sink waits the
    capped backoff) comes after any drain deadline of these tests."""
    env = gone_bucket_env(tmp_path, moto_s3, monkeypatch)
    text = env.config_path.read_text()
    assert "backoff_max_s = 0.5" in text
    env.config_path.write_text(text.replace("backoff_max_s = 0.5", f"backoff_max_s = {LONG_BACKOFF_S}"))
    return Agent(env.config, serve_http=False)


class TestSinkLostAfterThePreflight:
    """A failure of the whole sink met by a delivery: raised with `--once`, reported and waited out otherwise."""

    def test_once_raises_the_sink_problem(self, agent: Agent) -> None:
        """`fail_fast` (`--once`): the delivery raises `SinkUnusableError` naming NoSuchBucket; nothing reported."""
        problems = SinkProblems(agent, then="stop")
        agent.shipper.on_sink_problem = problems
        agent.shipper.fail_fast = True
        with pytest.raises(SinkUnusableError, match="NoSuchBucket"):
            agent.shipper.ship_due(force=True)
        assert problems.reports == []

    def test_long_running_agent_reports_it_and_a_stop_ends_the_wait(self, agent: Agent) -> None:
        """Without `fail_fast`: the problem goes to `on_sink_problem`, and the stop request ends the retry wait."""
        problems = SinkProblems(agent, then="stop")
        agent.shipper.on_sink_problem = problems
        with pytest.raises(StopRequestedError):
            agent.shipper.ship_due(force=True)
        [problem] = problems.reports
        assert "NoSuchBucket" in problem, problem

    def test_second_signal_during_a_drain_ends_the_wait(self, agent: Agent) -> None:
        """In a drain (a deadline) the abort event, not the stop, ends the wait: `DeadlineExceededError`."""
        problems = SinkProblems(agent, then="abort")
        agent.shipper.on_sink_problem = problems
        with pytest.raises(DeadlineExceededError, match="second signal"):
            agent.shipper.ship_due(force=True, deadline=time.monotonic() + DRAIN_DEADLINE_S)
        assert len(problems.reports) == 1


class TestDrainDeadline:
    """In a drain, no delivery is attempted once the deadline has passed, and none is waited for beyond it."""

    def test_no_delivery_is_attempted_after_the_deadline(self, agent: Agent) -> None:
        """A deadline already past: `DeadlineExceededError` ("no time left") before any request reaches the sink."""
        problems = SinkProblems(agent, then="abort")
        agent.shipper.on_sink_problem = problems
        with pytest.raises(DeadlineExceededError, match="no time left"):
            agent.shipper.ship_due(force=True, deadline=time.monotonic() - 1)
        assert problems.reports == []

    def test_retry_due_after_the_deadline_gives_up_at_once(self, patient_agent: Agent) -> None:
        """The next try would come after the deadline: the drain ends at once naming the failure, without waiting
        (a wait would end only by the abort the callback sets: "aborted by a second signal")."""
        problems = SinkProblems(patient_agent, then="abort")
        patient_agent.shipper.on_sink_problem = problems
        with pytest.raises(DeadlineExceededError, match="still failing") as raised:
            patient_agent.shipper.ship_due(force=True, deadline=time.monotonic() + DRAIN_DEADLINE_S)
        assert "NoSuchBucket" in str(raised.value), raised.value
