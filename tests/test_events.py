"""The audit event: actor, target, allowlisted payload, changes, hmac, encoding, and refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock import EventError
from auditlock.config import Config, build_config
from auditlock.handler.core import AuditCore
from auditlock.testing import capture_audit_events
from tests.conftest import HMAC_KEY, config_dict
from tests.support.spool_files import spool_events, spool_lines


def hashed(value: str) -> str:
    """The hmac form of a string under the test key."""
    return "hmac-sha256:" + hmac.new(HMAC_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def core(config: Config, closing: Callable[[Any], Any]) -> AuditCore:
    """A core writing to the test spool."""
    core = AuditCore(config)
    closing(core.writer)
    return core


class TestActor:
    def test_bound_actor_is_used(self, core: AuditCore) -> None:
        """`with auditlock.actor(...)` supplies actor id, type and ip."""
        with auditlock.actor("user#82", ip="203.0.113.7"):
            record = core.emit("order.created", {"target_type": "Order", "target_id": "1"})
        assert record is not None
        assert (record["actor_id"], record["actor_type"], record["actor_ip"]) == ("user#82", "user", "203.0.113.7")

    def test_call_arguments_override(self, core: AuditCore) -> None:
        """actor_id= in the call beats the bound actor; its type is inferred from the prefix."""
        with auditlock.actor("user#82"):
            record = core.emit("order.created", {"actor_id": "job:nightly-import"})
        assert record is not None
        assert (record["actor_id"], record["actor_type"]) == ("job:nightly-import", "job")

    def test_no_actor_is_an_error(self, core: AuditCore, config: Config) -> None:
        """An audit event without an actor raises EventError and writes nothing."""
        with pytest.raises(EventError, match="has no actor"):
            core.emit("order.created", {"target_type": "Order"})
        assert not config.spool.dir.exists() or spool_lines(config.spool.dir) == []

    def test_bad_actor_type(self, core: AuditCore) -> None:
        """An unknown actor_type is refused, naming the allowed ones."""
        with pytest.raises(EventError, match="actor_type 'robot' is not one of user, service, job"):
            core.emit("order.created", {"actor_id": "x", "actor_type": "robot"})

    @pytest.mark.parametrize(("actor_id", "refusal"), [
        (82, "actor_id must be a string like 'user:82', not 82"),
        ("user:" + "9" * 252, "is 257 characters, over 256"),
        ("user:8\n2", "holds control characters"),
        ("user:\t82", "holds control characters"),
        ("user:\u200b82", "holds control characters"),
    ])
    def test_unusable_actor_ids_are_refused(self, core: AuditCore, config: Config, actor_id: object,
                                            refusal: str) -> None:
        """An actor id that is not a printable string of at most 256 characters is an EventError; nothing written."""
        with pytest.raises(EventError, match=re.escape(refusal)):
            core.emit("order.created", {"actor_id": actor_id})
        assert not config.spool.dir.exists() or spool_lines(config.spool.dir) == []

    def test_actor_ids_are_opaque(self, core: AuditCore) -> None:
        """Any printable id up to 256 characters is written as given; only svc:/job: set the default type."""
        ids = ["user:82", "user:alice@example.com", "anonymous", "user:" + "9" * 251, "user:Zoë Müller"]
        with capture_audit_events() as events:
            for actor_id in ids:
                core.emit("order.created", {"actor_id": actor_id})
        assert [(e["actor_id"], e["actor_type"]) for e in events] == [(actor_id, "user") for actor_id in ids]

    def test_actors_nest(self) -> None:
        """An inner actor block replaces the outer one until it ends."""
        with auditlock.actor("user#1"):
            with auditlock.actor("svc:billing"):
                assert auditlock.current_actor() == auditlock.Actor("svc:billing", "service")
            assert auditlock.current_actor() == auditlock.Actor("user#1", "user")
        assert auditlock.current_actor() is None

    def test_actors_are_isolated_per_thread(self) -> None:
        """A thread does not see another thread's actor."""
        seen: list[object] = []
        with auditlock.actor("user#1"):
            thread = threading.Thread(target=lambda: seen.append(auditlock.current_actor()))
            thread.start()
            thread.join()
        assert seen == [None]

    def test_actors_are_isolated_per_task(self) -> None:
        """Concurrent asyncio tasks each keep their own actor."""

        async def task(name: str, started: asyncio.Event, other: asyncio.Event) -> str | None:
            with auditlock.actor(name):
                started.set()
                await other.wait()
                bound = auditlock.current_actor()
                return bound.id if bound else None

        async def main() -> list[str | None]:
            a, b = asyncio.Event(), asyncio.Event()
            return list(await asyncio.gather(task("user#a", a, b), task("user#b", b, a)))

        assert asyncio.run(main()) == ["user#a", "user#b"]


