"""Erasable fields: configuration, sealing in the handler, the sealed format, and what readers reveal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditlock
from auditlock import EventError
from auditlock.config import build_config
from auditlock.errors import ConfigError, KeyStoreError
from auditlock.handler.core import AuditCore
from auditlock.privacy.crypto import ERASED, PREFIX, PREFIX_V2, UNREADABLE, parse_sealed, parse_sealed_v2
from auditlock.privacy.erasable import revealer_for
from auditlock.privacy.erase import erase_subject
from tests.conftest import config_dict
from tests.support.privacy_env import MARKER, erasable_config, erasable_doc, iter_bytes
from tests.support.privacy_v1 import v1_core


def file_store(tmp: Path) -> dict[str, Any]:
    """The `[erasure]` section of a file store under `tmp`."""
    return {"store": "file", "dir": str(tmp / "keys")}


@pytest.fixture
def core(tmp_path: Path, closing: Callable[[Any], Any]) -> AuditCore:
    """A core over a spool in tmp_path with erasable Customer/Order fields and a file key store."""
    core = AuditCore(erasable_config(tmp_path / "spool", file_store(tmp_path)))
    closing(core.writer)
    return core


def key_id_of(record: dict[str, Any]) -> str:
    """The key id of a record's sealed values (every v2 value names it)."""
    payload = record["payload"]
    values = [*payload.values(), *(v for pair in payload.get("changes", {}).values() for v in pair)]
    [key_id] = {parse_sealed_v2(v)[0] for v in values if isinstance(v, str) and v.startswith(PREFIX_V2)}
    return key_id


def customer_event(core: AuditCore, customer: int | str, email: str, **extra: Any) -> dict[str, Any]:
    """Emit customer.updated changing the email of Customer:<customer>."""
    with auditlock.actor("user:1"):
        record = core.emit("customer.updated", {"target_type": "Customer", "target_id": customer,
                                                "before": {"email": "old@example.com"}, "after": {"email": email},
                                                **extra})
    assert record is not None
    return record


class TestConfig:
    def test_erasable_and_subject_are_read(self, tmp_path: Path) -> None:
        """`erasable`, `subject` and `[erasure]` become the typed config."""
        config = erasable_config(tmp_path / "spool", file_store(tmp_path))
        assert config.targets["Order"].erasable == {"shipping_address"}
        assert config.targets["Order"].subject_field == ("Customer", "customer_id")
        assert config.targets["Customer"].subject_field is None
        assert config.erasure.store == "file"
        assert config.erasable

    @pytest.mark.parametrize(("target", "erasure", "message"), [
        ({"fields": ["name"], "erasable": ["email"]}, {"store": "file", "dir": "k"},
         "erasable field 'email' is not in fields"),
        ({"fields": ["email"], "hmac": ["email"], "erasable": ["email"]}, {"store": "file", "dir": "k"},
         "both hmac and erasable"),
        ({"fields": ["email"], "erasable": ["email"], "subject": "customer_id"}, {"store": "file", "dir": "k"},
         'must be "<SubjectType>:<field>"'),
        ({"fields": ["email"], "erasable": ["email"]}, None, "erasable fields need a key store"),
        ({"fields": ["email"], "erasable": ["email"]}, {"store": "sql"}, "exactly one of dsn_env"),
        ({"fields": ["email"], "erasable": ["email"]}, {"store": "file"}, 'store = "file" needs dir'),
    ])
    def test_invalid_erasable_config_is_refused(self, tmp_path: Path, target: dict[str, Any],
                                                erasure: dict[str, Any] | None, message: str) -> None:
        """Each inconsistency of erasable fields, subject and store is a ConfigError naming it."""
        doc = config_dict(tmp_path, targets={"Customer": target})
        if erasure is not None:
            doc["erasure"] = erasure
        with pytest.raises(ConfigError, match=message):
            build_config(doc)


