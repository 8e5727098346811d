"""The `enc:v2:` form (issue #19): one AES-GCM call seals all of an event's erasable values — the envelope, the
references, what the associated data binds, the findings for altered events, and `enc:v1:` values still read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock.config import Config
from auditlock.handler.core import AuditCore
from auditlock.privacy.crypto import ERASED, PREFIX, PREFIX_V2, UNREADABLE, parse_sealed_v2
from auditlock.privacy.erasable import Revealer, revealer_for
from auditlock.privacy.erase import erase_subject
from auditlock.privacy.keystore import open_store
from tests.support.privacy_env import KeyStoreKind, erasable_config
from tests.support.privacy_v1 import v1_core

UPDATE = {"target_type": "Customer", "target_id": "42", "tier": "gold", "name": "Ann Lee",
          "before": {"email": "old@example.com", "name": "Ann"}, "after": {"email": "new@example.com"}}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Erasable Customer/Order targets over a file key store."""
    return erasable_config(tmp_path / "spool", {"store": "file", "dir": str(tmp_path / "keys")})


@pytest.fixture
def core(config: Config, closing: Callable[[Any], Any]) -> AuditCore:
    """A core over `config`."""
    core = AuditCore(config)
    closing(core.writer)
    return core


def emit(core: AuditCore, event_type: str = "customer.updated", **fields: Any) -> dict[str, Any]:
    """Emit one event as user:1 and return its payload (by default `UPDATE`: five values sealed)."""
    with auditlock.actor("user:1"):
        record = core.emit(event_type, fields or UPDATE)
    assert record is not None
    return record["payload"]


def reveal(config: Config, payload: dict[str, Any], event_id: str = "e-1") -> tuple[dict[str, Any], Revealer]:
    """The payload as a fresh revealer of `config`'s store shows it, and the revealer (its findings)."""
    revealer = revealer_for(config)
    assert revealer is not None
    return revealer.payload(payload, event_id), revealer


PLAIN = {"tier": "gold", "name": "Ann Lee",
         "changes": {"email": ["old@example.com", "new@example.com"], "name": ["Ann", None]}}


class TestEnvelope:
    def test_one_envelope_and_references(self, core: AuditCore) -> None:
        """An event's sealed values are one envelope, at the first place in sorted order, and references to it,
        all under the subject's key id."""
        payload = emit(core)
        email_before, email_after = payload["changes"]["email"]
        key_id, body = parse_sealed_v2(email_before)  # ("email", 1) < ("email", 2) < ("name", 0) < ("name", 1)
        assert body is not None
        reference = f"{PREFIX_V2}{key_id}:@"
        assert [email_after, payload["name"], payload["changes"]["name"][0]] == [reference] * 3
        assert payload["changes"]["name"][1] is None
        assert payload["tier"] == "gold"

    def test_every_value_reveals_at_its_place(self, config: Config, core: AuditCore) -> None:
        """Each of the five sealed values reads back at its own place, through a reader of its own."""
        shown, revealer = reveal(config, emit(core))
        assert shown == PLAIN
        assert revealer.findings == []

    def test_every_value_reveals_with_either_key_store(self, key_store: KeyStoreKind, tmp_path: Path,
                                                        closing: Callable[[Any], Any]) -> None:
        """The file store and PostgreSQL both seal and reveal an event's values, and erase them all at once."""
        config = erasable_config(tmp_path / "spool", key_store.section)
        core = AuditCore(config)
        closing(core.writer)
        payload = emit(core)
        assert reveal(config, payload)[0] == PLAIN
        erase_subject(config, "Customer:42", actor="user:7", reason="request R-2")
        shown, revealer = reveal(config, payload)
        assert shown == {"tier": "gold", "name": ERASED,
                         "changes": {"email": [ERASED, ERASED], "name": [ERASED, None]}}
        assert revealer.findings == []
        open_store(config.erasure).close()

    def test_single_value_is_an_envelope_alone(self, config: Config, core: AuditCore) -> None:
        """An event with one erasable value holds just the envelope, which reveals."""
        payload = emit(core, "order.created", target_type="Order", target_id="7", customer_id=42,
                       shipping_address="Street 1")
        assert parse_sealed_v2(payload["shipping_address"])[1] is not None
        assert reveal(config, payload)[0]["shipping_address"] == "Street 1"

    def test_values_of_any_json_type(self, config: Config, core: AuditCore) -> None:
        """Structured, numeric and empty values come back exactly as a plain field holds them."""
        payload = emit(core, target_type="Customer", target_id="1", name={"first": "Ann", "n": [1, 2.5]},
                       email="")
        assert reveal(config, payload)[0] == {"name": {"first": "Ann", "n": [1, 2.5]}, "email": ""}


