"""The bound actor's columns are checked once and reused (issue #17): every event still gets exactly its actor."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

import auditlock
from auditlock import EventError
from auditlock.config import Config
from auditlock.handler.context import RequestScope, entered_request, inner_actor
from auditlock.handler.core import AuditCore
from auditlock.integrations.request import set_request_actor

ACTOR_COLUMNS = ("actor_id", "actor_type", "actor_ip")


@pytest.fixture
def core(config: Config, closing: Callable[[Any], Any]) -> AuditCore:
    """A core writing to the test spool."""
    core = AuditCore(config)
    closing(core.writer)
    return core


def emitted(core: AuditCore, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of one `order.created` event (written to the spool)."""
    record = core.emit("order.created", {"target_type": "Order", "target_id": "1", **(fields or {})})
    assert record is not None
    return record


def actor_of(record: dict[str, Any]) -> tuple[Any, ...]:
    """A record's actor columns, job run id and request id."""
    payload = record["payload"]
    return (*(record[c] for c in ACTOR_COLUMNS), payload.get("job_run_id"), payload.get("request_id"))


class TestCallArgumentsAfterReuse:
    @pytest.mark.parametrize(("fields", "expected"), [
        ({"actor_ip": "198.51.100.9"}, ("user:82", "user", "198.51.100.9")),
        ({"actor_ip": None}, ("user:82", "user", None)),
        ({"actor_type": "service"}, ("user:82", "service", "203.0.113.7")),
        ({"actor_id": "svc:billing"}, ("svc:billing", "service", "203.0.113.7")),
    ])
    def test_a_call_naming_its_actor_is_not_given_the_reused_columns(
            self, core: AuditCore, fields: dict[str, Any], expected: tuple[Any, ...]) -> None:
        """actor_id=/actor_type=/actor_ip= in a call win over the bound actor's columns reused by earlier events."""
        with auditlock.actor("user:82", ip="203.0.113.7"):
            emitted(core)
            emitted(core)  # the bound actor's columns are now reused
            record = emitted(core, fields)
            after = emitted(core)
        assert tuple(record[c] for c in ACTOR_COLUMNS) == expected
        assert tuple(after[c] for c in ACTOR_COLUMNS) == ("user:82", "user", "203.0.113.7")


class TestRebinding:
    def test_every_event_carries_the_actor_bound_when_it_was_emitted(self, core: AuditCore) -> None:
        """Events alternating between nested actors, a job and back each carry their own actor."""
        seen = []
        with auditlock.actor("user:1", ip="203.0.113.1", request_id="req-1"):
            seen.append(actor_of(emitted(core)))
            with auditlock.actor("svc:billing"):
                seen.append(actor_of(emitted(core)))
            seen.append(actor_of(emitted(core)))
            with auditlock.job("nightly-import", run_id="run-7"):
                seen.append(actor_of(emitted(core)))
            seen.append(actor_of(emitted(core)))
        assert seen == [
            ("user:1", "user", "203.0.113.1", None, "req-1"),
            ("svc:billing", "service", "203.0.113.1", None, "req-1"),
            ("user:1", "user", "203.0.113.1", None, "req-1"),
            ("job:nightly-import", "job", None, "run-7", None),
            ("user:1", "user", "203.0.113.1", None, "req-1"),
        ]

    def test_an_actor_set_later_in_a_request_is_used_from_then_on(self, core: AuditCore) -> None:
        """set_request_actor() mid-request: the events after it carry the new actor, the ones before the old."""
        with entered_request(RequestScope(inner_actor(None, ip="203.0.113.5", request_id="req-9"))):
            with pytest.raises(EventError, match="has no actor"):
                emitted(core)  # anonymous so far
            set_request_actor("user:5")
            first = actor_of(emitted(core))
            set_request_actor("user:6")
            second = actor_of(emitted(core))
        assert first == ("user:5", "user", "203.0.113.5", None, "req-9")
        assert second == ("user:6", "user", "203.0.113.5", None, "req-9")

    def test_a_refused_bound_actor_is_refused_every_time(self, core: AuditCore) -> None:
        """A bound actor failing the checks is never remembered: each of its events is refused, not only the first."""
        with auditlock.actor("user:ok"):
            emitted(core)
        with auditlock.actor("user:8\n2"):
            for _ in range(3):
                with pytest.raises(EventError, match=re.escape("holds control characters")):
                    emitted(core)


class TestThreads:
    def test_threads_emitting_at_once_each_write_their_own_actor(self, core: AuditCore) -> None:
        """Two threads with different bound actors emitting in lockstep never get each other's columns."""
        rounds = 200
        barrier = threading.Barrier(2, timeout=60)
        seen: dict[str, list[Any]] = {"user:a": [], "user:b": []}
        errors: list[BaseException] = []

        def emit_as(actor_id: str) -> None:
            try:
                with auditlock.actor(actor_id, ip=f"203.0.113.{len(actor_id)}"):
                    for _ in range(rounds):
                        barrier.wait()
                        seen[actor_id].append(emitted(core)["actor_id"])
            except BaseException as exc:  # reported below
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=emit_as, args=(a,)) for a in seen]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert seen == {"user:a": ["user:a"] * rounds, "user:b": ["user:b"] * rounds}