class TestSealing:
    def test_marker_never_reaches_the_spool(self, core: AuditCore, tmp_path: Path) -> None:
        """An erasable value — in a field and on both sides of changes — appears in no byte of the spool."""
        customer_event(core, 42, f"{MARKER}@example.com", name=f"{MARKER} Name")
        with auditlock.actor("user:1"):
            core.emit("order.created", {"target_type": "Order", "target_id": 7, "customer_id": 42,
                                        "shipping_address": f"{MARKER} Street 1", "status": "new"})
            core.emit("customer.updated", {"target_type": "Customer", "target_id": 43,
                                           "before": {"email": f"{MARKER}-old"}, "after": {"email": None}})
        core.writer.close()
        scanned = list(iter_bytes(core.config.spool.dir))
        assert scanned
        assert not [path for path, data in scanned if MARKER.encode() in data]

    def test_sealed_values_and_plain_fields(self, core: AuditCore) -> None:
        """Erasable values are `enc:v2:` strings — the envelope at the first place (sorted), references at the
        others; other fields, nulls and the target stay plain."""
        record = customer_event(core, 42, "a@example.com", name="Ann", tier="gold")
        payload = record["payload"]
        key_id, body = parse_sealed_v2(payload["changes"]["email"][0])  # ("email", 1) sorts first
        assert body is not None
        assert payload["changes"]["email"][1] == payload["name"] == f"{PREFIX_V2}{key_id}:@"
        assert payload["tier"] == "gold"
        assert (record["target_type"], record["target_id"]) == ("Customer", "42")
        removed = customer_event(core, 42, None)  # type: ignore[arg-type]
        assert removed["payload"]["changes"]["email"][1] is None

    def test_one_key_per_subject(self, core: AuditCore) -> None:
        """Events of one subject share its key id; another subject's events use another."""
        first = key_id_of(customer_event(core, 1, "a@x"))
        again = key_id_of(customer_event(core, 1, "b@x"))
        other = key_id_of(customer_event(core, 2, "c@x"))
        assert first == again != other

    def test_subject_named_by_a_field(self, core: AuditCore) -> None:
        """`subject = "Customer:customer_id"`: an Order's erasable value is sealed under its customer's key."""
        customer = key_id_of(customer_event(core, 42, "a@x"))
        with auditlock.actor("user:1"):
            order = core.emit("order.created", {"target_type": "Order", "target_id": 7,
                                                "after": {"shipping_address": "Street 1", "customer_id": 42}})
        assert order is not None
        assert key_id_of(order) == customer

    def test_event_without_its_subject_is_refused(self, core: AuditCore) -> None:
        """An erasable value with no subject id to pick its key is an EventError naming the field."""
        with auditlock.actor("user:1"), pytest.raises(EventError, match=r"customer_id= .* is missing"):
            core.emit("order.created", {"target_type": "Order", "target_id": 7, "shipping_address": "Street 1"})
        with auditlock.actor("user:1"), pytest.raises(EventError, match="no target_id"):
            core.emit("customer.updated", {"target_type": "Customer", "name": "Ann"})

    def test_event_without_erasable_values_needs_no_subject(self, core: AuditCore) -> None:
        """An Order event with no erasable value is written without a customer_id (and without a key)."""
        with auditlock.actor("user:1"):
            record = core.emit("order.created", {"target_type": "Order", "target_id": 7, "status": "new"})
        assert record is not None
        assert record["payload"] == {"status": "new"}
        assert not (Path(core.config.erasure.dir or "") / "keys").exists()


class TestRevealing:
    def test_revealed_values_are_what_was_passed(self, core: AuditCore) -> None:
        """The reader gets back exactly the encoded values a plain field would hold."""
        record = customer_event(core, 42, "a@example.com", name={"first": "Ann", "n": [1, 2.5]})
        revealer = revealer_for(core.config)
        assert revealer is not None
        assert revealer.payload(record["payload"]) == {"name": {"first": "Ann", "n": [1, 2.5]},
                                                       "changes": {"email": ["old@example.com", "a@example.com"]}}

    def test_erased_subject_reads_erased_others_unaffected(self, core: AuditCore) -> None:
        """After erase, the subject's values read `[erased]`; another subject's still decrypt."""
        gone, kept = customer_event(core, 42, "a@x"), customer_event(core, 43, "b@x")
        erase_subject(core.config, "Customer:42", actor="user:7", reason="request R-1")
        revealer = revealer_for(core.config)
        assert revealer is not None
        assert revealer.payload(gone["payload"])["changes"]["email"] == [ERASED, ERASED]
        assert revealer.payload(kept["payload"])["changes"]["email"] == ["old@example.com", "b@x"]
        assert revealer.findings == []

    def test_v1_value_moved_to_another_field_or_subject_is_a_finding(self, core: AuditCore) -> None:
        """A v1 value (written by the old code path) copied to another field or forged under another key id is
        `[undecryptable]` with a finding naming the event and the field, never a crash or a wrong plaintext."""
        v1_core(core)
        sealed = customer_event(core, 42, "a@x")["payload"]["changes"]["email"][1]
        other_key = parse_sealed(customer_event(core, 43, "b@x")["payload"]["changes"]["email"][1])[0]
        forged = sealed.replace(parse_sealed(sealed)[0], other_key)
        revealer = revealer_for(core.config)
        assert revealer is not None
        shown = revealer.payload({"name": sealed, "email": forged, "tier": f"{PREFIX}nothex:AAAA"}, "e-1")
        assert shown == {"name": UNREADABLE, "email": UNREADABLE, "tier": UNREADABLE}
        assert len(revealer.findings) == 3
        assert all(f.startswith("event e-1: payload field") for f in
                                                   revealer.findings)
        assert "does not authenticate for field 'name'" in revealer.findings[0]

    def test_key_this_store_never_had_is_a_finding(self, core: AuditCore, tmp_path: Path) -> None:
        """A value whose key id the store does not know (another store) is a finding, not shown as erased."""
        payload = customer_event(core, 42, "a@x")["payload"]
        elsewhere = erasable_config(tmp_path / "spool", {"store": "file", "dir": str(tmp_path / "other-keys")})
        revealer = revealer_for(elsewhere)
        assert revealer is not None
        assert revealer.payload(payload, "e-2")["changes"]["email"] == [UNREADABLE, UNREADABLE]
        assert "is not in this key store" in revealer.findings[0]