class TestEveryShape:
    """The common shape (every erasable field in the payload, no change) has a path of its own; every shape seals
    the same way."""

    def test_every_field_in_the_payload(self, config: Config, core: AuditCore) -> None:
        """Both fields at the top level: the envelope at the first in sorted order, whatever the call's order;
        the payload keeps the call's key order; both reveal."""
        payload = emit(core, target_type="Customer", target_id="5", name="Ann", tier="gold", email="a@example.com")
        assert list(payload) == ["name", "tier", "email"]
        key_id, body = parse_sealed_v2(payload["email"])
        assert body is not None
        assert payload["name"] == f"{PREFIX_V2}{key_id}:@"
        assert reveal(config, payload)[0] == {"name": "Ann", "tier": "gold", "email": "a@example.com"}

    @pytest.mark.parametrize(("fields", "sealed"), [
        ({"name": None, "email": "a@example.com"}, ["email"]),
        ({"name": "Ann", "email": None}, ["name"]),
        ({"email": "a@example.com"}, ["email"]),
        ({"name": "Ann", "email": "a@example.com", "after": {"name": "Bo"}}, ["name", "email", "changes"]),
    ], ids=["null-name", "null-email", "name-absent", "with-a-change"])
    def test_other_shapes(self, config: Config, core: AuditCore, fields: dict[str, Any], sealed: list[str]) -> None:
        """A null or absent field, or a change beside the fields, takes the general path: nulls stay null, the
        rest is sealed and reveals as passed."""
        payload = emit(core, target_type="Customer", target_id="5", **fields)
        for name in ("name", "email"):
            assert (payload.get(name) is None) is (fields.get(name) is None)
        assert [name for name in ("name", "email", "changes") if PREFIX_V2 in str(payload.get(name))] == sealed
        expected = {name: value for name, value in fields.items() if name != "after"}
        if "after" in fields:
            expected["changes"] = {"name": [None, "Bo"]}
        assert reveal(config, payload)[0] == expected

    @pytest.mark.parametrize("event", [{"target_type": "Customer", "target_id": "5", "tier": "gold"},
                                       {"target_type": "Order", "target_id": "7", "customer_id": 42}],
                             ids=["two-erasable-fields", "one-erasable-field"])
    def test_no_erasable_value_seals_nothing(self, config: Config, core: AuditCore, event: dict[str, Any]) -> None:
        """An event of an erasable target without any erasable value is written plain, and its subject gets no
        key."""
        payload = emit(core, "customer.updated", **event)
        assert "enc:v" not in str(payload)
        store = open_store(config.erasure)
        assert store.subject_key("Customer:5") is None
        assert store.subject_key("Customer:42") is None
        store.close()


def swap(payload: dict[str, Any], field: str, to: str) -> dict[str, Any]:
    """The payload with the value of top-level `field` moved to `to`."""
    moved = dict(payload)
    moved[to] = moved.pop(field)
    return moved