class TestJobs:
    def test_job_is_the_actor_with_its_run_id(self, core: AuditCore) -> None:
        """auditlock.job binds job:<name> as a job actor and writes its run id into every event."""
        with auditlock.job("nightly-import", run_id="run-42"):
            record = core.emit("order.updated", {"target_type": "Order", "target_id": 1, "status": "paid"})
        assert record is not None
        assert (record["actor_id"], record["actor_type"]) == ("job:nightly-import", "job")
        assert record["payload"] == {"status": "paid", "job_run_id": "run-42"}

    def test_decorated_calls_are_separate_runs(self, core: AuditCore) -> None:
        """Each call of a function decorated with auditlock.job gets a run id of its own."""

        @auditlock.job("cleanup")
        def run() -> dict[str, Any] | None:
            return core.emit("order.deleted", {"target_type": "Order", "target_id": 1})

        first, second = run(), run()
        assert first is not None
        assert second is not None
        assert first["payload"]["job_run_id"] != second["payload"]["job_run_id"]
        assert auditlock.current_actor() is None

    def test_an_explicit_actor_inside_a_job_wins(self, core: AuditCore) -> None:
        """An actor bound inside a job block replaces it, run id included."""
        with auditlock.job("import"), auditlock.actor("user#9"):
            record = core.emit("order.created", {"target_type": "Order"})
        assert record is not None
        assert (record["actor_id"], record["payload"]) == ("user#9", {})

    @pytest.mark.parametrize("name", ["", "job:import", "nightly import"])
    def test_bad_job_names_are_refused(self, name: str) -> None:
        """A job name must be bare: no 'job:' prefix, no whitespace, not empty."""
        with pytest.raises(ValueError, match="give the bare name"), auditlock.job(name):
            pass