class TestLightImport:
    def test_no_cryptography_without_erasable_fields(self, tmp_path: Path) -> None:
        """A handler whose config has no erasable field never imports cryptography (or SQLAlchemy)."""
        doc = config_dict(tmp_path / "spool")
        with_erasable = erasable_doc(tmp_path / "spool2", file_store(tmp_path))
        script = f"""
import sys, auditlock
from auditlock.config import build_config
from auditlock.handler.core import AuditCore
with auditlock.actor("user#1"):
    AuditCore(build_config({doc!r})).emit("order.created", {{"target_type": "Order"}})
print("cryptography" in sys.modules, "sqlalchemy" in sys.modules)
AuditCore(build_config({with_erasable!r}))
print("cryptography" in sys.modules, "sqlalchemy" in sys.modules)
"""
        env = {**os.environ, "AUDITLOCK_TEST_HMAC": "k" * 20}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        assert result.stdout.split("\n")[:2] == ["False False", "True False"]



class TestNonces:
    def test_nonces_never_repeat(self, core: AuditCore) -> None:
        """A thousand sealed values of one field and subject carry a thousand different nonces."""
        key = core._builder._sealer.keys.key_for("Customer:1")  # type: ignore[union-attr]
        nonces = {parse_sealed(key.seal("email", "same"))[1][:12] for _ in range(1000)}
        assert len(nonces) == 1000

    def test_forked_child_uses_no_nonce_of_its_parent(self, core: AuditCore) -> None:
        """After fork, the child's next nonce is not the one the parent uses next (the pool is not inherited)."""
        key = core._builder._sealer.keys.key_for("Customer:1")  # type: ignore[union-attr]
        key.seal("email", "warm the pool")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: send its next nonce, exit at once
            os.write(write, parse_sealed(key.seal("email", "child"))[1][:12])
            os._exit(0)
        os.close(write)
        child_nonce = os.read(read, 12)
        os.close(read)
        os.waitpid(pid, 0)
        assert child_nonce != parse_sealed(key.seal("email", "parent"))[1][:12]

    def test_event_nonces_never_repeat_across_refills(self, core: AuditCore) -> None:
        """Envelopes of four pools' worth of events (1030 > 4 x 256 nonces) carry 1030 different 12-byte nonces."""
        key = core._builder._sealer.keys.key_for("Customer:1")  # type: ignore[union-attr]
        places = (("email", 0), ("name", 0))
        nonces = [envelope_nonce(key.seal_event(places, ["same", "same"])) for _ in range(1030)]
        assert {len(nonce) for nonce in nonces} == {12}
        assert len(set(nonces)) == 1030

    def test_child_and_parent_nonces_are_disjoint_across_refills(self, core: AuditCore) -> None:
        """A forked child and its parent each seal 600 events (refilling their pools twice) from the same warm
        pool: no nonce appears twice in either process, nor in both."""
        key = core._builder._sealer.keys.key_for("Customer:1")  # type: ignore[union-attr]
        places = (("email", 0), ("name", 0))
        key.seal_event(places, ["warm", "the pool"])
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: send its 600 nonces, exit at once
            os.write(write, b"".join(envelope_nonce(key.seal_event(places, ["c", "c"])) for _ in range(600)))
            os._exit(0)
        os.close(write)
        parent = [envelope_nonce(key.seal_event(places, ["p", "p"])) for _ in range(600)]
        with os.fdopen(read, "rb") as pipe:
            sent = pipe.read()
        os.waitpid(pid, 0)
        child = [sent[i:i + 12] for i in range(0, len(sent), 12)]
        assert len(child) == 600
        assert len(set(child)) == len(set(parent)) == 600
        assert not set(child) & set(parent)


def envelope_nonce(envelope: str) -> bytes:
    """The nonce of a v2 envelope."""
    body = parse_sealed_v2(envelope)[1]
    assert body is not None
    return body[:12]


class TestStoreOpenedOnUse:
    def test_core_that_never_seals_needs_no_store(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  closing: Callable[[Any], Any]) -> None:
        """Without the store's URL a core still starts and writes events with no erasable value (the agent's
        trail, the view's access log); the first erasable value is refused with KeyStoreError naming the
        variable."""
        monkeypatch.delenv("AUDITLOCK_TEST_NO_SUCH_DSN", raising=False)
        core = AuditCore(erasable_config(tmp_path / "spool", {"store": "sql",
                                                              "dsn_env": "AUDITLOCK_TEST_NO_SUCH_DSN"}))
        closing(core.writer)
        with auditlock.actor("user:1"):
            assert core.emit("customer.updated", {"target_type": "Customer", "target_id": 1, "tier": "gold"})
            with pytest.raises(KeyStoreError, match="AUDITLOCK_TEST_NO_SUCH_DSN is not set"):
                core.emit("customer.updated", {"target_type": "Customer", "target_id": 1, "name": "Ann"})
