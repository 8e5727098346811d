"""The key stores (a directory, PostgreSQL): one key per subject, shared by processes, erased for good, and the
handler failing closed when the store is down — unless it holds the subject's key already."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.config import Config
from auditlock.errors import KeyStoreError
from auditlock.handler.core import AuditCore
from auditlock.privacy.crypto import DataKey
from auditlock.privacy.keystore import KeyStore, open_store
from tests.support.privacy_env import (
    DSN_ENV,
    KeyStoreKind,
    child_env,
    erasable_config,
    erasable_doc,
    run_child,
    write_toml,
)
from tests.support.spool_files import spool_events


def store_of(config: Config) -> KeyStore:
    """A fresh store object over the configured store (no cache shared with anything else)."""
    return open_store(config.erasure)


def store_bytes(kind: KeyStoreKind, config: Config) -> bytes:
    """Everything the store holds, as bytes: every file of a file store; every row of the SQL store's tables."""
    if kind.name == "file":
        root = config.erasure.dir
        assert root is not None
        return b"".join(p.name.encode() + p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
    import sqlalchemy as sa

    engine = sa.create_engine(os.environ[DSN_ENV])
    with engine.connect() as conn:
        rows = [*conn.execute(sa.text("SELECT * FROM auditlock_data_keys")),
                *conn.execute(sa.text("SELECT * FROM auditlock_erased_keys"))]
    engine.dispose()
    return b"|".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


def holds(held: bytes, key: bytes) -> bool:
    """Whether `held` contains the key raw, in base64 or in hex."""
    return any(form in held for form in (key, base64.b64encode(key), key.hex().encode()))


class TestStore:
    def test_one_key_per_subject(self, key_store: KeyStoreKind, tmp_path: Path) -> None:
        """The first ask creates the subject's key; every later ask, from any store object, gets the same."""
        config = erasable_config(tmp_path / "spool", key_store.section)
        first = store_of(config).key_for("Customer:1")
        assert store_of(config).key_for("Customer:1").key == first.key
        assert store_of(config).subject_key("Customer:2") is None
        found = store_of(config).lookup(first.key_id)
        assert isinstance(found, DataKey)
        assert (found.subject, found.key) == ("Customer:1", first.key)
        assert store_of(config).lookup("0" * 32) == "unknown"

    def test_erase_leaves_no_key_of_the_subject(self, key_store: KeyStoreKind, tmp_path: Path) -> None:
        """After erase the store holds neither the key nor the subject; only the key id's tombstone remains."""
        config = erasable_config(tmp_path / "spool", key_store.section)
        store = store_of(config)
        gone, kept = store.key_for("Customer:42"), store.key_for("Customer:43")
        assert store.erase("Customer:42") == [gone.key_id]
        held = store_bytes(key_store, config)
        assert not holds(held, gone.key)
        assert b"Customer:42" not in held
        assert holds(held, kept.key)
        assert store_of(config).lookup(gone.key_id) == "erased"
        assert store_of(config).subject_key("Customer:42") is None
        assert store.erase("Customer:42") == []  # idempotent

    def test_subject_after_erasure_gets_a_new_key(self, key_store: KeyStoreKind, tmp_path: Path) -> None:
        """A subject erased and seen again gets a new key; the old one stays erased."""
        config = erasable_config(tmp_path / "spool", key_store.section)
        store = store_of(config)
        old = store.key_for("Customer:42")
        store.erase("Customer:42")
        new = store.key_for("Customer:42")
        assert new.key_id != old.key_id
        assert store.lookup(old.key_id) == "erased"


class TestTwoProcesses:
    def test_processes_read_each_others_subjects(self, key_store: KeyStoreKind, tmp_path: Path) -> None:
        """A child process and this one seal under one store; each reveals the other's values."""
        config_path = write_toml(tmp_path / "auditlock.toml", erasable_doc(tmp_path / "spool", key_store.section))
        sealed = run_child("seal", str(config_path), "1", "child@example.com")
        assert sealed.returncode == 0, sealed.stderr
        core = AuditCore(erasable_config(tmp_path / "spool", key_store.section))
        with auditlock.actor("user:1"):
            core.emit("customer.updated", {"target_type": "Customer", "target_id": "2",
                                           "after": {"email": "parent@example.com"}})
        core.writer.close()
        revealed = run_child("reveal", str(config_path), str(tmp_path / "spool"))
        assert revealed.returncode == 0, revealed.stderr
        assert orjson.loads(revealed.stdout) == {"1": "child@example.com", "2": "parent@example.com"}

    def test_racing_first_keys_agree(self, key_store: KeyStoreKind, tmp_path: Path) -> None:
        """Two processes asking for the first keys of the same subjects at once get the same key ids."""
        config_path = write_toml(tmp_path / "auditlock.toml", erasable_doc(tmp_path / "spool", key_store.section))
        store_of(erasable_config(tmp_path / "spool", key_store.section)).key_for("Warmup:0")  # tables exist
        go = tmp_path / "go"
        command = [sys.executable, "-m", "tests.support.privacy_env", "race", str(config_path), str(go), "40"]
        children = [subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for _ in range(2)]
        try:
            go.touch()
            outputs = [child.communicate(timeout=120) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert [child.returncode for child in children] == [0, 0], [err for _, err in outputs]
        first, second = (orjson.loads(out) for out, _ in outputs)
        assert first == second
        store = store_of(erasable_config(tmp_path / "spool", key_store.section))
        assert {s: store.key_for(s).key_id for s in first} == first


class TestStoreDown:
    @pytest.fixture
    def core_of(self, key_store: KeyStoreKind, tmp_path: Path,
                closing: Callable[[Any], Any]) -> Callable[..., AuditCore]:
        """A core over the store, asking it again at every event (a TTL of a millisecond)."""
        def make(**spool: Any) -> AuditCore:
            section = {**key_store.section, "cache_ttl_s": 0.001}
            core = AuditCore(erasable_config(tmp_path / "spool", section,
                                             spool={"dir": str(tmp_path / "spool"), "durability": "sync", **spool}))
            closing(core.writer)
            return core
        return make

    def emit(self, core: AuditCore, customer: str) -> dict[str, Any] | None:
        """customer.updated with an erasable email for Customer:<customer>."""
        with auditlock.actor("user:1"):
            return core.emit("customer.updated", {"target_type": "Customer", "target_id": customer,
                                                  "after": {"email": f"{customer}@example.com"}})

    def test_new_subject_is_refused_naming_the_cause(self, key_store: KeyStoreKind,
                                                     core_of: Callable[..., AuditCore]) -> None:
        """Store down, no cached key: the event is refused with KeyStoreError (a SpoolError) naming the store."""
        core = core_of()
        assert self.emit(core, "1") is not None
        key_store.take_down()
        with pytest.raises(KeyStoreError, match="key store") as raised:
            self.emit(core, "2")
        assert "check" in str(raised.value)
        core.writer.close()
        written = [e["target_id"] for e in spool_events(core.config.spool.dir) if e["event_type"] == "customer.updated"]
        assert written == ["1"]

    def test_cached_key_keeps_events_flowing(self, key_store: KeyStoreKind,
                                             core_of: Callable[..., AuditCore]) -> None:
        """Store down, the subject's key cached: its events are still written (sealed under that key)."""
        core = core_of()
        before = self.emit(core, "1")
        key_store.take_down()
        after = self.emit(core, "1")
        assert before is not None
        assert after is not None
        key_of = [e["payload"]["changes"]["email"][1].split(":")[2] for e in (before, after)]
        assert key_of[0] == key_of[1]

    def test_drop_policy_counts_the_refusal(self, key_store: KeyStoreKind,
                                            core_of: Callable[..., AuditCore]) -> None:
        """With on_error = "drop" the refused event is counted as a drop, like a spool failure."""
        core = core_of(on_error="drop")
        key_store.take_down()
        assert self.emit(core, "1") is None
        assert core.dropped == 1