class TestPayload:
    def test_only_allowlisted_values_reach_the_file(self, core: AuditCore, config: Config) -> None:
        """Non-allowlisted values are dropped before serialisation: their bytes are not in the spool."""
        with auditlock.actor("user#1"):
            core.emit("order.updated", {
                "target_type": "Order", "target_id": 7, "password": "hunter2-secret",
                "payload": {"status": "paid", "card_number": "4111111111111111"},
                "before": {"status": "new", "cvv": "cvv-before-secret"},
                "after": {"status": "paid", "cvv": "cvv-after-secret"},
            })
        data = b"".join(path.read_bytes() for path in config.spool.dir.iterdir())
        for secret in (b"hunter2-secret", b"4111111111111111", b"cvv-before-secret", b"cvv-after-secret", b"cvv",
                       b"password"):
            assert secret not in data
        [event] = spool_events(config.spool.dir)
        assert event["payload"] == {"status": "paid", "changes": {"status": ["new", "paid"]}}

    def test_changes_hold_only_changed_fields(self, core: AuditCore) -> None:
        """before/after become [before, after] pairs of allowlisted fields that changed."""
        with auditlock.actor("user#1"):
            record = core.emit("order.updated", {
                "target_type": "Order", "target_id": "1",
                "before": {"status": "new", "total": 10}, "after": {"status": "new", "total": 12},
            })
        assert record is not None
        assert record["payload"] == {"changes": {"total": [10, 12]}}

    def test_hmac_fields_are_keyed_hashes(self, core: AuditCore, config: Config) -> None:
        """hmac fields are written as hmac-sha256 of the value under the configured key."""
        with auditlock.actor("user#1"):
            core.emit("customer.updated", {"target_type": "Customer", "target_id": "9",
                                           "before": {"email": "a@example.com"}, "after": {"email": "b@example.com"}})
        [event] = spool_events(config.spool.dir)
        assert event["payload"]["changes"]["email"] == [hashed("a@example.com"), hashed("b@example.com")]
        assert b"example.com" not in b"".join(spool_lines(config.spool.dir))

    def test_standard_fields_are_allowed(self, core: AuditCore) -> None:
        """A standard event type's documented fields are kept without a target allowlist."""
        with auditlock.actor("user#1"):
            record = core.emit("auth.login_failed", {"reason": "bad_password", "password": "x"})
        assert record is not None
        assert record["payload"] == {"reason": "bad_password"}
        assert record["retention"] == "security"

    def test_registered_standard_fields_apply_to_cached_types(self, core: AuditCore) -> None:
        """Fields registered for an event type are kept from then on, even after events of that type were built."""
        fields = {"target_type": "Order", "rowcount": 3}
        with auditlock.actor("user#1"):
            before = core.emit("order.bulk_archived", dict(fields))
            auditlock.event_types.register_standard_fields("order.bulk_archived", ["rowcount"])
            after = core.emit("order.bulk_archived", dict(fields))
        assert before is not None
        assert after is not None
        assert before["payload"] == {}
        assert after["payload"] == {"rowcount": 3}

    def test_target_id_becomes_a_string(self, core: AuditCore) -> None:
        """Integer and UUID target ids are written as strings."""
        uid = uuid.UUID(int=5)
        with auditlock.actor("user#1"):
            a = core.emit("order.created", {"target_type": "Order", "target_id": 5})
            b = core.emit("order.created", {"target_type": "Order", "target_id": uid})
        assert (a and a["target_id"], b and b["target_id"]) == ("5", str(uid))

    def test_target_id_needs_target_type(self, core: AuditCore) -> None:
        """A target_id without target_type is refused."""
        with pytest.raises(EventError, match="without target_type"), auditlock.actor("user#1"):
            core.emit("order.created", {"target_id": 5})


class TestUndeclaredTargets:
    def test_misspelt_target_type_is_refused(self, core: AuditCore, config: Config) -> None:
        """A target type with no [targets.<Type>] section is refused, naming it and the section; nothing written."""
        with pytest.raises(EventError, match=r"target_type 'Ordr' has no \[targets\.Ordr\] section") as refused, \
                auditlock.actor("user:1"):
            core.emit("order.updated", {"target_type": "Ordr", "target_id": 1, "status": "paid"})
        assert "configured target types: ApiKey, Customer, Order, User" in str(refused.value)
        assert not config.spool.dir.exists() or spool_lines(config.spool.dir) == []

    def test_standard_type_on_an_undeclared_target_is_refused(self, core: AuditCore) -> None:
        """Standard event types are no exception: data.accessed on a misspelt target would skip sensitive_reads."""
        with pytest.raises(EventError, match=r"add \[targets\.Custmer\]"), auditlock.actor("user:1"):
            core.emit("data.accessed", {"target_type": "Custmer", "target_id": "9"})

    def test_events_without_a_target_need_no_section(self, core: AuditCore) -> None:
        """An event naming no target type is written as before."""
        with auditlock.actor("user:1"):
            record = core.emit("auth.logout", {"reason": "user"})
        assert record is not None
        assert record["target_type"] is None

    def test_an_empty_section_declares_a_target(self, make_config: Callable[..., Config],
                                                closing: Callable[[Any], Any]) -> None:
        """`[targets.<Type>]` with no keys declares the type: its events are written, with an empty payload."""
        core = AuditCore(make_config(targets={"Invoice": {}}))
        closing(core.writer)
        with auditlock.actor("user:1"):
            record = core.emit("invoice.created", {"target_type": "Invoice", "target_id": 3, "total": 5})
        assert record is not None
        assert (record["target_type"], record["payload"]) == ("Invoice", {})

    def test_refusal_message_is_bounded(self, core: AuditCore) -> None:
        """A huge target_type is cut in the message: the refusal does not copy what the caller passed in full."""
        with pytest.raises(EventError) as refused, auditlock.actor("user:1"):
            core.emit("order.updated", {"target_type": "X" * 100_000})
        assert len(str(refused.value)) < 600

    def test_refusal_without_any_target_section(self, spool_dir: Path) -> None:
        """With no [targets.*] section at all the message says so instead of listing none."""
        doc = config_dict(spool_dir)
        del doc["targets"], doc["hmac"]
        core = AuditCore(build_config(doc))
        with pytest.raises(EventError, match=r"it has no \[targets\.\*\] section at all"), \
                auditlock.actor("user:1"):
            core.build("order.created", {"target_type": "Order"})


