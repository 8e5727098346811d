"""HMAC key rotation: a keyring with key ids; new values under the current key, every key searched by readers."""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.cli import main
from auditlock.config import build_config, load_config
from auditlock.errors import ConfigError
from auditlock.handler.core import AuditCore
from auditlock.handler.encode import hmac_value
from auditlock.handler.hmac_keys import HmacKeyring, key_id_of
from auditlock.spool.writer import SpoolWriter
from tests.conftest import HMAC_KEY, config_dict
from tests.support.archive_env import use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.shipping import drain_or_fail

OLD_KEY, K2_KEY, K3_KEY = HMAC_KEY, "rotated-key-two-0123456789", "rotated-key-three-0123456789"
ALICE, BOB = "alice@example.com", "bob@example.com"

BASE = """
service = "shop"
[spool]
dir = "{spool}"
durability = "sync"
[events]
include = ["customer.*"]
[targets.Customer]
fields = ["name", "email"]
hmac = ["email"]
[retention]
default = "standard"
[retention.classes.standard]
days = 30
mode = "GOVERNANCE"
[sink]
bucket = "{bucket}"
prefix = "audit"
endpoint_url = "{endpoint}"
region = "{region}"
batch_max_age_s = 0.2
"""
LEGACY = '[hmac]\nkey_env = "AUDITLOCK_TEST_HMAC"\n'
# The rotation as docs/configuration.md shows it: the legacy key kept (readable), k2 added and made current.
ROTATED = LEGACY + 'current = "k2"\n[hmac.keys.k2]\nkey_env = "TEST_HMAC_K2"\n'
# A second rotation: k3 current, k2 and the legacy key kept for readers.
ROTATED_TWICE = LEGACY + 'current = "k3"\n[hmac.keys.k2]\nkey_env = "TEST_HMAC_K2"\n' \
                         '[hmac.keys.k3]\nkey_file = "k3.key"\n'


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key of the ring in the environment (the legacy one comes from conftest)."""
    monkeypatch.setenv("TEST_HMAC_K2", K2_KEY)


class RotatingService:
    """A config file rewritten at each rotation, events emitted through the real handler core, the real agent."""

    def __init__(self, root: Path, endpoint: S3Endpoint, bucket: str) -> None:
        self.root, self.endpoint, self.bucket = root, endpoint, bucket
        self.path = root / "auditlock.toml"
        (root / "k3.key").write_text(K3_KEY + "\n")

    def configure(self, hmac_section: str) -> None:
        """Write the config with this [hmac] section (a deploy of the new config)."""
        self.path.write_text(BASE.format(spool=self.root / "spool", bucket=self.bucket, endpoint=self.endpoint.url,
                                         region=self.endpoint.region) + hmac_section)

    def emit(self, email: str, name: str) -> dict[str, Any]:
        """One customer.created event, written by a fresh core (a restarted application) under the current config."""
        config = load_config(self.path)
        writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
        with auditlock.actor("user#1"):
            record = AuditCore(config, writer=writer).emit("customer.created", {
                "target_type": "Customer", "target_id": name, "name": name, "email": email})
        writer.close()
        assert record is not None
        return dict(record)

    def ship(self) -> None:
        """Drain the spool with the real agent."""
        assert drain_or_fail(load_config(self.path)).segments_left == 0

    def run(self, *argv: str) -> tuple[int, str, str]:
        """`auditlock <argv> --config <file>`: (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([*argv, "--config", str(self.path)])
        return status, out.getvalue(), err.getvalue()

    def query_names(self, *flags: str) -> list[str]:
        """The target ids `auditlock query --format jsonl FLAGS` returns."""
        status, out, err = self.run("query", "--format", "jsonl", "--cache-dir", str(self.root / "cache"), *flags)
        assert status == 0, err
        return sorted(orjson.loads(line)["target_id"] for line in out.splitlines())


@pytest.fixture
def service(tmp_path: Path, moto_s3: S3Endpoint, keys: None, monkeypatch: pytest.MonkeyPatch) -> RotatingService:
    """A service on a fresh lock bucket of the moto server, its credentials in the environment."""
    use_credentials(monkeypatch, moto_s3)
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-hmac-{uuid.uuid4().hex[:12]}")
    return RotatingService(tmp_path, moto_s3, bucket)


class TestRotation:
    def test_values_under_every_key_found_by_one_query(self, service: RotatingService) -> None:
        """Events hashed under the legacy key, k2 and k3 are all found by one `query --hmac-field`."""
        service.configure(LEGACY)
        before = service.emit(ALICE, "a-legacy")
        service.emit(BOB, "b-legacy")
        service.configure(ROTATED)
        after = service.emit(ALICE, "a-k2")
        service.configure(ROTATED_TWICE)
        latest = service.emit(ALICE, "a-k3")
        service.ship()
        assert [key_id_of(e["payload"]["email"]) for e in (before, after, latest)] == [None, "k2", "k3"]
        assert service.query_names("--hmac-field", f"email={ALICE}") == ["a-k2", "a-k3", "a-legacy"]
        assert service.query_names("--hmac-field", f"email={BOB}") == ["b-legacy"]

    def test_new_values_carry_the_current_key_id(self, service: RotatingService) -> None:
        """After a rotation the stored value is `hmac-sha256:<key id>:<hex>` of the current key."""
        service.configure(ROTATED)
        record = service.emit(ALICE, "a")
        assert record["payload"]["email"] == hmac_value(K2_KEY.encode(), ALICE, "k2")
        assert re.fullmatch(r"hmac-sha256:k2:[0-9a-f]{64}", record["payload"]["email"])

    def test_legacy_config_writes_legacy_values(self, service: RotatingService) -> None:
        """The single-key form still writes `hmac-sha256:<hex>`, as before key ids existed."""
        service.configure(LEGACY)
        assert service.emit(ALICE, "a")["payload"]["email"] == hmac_value(OLD_KEY.encode(), ALICE)

    def test_hash_prints_every_key_current_first(self, service: RotatingService) -> None:
        """`auditlock hash` prints the value's form under each key, the current key's first; --current only it."""
        service.configure(ROTATED_TWICE)
        status, out, _ = service.run("hash", ALICE)
        assert status == 0
        assert out.splitlines() == [hmac_value(K3_KEY.encode(), ALICE, "k3"), hmac_value(K2_KEY.encode(), ALICE, "k2"),
                                    hmac_value(OLD_KEY.encode(), ALICE)]
        status, out, _ = service.run("hash", "--current", ALICE)
        assert out.splitlines() == [hmac_value(K3_KEY.encode(), ALICE, "k3")]

    def test_application_needs_only_the_current_key(self, service: RotatingService,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """An application without the old keys' secrets still records (old keys are for readers)."""
        service.configure(ROTATED_TWICE)
        monkeypatch.delenv("TEST_HMAC_K2")
        monkeypatch.delenv("AUDITLOCK_TEST_HMAC")
        assert key_id_of(service.emit(ALICE, "a")["payload"]["email"]) == "k3"

    def test_reader_without_an_old_key_fails_closed(self, service: RotatingService,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A query missing one key of the ring refuses to run (naming the source) instead of finding only part."""
        service.configure(ROTATED)
        monkeypatch.delenv("AUDITLOCK_TEST_HMAC")
        status, out, err = service.run("query", "--hmac-field", f"email={ALICE}",
                                       "--cache-dir", str(service.root / "cache"))
        assert (status, out) == (1, "")
        assert "[hmac] key_env: environment variable AUDITLOCK_TEST_HMAC is not set" in err
        assert HMAC_KEY not in err
        assert K2_KEY not in err


class TestKeyringConfig:
    def test_check_config_warns_about_a_missing_older_key(self, service: RotatingService,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """check-config passes and warns about an older key missing here, saying who needs it."""
        service.configure(ROTATED_TWICE)
        monkeypatch.delenv("TEST_HMAC_K2")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["check-config", str(service.path)]) == 0
        assert ("warning: [hmac.keys.k2] key_env: environment variable TEST_HMAC_K2 is not set or empty; set it to "
                "the hmac secret (at least 16 characters) (an older key: needed by `auditlock hash` and "
                "`query --hmac-field`") in out.getvalue()

    def test_keyring_loads_every_key_current_first(self, tmp_path: Path, keys: None) -> None:
        """`[hmac.keys]` + current, with the legacy key kept: three keys, current first, legacy as None."""
        config = build_config(config_dict(tmp_path / "spool", hmac={
            "key_env": "AUDITLOCK_TEST_HMAC", "current": "k2", "keys": {"k2": {"key_env": "TEST_HMAC_K2"}}}))
        ring = HmacKeyring.load(config.hmac)
        assert ring.current == "k2"
        assert list(ring.keys) == ["k2", None]
        assert ring.hash(ALICE) == hmac_value(K2_KEY.encode(), ALICE, "k2")

    @pytest.mark.parametrize(("hmac", "message"), [
        ({"keys": {"k1": {"key_env": "X"}}}, "[hmac] current is required with [hmac.keys]"),
        ({"current": "k9", "keys": {"k1": {"key_env": "X"}}}, '[hmac] current = "k9" names no key in [hmac.keys]'),
        ({"current": "k:1", "keys": {"k:1": {"key_env": "X"}}}, "[hmac.keys] 'k:1' is not a valid key id"),
        ({"current": "k1", "keys": {"k1": {}}}, "[hmac.keys.k1] needs exactly one of key_env or key_file"),
        ({"current": "k1", "keys": {"k1": {"key_env": "X", "key_file": "f"}}},
         "[hmac.keys.k1] needs exactly one of key_env or key_file"),
        ({"current": "k1", "keys": {"k1": {"key_env": "X", "secret": "s"}}}, "unknown key 'secret' in [hmac.keys.k1]"),
    ])
    def test_bad_keyring_is_named(self, tmp_path: Path, hmac: dict[str, Any], message: str) -> None:
        """A keyring mistake is a ConfigError naming the table and the fix."""
        with pytest.raises(ConfigError) as info:
            build_config(config_dict(tmp_path / "spool", hmac=hmac))
        assert message in str(info.value)

    def test_key_id_of_reads_both_forms(self) -> None:
        """A stored value's key id: the id of the keyed form, None for the legacy form; anything else is refused."""
        assert key_id_of(hmac_value(b"k" * 16, "x", "2027-a")) == "2027-a"
        assert key_id_of(hmac_value(b"k" * 16, "x")) is None
        with pytest.raises(ValueError, match="not a hmac-sha256: value"):
            key_id_of("hmac-sha256:zz")