class TestAlteredEvents:
    def test_reference_moved_to_another_field(self, config: Config, core: AuditCore) -> None:
        """A reference moved to another field changes the event's places: every value is `[undecryptable]`,
        each with a finding naming the event and the field; none shows a wrong plaintext."""
        shown, revealer = reveal(config, swap(emit(core), "name", "tier"), "e-9")
        assert shown["tier"] == UNREADABLE
        assert shown["changes"] == {"email": [UNREADABLE, UNREADABLE], "name": [UNREADABLE, None]}
        assert len(revealer.findings) == 4
        assert all(f.startswith("event e-9: payload field") for f in revealer.findings)
        assert "do not authenticate" in revealer.findings[0]

    @pytest.mark.parametrize("change", ["removed", "added", "before and after"])
    def test_places_added_removed_or_swapped(self, config: Config, core: AuditCore, change: str) -> None:
        """Removing a reference, adding one, or swapping a change's sides fails authentication: findings."""
        payload = emit(core)
        reference = payload["name"]
        if change == "removed":
            payload["name"] = "Ann Lee"
        elif change == "added":
            payload["tier"] = reference
        else:
            payload["changes"]["name"] = [None, reference]
        shown, revealer = reveal(config, payload)
        assert UNREADABLE in shown["changes"]["email"]
        assert "new@example.com" not in str(shown)
        assert revealer.finding_count >= 3

    def test_envelope_under_another_subjects_key(self, config: Config, core: AuditCore) -> None:
        """The event's values relabelled with another subject's key id do not authenticate."""
        payload = emit(core)
        other = parse_sealed_v2(emit(core, target_type="Customer", target_id="43", name="Bo")["name"])[0]
        mine = parse_sealed_v2(payload["name"])[0]
        forged = {"name": payload["name"].replace(mine, other),
                  "changes": {"email": [v.replace(mine, other) for v in payload["changes"]["email"]]}}
        shown, revealer = reveal(config, forged)
        assert shown == {"name": UNREADABLE, "changes": {"email": [UNREADABLE, UNREADABLE]}}
        assert "do not authenticate" in revealer.findings[0]

    def test_envelope_copied_into_another_event(self, config: Config, core: AuditCore) -> None:
        """An envelope copied into an event of the same subject with other places does not authenticate."""
        payload = emit(core)
        shown, revealer = reveal(config, {"email": payload["changes"]["email"][0]})
        assert shown == {"email": UNREADABLE}
        assert revealer.finding_count == 1

    @pytest.mark.parametrize(("case", "cause"), [
        ("no envelope", "hold 0 envelopes"), ("two envelopes", "hold 2 envelopes"),
        ("reference to another key", "name other keys"), ("not base64", "not base64"),
        ("no key id", "valid key id"), ("too short", "too short")])
    def test_malformed_events_are_findings(self, config: Config, core: AuditCore, case: str, cause: str) -> None:
        """Malformed v2 values make every value of the event `[undecryptable]` with a finding naming the cause,
        never a crash."""
        payload = emit(core)
        envelope = payload["changes"]["email"][0]
        key_id = parse_sealed_v2(envelope)[0]
        altered = {
            "no envelope": payload["name"], "two envelopes": None, "not base64": f"{PREFIX_V2}{key_id}:!!",
            "reference to another key": None, "no key id": f"{PREFIX_V2}nothex:@",
            "too short": f"{PREFIX_V2}{key_id}:AAAA",
        }[case]
        if case == "two envelopes":
            payload["name"] = envelope
        elif case == "reference to another key":
            payload["name"] = f"{PREFIX_V2}{'0' * 32}:@"
        else:
            payload["changes"]["email"][0] = altered
        shown, revealer = reveal(config, payload)
        assert shown["name"] == UNREADABLE
        assert shown["changes"]["email"] == [UNREADABLE, UNREADABLE]
        assert cause in revealer.findings[0]

    def test_finding_for_many_places_is_bounded(self, config: Config, core: AuditCore) -> None:
        """An event altered to hold thousands of long-named references gets findings of bounded length."""
        payload = emit(core)
        payload.update({f"{'x' * 500}{n}": payload["name"] for n in range(2000)})
        shown, revealer = reveal(config, payload)
        assert shown["changes"]["email"] == [UNREADABLE, UNREADABLE]
        assert "and 1994 more" in revealer.findings[0]
        assert max(len(f) for f in revealer.findings) < 2000

    def test_plaintext_not_one_value_per_place(self, config: Config, core: AuditCore) -> None:
        """An envelope sealed with the right key and places but the wrong number of values is a finding."""
        emit(core)
        key = open_store(config.erasure).subject_key("Customer:42")
        assert key is not None
        places = (("email", 0), ("name", 0))
        payload = {"email": key.seal_event(places, ["only one"]), "name": key.reference}
        shown, revealer = reveal(config, payload)
        assert shown == {"email": UNREADABLE, "name": UNREADABLE}
        assert "not one per sealed field" in revealer.findings[0]

    def test_reference_revealed_alone_is_a_finding(self, config: Config, core: AuditCore) -> None:
        """`Revealer.value` on a v2 value alone says it is revealed with its event, not a crash."""
        revealer = revealer_for(config)
        assert revealer is not None
        assert revealer.value("name", emit(core)["name"], "e-3") == UNREADABLE
        assert "revealed with its event's payload" in revealer.findings[0]


class TestV1StillReads:
    def test_v1_values_written_by_the_old_code_reveal(self, config: Config, core: AuditCore) -> None:
        """Values the old code path wrote (`enc:v1:`, one call per value) reveal as before, beside v2 events."""
        v2 = emit(core)
        v1 = emit(v1_core(core))
        assert v1["name"].startswith(PREFIX)
        assert all(v.startswith(PREFIX) for v in v1["changes"]["email"])
        revealer = revealer_for(config)
        assert revealer is not None
        assert revealer.payload(v1) == revealer.payload(v2) == PLAIN
        assert revealer.findings == []

    def test_v1_and_v2_values_in_one_payload(self, config: Config, core: AuditCore) -> None:
        """A payload mixing a v1 value with an event's v2 values reveals each by its own form."""
        v1_email = emit(v1_core(AuditCore(config)), target_type="Customer", target_id="42", email="a@x")["email"]
        payload = {**emit(core, target_type="Customer", target_id="42", name="Ann"), "email": v1_email}
        assert reveal(config, payload)[0] == {"name": "Ann", "email": "a@x"}

    def test_v1_values_read_erased_after_erasure(self, config: Config, core: AuditCore) -> None:
        """After erasure, v1 and v2 values of the subject both read `[erased]`."""
        v1, v2 = emit(v1_core(AuditCore(config))), emit(core)
        erase_subject(config, "Customer:42", actor="user:7", reason="request R-3")
        revealer = revealer_for(config)
        assert revealer is not None
        assert revealer.payload(v1)["changes"]["email"] == revealer.payload(v2)["changes"]["email"] == [ERASED] * 2
        assert revealer.findings == []