class Colour(enum.Enum):
    RED = "red"


class TestEncoding:
    @pytest.mark.parametrize(("value", "written"), [
        (dt.datetime(2026, 11, 26, 21, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
         "2026-11-26T20:00:00.000005Z"),
        (dt.datetime(2026, 11, 26, 21, 0), "2026-11-26T21:00:00"),
        (dt.date(2026, 11, 26), "2026-11-26"),
        (decimal.Decimal("10.50"), "10.50"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Colour.RED, "red"),
        (b"\x00\xff", "AP8="),
        ({3, 1, 2}, [1, 2, 3]),
        ((1, "a"), [1, "a"]),
        (2**70, str(2**70)),
    ])
    def test_documented_encoding(self, core: AuditCore, value: Any, written: Any) -> None:
        """Values that are not JSON-native get their documented deterministic form."""
        with auditlock.actor("user#1"):
            record = core.emit("order.updated", {"target_type": "Order", "status": value})
        assert record is not None
        assert record["payload"]["status"] == written

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1: "a"}, decimal.Decimal("NaN")])
    def test_unencodable_values_name_the_field(self, core: AuditCore, value: Any) -> None:
        """A value with no JSON form is an EventError naming the field."""
        with pytest.raises(EventError, match=r"payload field payload\.status"), auditlock.actor("user#1"):
            core.emit("order.updated", {"target_type": "Order", "status": value})

    def test_too_large_event(self, core: AuditCore, config: Config) -> None:
        """An event over max_event_bytes is refused and takes no seq."""
        with auditlock.actor("user#1"):
            with pytest.raises(EventError, match="over \\[events\\] max_event_bytes = 65536"):
                core.emit("order.updated", {"target_type": "Order", "status": "x" * 70000})
            core.emit("order.updated", {"target_type": "Order", "status": "ok"})
        assert [e["seq"] for e in spool_events(config.spool.dir)] == [0]

    def test_bad_event_type(self, core: AuditCore) -> None:
        """An event type that is not namespaced lowercase is refused."""
        with pytest.raises(EventError, match="not namespaced lowercase"), auditlock.actor("user#1"):
            core.emit("Order.Updated", {})


class TestSensitiveReads:
    def test_justification_required(self, core: AuditCore) -> None:
        """data.accessed on a sensitive target needs a justification."""
        with pytest.raises(EventError, match="needs justification="), auditlock.actor("user#1"):
            core.emit("data.accessed", {"target_type": "Customer", "target_id": "9"})

    def test_justification_recorded(self, core: AuditCore) -> None:
        """With a justification the read is recorded with it."""
        with auditlock.actor("user#1"):
            record = core.emit("data.accessed", {"target_type": "Customer", "target_id": "9",
                                                 "justification": "ticket 4711", "fields": ["email"]})
        assert record is not None
        assert record["payload"] == {"justification": "ticket 4711", "fields": ["email"]}


class TestEventTypes:
    def test_record_event_type(self) -> None:
        """Record mutation types are derived from the target type."""
        assert auditlock.record_event_type("OrderLine", "updated") == "order_line.updated"
        assert auditlock.event_types.ROLE_GRANTED == "access.role_granted"


class TestCapture:
    def test_capture_sees_what_the_spool_would(self, config: Config) -> None:
        """capture_audit_events collects the exact records, and nothing reaches the disk."""
        core = AuditCore(config)
        with capture_audit_events() as events, auditlock.actor("user#1"):
            core.emit("order.updated", {"target_type": "Order", "target_id": 1, "customer_email": "a@b.c",
                                        "secret": "x"})
        assert events[0]["payload"] == {"customer_email": hashed("a@b.c")}
        assert events[0]["seq"] == 0
        assert not config.spool.dir.exists()


class TestChangesAllowlist:
    """Invariant: `changes` holds allowlisted fields only, whichever side of before/after a field appears on."""

    def _emit_change(self, core: AuditCore, before: dict[str, Any], after: dict[str, Any]) -> None:
        with auditlock.actor("user#1"):
            core.emit("order.updated", {"target_type": "Order", "target_id": 7, "before": before, "after": after})

    def _spool_bytes(self, config: Config) -> bytes:
        return b"".join(path.read_bytes() for path in config.spool.dir.iterdir() if path.is_file())

    def test_field_only_in_before_and_not_allowlisted_never_reaches_the_spool(
        self, core: AuditCore, config: Config
    ) -> None:
        """Invariant: a non-allowlisted field present only in `before` leaves no byte (name or value) in the spool."""
        self._emit_change(core, {"status": "new", "ssn_before_only": "MARKER-before-only-7f3a"}, {"status": "paid"})
        data = self._spool_bytes(config)
        assert b"MARKER-before-only-7f3a" not in data
        assert b"ssn_before_only" not in data
        [event] = spool_events(config.spool.dir)
        assert event["payload"] == {"changes": {"status": ["new", "paid"]}}

    def test_field_only_in_after_and_not_allowlisted_never_reaches_the_spool(
        self, core: AuditCore, config: Config
    ) -> None:
        """Invariant: a non-allowlisted field present only in `after` leaves no byte (name or value) in the spool."""
        self._emit_change(core, {"status": "new"}, {"status": "paid", "ssn_after_only": "MARKER-after-only-5c1e"})
        data = self._spool_bytes(config)
        assert b"MARKER-after-only-5c1e" not in data
        assert b"ssn_after_only" not in data
        [event] = spool_events(config.spool.dir)
        assert event["payload"] == {"changes": {"status": ["new", "paid"]}}

    def test_allowlisted_field_only_in_before_is_recorded_as_removed(self, core: AuditCore, config: Config) -> None:
        """Invariant: an allowlisted field present only in `before` is kept as [old value, null]."""
        self._emit_change(core, {"status": "new", "total": 10}, {"status": "new"})
        [event] = spool_events(config.spool.dir)
        assert event["payload"] == {"changes": {"total": [10, None]}}

    def test_hmac_field_only_in_before_is_written_as_its_keyed_hash(self, core: AuditCore, config: Config) -> None:
        """Invariant: an hmac field present only in `before` is written hashed, its clear value never in the spool."""
        self._emit_change(core, {"customer_email": "gone@example.com"}, {})
        data = self._spool_bytes(config)
        assert b"gone@example.com" not in data
        [event] = spool_events(config.spool.dir)
        assert event["payload"] == {"changes": {"customer_email": [hashed("gone@example.com"), None]}}
