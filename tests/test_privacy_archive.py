"""Erasure end to end on real S3 servers (moto, RADOS Gateway): sealed values in the archive,
`auditlock subject export`, `auditlock erase`, and what query, the admin view's reader and verify show afterwards."""

from __future__ import annotations

import contextlib
import gzip
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditlock
from auditlock.archive.timerange import ALL_TIME
from auditlock.cli import main
from auditlock.config import Config, load_config
from auditlock.handler.core import AuditCore
from auditlock.privacy.crypto import ERASED, PREFIX, PREFIX_V2
from auditlock.privacy.keystore import open_store
from auditlock.query.filters import EventFilter
from auditlock.ui import present
from auditlock.ui.reader import ArchiveReader
from tests.support.archive_env import use_credentials
from tests.support.privacy_env import MARKER, erasable_doc, iter_bytes, write_toml
from tests.support.privacy_v1 import v1_core
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.shipping import drain_or_fail


def run(*argv: str) -> tuple[int, str, str]:
    """`auditlock ARGV` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@dataclass
class ErasedArchive:
    """The story: Customer:42 and :43 and Order:7 (of customer 42) shipped; 42 exported, then erased."""

    root: Path
    config_path: Path
    endpoint: S3Endpoint
    bucket: str
    spool_bytes: list[tuple[Path, bytes]]
    export_before: list[dict[str, Any]]
    erase_output: str

    @property
    def config(self) -> Config:
        """The loaded config."""
        return load_config(self.config_path)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        """`auditlock COMMAND --config ... ARGV` (a cache dir of its own for query and export)."""
        command, *rest = argv
        extra = ["--cache-dir", str(self.root / "cache")] if command in ("query", "subject") else []
        if command == "subject":
            return run(command, rest[0], "--config", str(self.config_path), *extra, *rest[1:])
        return run(command, "--config", str(self.config_path), *extra, *rest)

    def query(self, *args: str) -> list[dict[str, Any]]:
        """The events `auditlock query --format jsonl ARGS` prints."""
        status, out, err = self.cli("query", "--format", "jsonl", *args)
        assert status == 0, err
        return [orjson.loads(line) for line in out.splitlines()]

    def object_bytes(self) -> list[tuple[str, bytes]]:
        """Every object under the prefix, events objects gunzipped."""
        client = self.endpoint.client()
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="audit/"):
            for obj in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                found.append((obj["Key"], gzip.decompress(body) if obj["Key"].endswith(".gz") else body))
        return found


def emit_story(config: Config) -> None:
    """The events of the story, through the real handler core: first `customer.created` as the handler wrote it
    before `enc:v2` (`enc:v1:` values, the old sealer), then the rest as it writes them now."""
    old = v1_core(AuditCore(config))
    with auditlock.actor("user:1"):
        for customer in ("42", "43"):
            old.emit("customer.created", {"target_type": "Customer", "target_id": customer,
                                          "name": f"{MARKER} v1 {customer}", "email": f"{MARKER}-v1@example.com"})
    old.writer.close()
    core = AuditCore(config)
    with auditlock.actor("user:1"):
        for customer in ("42", "43"):
            core.emit("customer.updated", {"target_type": "Customer", "target_id": customer, "tier": "gold",
                                           "name": f"{MARKER} {customer}",
                                           "before": {"email": f"old-{customer}@example.com"},
                                           "after": {"email": f"{MARKER}-{customer}@example.com"}})
        core.emit("order.created", {"target_type": "Order", "target_id": "7", "customer_id": 42, "status": "new",
                                    "shipping_address": f"{MARKER} Street 1"})
    core.writer.close()


@pytest.fixture(scope="module", params=["moto", pytest.param("rgw", marks=pytest.mark.rgw)], ids=["moto", "rgw"])
def erased(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErasedArchive]:
    """The story shipped to each S3 server, Customer:42 exported then erased, the privacy events shipped too."""
    endpoint: S3Endpoint = request.getfixturevalue(f"{request.param}_s3")
    root = tmp_path_factory.mktemp("erasure")
    bucket = make_lock_bucket(endpoint.client(), f"auditlock-erasure-{uuid.uuid4().hex[:12]}")
    doc = erasable_doc(root / "spool", {"store": "file", "dir": str(root / "keys")},
                       sink={"bucket": bucket, "prefix": "audit", "endpoint_url": endpoint.url,
                             "region": endpoint.region, "batch_max_age_s": 0.2},
                       agent={"http_port": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.5})
    with pytest.MonkeyPatch.context() as patch:
        use_credentials(patch, endpoint)
        path = write_toml(root / "auditlock.toml", doc)
        config = load_config(path)
        emit_story(config)
        spool_bytes = list(iter_bytes(root / "spool"))
        assert drain_or_fail(config).segments_left == 0
        env = ErasedArchive(root, path, endpoint, bucket, spool_bytes, [], "")
        status, out, err = env.cli("subject", "export", "--subject", "Customer:42", "--actor", "user#7",
                                   "--request-id", "R-17")
        assert status == 0, err
        env.export_before = [orjson.loads(line) for line in out.splitlines()]
        status, env.erase_output, err = env.cli("erase", "--subject", "Customer:42", "--actor", "user#7",
                                                "--reason", "erasure request R-17", "--request-id", "R-17")
        assert status == 0, err
        assert drain_or_fail(config).segments_left == 0
        yield env


class TestNothingInPlaintext:
    def test_marker_in_no_spool_byte(self, erased: ErasedArchive) -> None:
        """Before shipping, no byte of any file in the spool directory holds an erasable value."""
        assert erased.spool_bytes
        assert [str(p) for p, data in erased.spool_bytes if MARKER.encode() in data] == []

    def test_marker_in_no_archive_byte(self, erased: ErasedArchive) -> None:
        """No object of the archive (events gunzipped, digests) holds an erasable value."""
        objects = erased.object_bytes()
        assert any(key.endswith(".gz") for key, _ in objects)
        assert [key for key, data in objects if MARKER.encode() in data] == []


class TestExport:
    def test_export_holds_the_subjects_events_decrypted(self, erased: ErasedArchive) -> None:
        """The access export has the subject's own events and its orders', decrypted; not other subjects'."""
        shown = {(e["target_type"], e["target_id"]): e["payload"] for e in erased.export_before}
        assert set(shown) == {("Customer", "42"), ("Order", "7")}
        assert shown["Customer", "42"]["changes"]["email"] == ["old-42@example.com", f"{MARKER}-42@example.com"]
        assert shown["Order", "7"]["shipping_address"] == f"{MARKER} Street 1"

    def test_export_and_erase_are_recorded(self, erased: ErasedArchive) -> None:
        """`privacy.subject_exported` and `privacy.subject_erased` are in the archive with actor and request."""
        recorded = {e["event_type"]: e for e in erased.query("--type", "privacy.*")}
        assert set(recorded) == {"privacy.subject_exported", "privacy.subject_erased"}
        for event in recorded.values():
            assert event["actor_id"] == "user#7"
            assert (event["payload"]["subject"], event["payload"]["request_id"]) == ("Customer:42", "R-17")
        assert recorded["privacy.subject_erased"]["payload"]["reason"] == "erasure request R-17"

    def test_export_after_erasure_shows_erased(self, erased: ErasedArchive) -> None:
        """Exported again after the erasure, the subject's values read `[erased]`."""
        status, out, err = erased.cli("subject", "export", "--subject", "Customer:42", "--actor", "user#7")
        assert status == 0, err
        [customer] = [orjson.loads(line) for line in out.splitlines()
                      if orjson.loads(line)["event_type"] == "customer.updated"]
        assert customer["payload"]["changes"]["email"] == [ERASED, ERASED]
        assert customer["payload"]["tier"] == "gold"


class TestAfterErasure:
    def test_no_key_of_the_subject_remains(self, erased: ErasedArchive) -> None:
        """The store has no key for Customer:42, and no file of it names the subject."""
        store = open_store(erased.config.erasure)
        assert store.subject_key("Customer:42") is None
        assert store.subject_key("Customer:43") is not None
        assert [p for p, data in iter_bytes(erased.root / "keys") if b"Customer:42" in data] == []

    def test_query_shows_the_subject_erased_and_others_readable(self, erased: ErasedArchive) -> None:
        """`auditlock query` shows Customer:42's values as `[erased]`, Customer:43's and plain fields as written."""
        shown = {e["target_id"]: e["payload"] for e in erased.query("--type", "customer.updated")}
        assert shown["42"] == {"name": ERASED, "tier": "gold", "changes": {"email": [ERASED, ERASED]}}
        assert shown["43"]["changes"]["email"] == ["old-43@example.com", f"{MARKER}-43@example.com"]
        assert shown["43"]["name"] == f"{MARKER} 43"
        [order] = erased.query("--target-type", "Order")
        assert order["payload"] == {"status": "new", "shipping_address": ERASED, "customer_id": 42}

    def test_table_output_shows_erased(self, erased: ErasedArchive) -> None:
        """The terminal table shows `[erased]` too, and no finding is noted."""
        status, out, err = erased.cli("query", "--target-type", "Customer", "--target-id", "42")
        assert status == 0, err
        assert ERASED in out
        assert "finding" not in err

    def test_admin_view_reader_shows_erased(self, erased: ErasedArchive) -> None:
        """The admin view's reader (event page and export) shows the erased subject's values as `[erased]`."""
        reader = ArchiveReader(erased.config, erased.root / "view-cache")
        page = reader.search(EventFilter(target_type="Customer", target_id="42", types=("customer.updated",),
                                         time_range=ALL_TIME), 10).page
        [row] = page.events
        event = present.present(row)
        assert [(c.field, c.before, c.after) for c in present.changes(event["payload"])] == [
            ("email", ERASED, ERASED)]
        found = reader.event(row["event_id"])
        assert found is not None
        assert ERASED in present.summary(present.present(found)["payload"])
        out = io.StringIO()
        reader.export(EventFilter(target_type="Customer", time_range=ALL_TIME), "jsonl", out)
        assert out.getvalue().count(ERASED) == 5  # 3 in customer.updated (v2), 2 in customer.created (v1)
        assert MARKER in out.getvalue()  # Customer:43's values stay readable

    def test_archive_verifies_clean(self, erased: ErasedArchive) -> None:
        """`auditlock verify` finds nothing: the erasure changed no byte of the archive."""
        status, out, err = erased.cli("verify", "--format", "json")
        assert status == 0, out + err
        assert orjson.loads(out)["findings"] == []

    def test_erase_reports_what_it_destroyed(self, erased: ErasedArchive) -> None:
        """The command names the key it destroyed and the event that records it; a second run destroys none."""
        assert "destroyed 1 key(s)" in erased.erase_output
        status, out, err = erased.cli("erase", "--subject", "Customer:42", "--actor", "user#7", "--reason", "again")
        assert status == 0, err
        assert "has no key in the store" in out


class TestV1Archive:
    def test_both_forms_are_in_the_archive(self, erased: ErasedArchive) -> None:
        """The archive holds `enc:v1:` values (written by the old code) and `enc:v2:` ones (written now)."""
        events = b"".join(data for key, data in erased.object_bytes() if key.endswith(".gz"))
        assert PREFIX.encode() in events
        assert PREFIX_V2.encode() in events

    def test_export_before_erasure_holds_v1_values_decrypted(self, erased: ErasedArchive) -> None:
        """The access export found the subject's v1 event (by its key id) and decrypted its values."""
        [created] = [e for e in erased.export_before if e["event_type"] == "customer.created"]
        assert created["target_id"] == "42"
        assert created["payload"] == {"name": f"{MARKER} v1 42", "email": f"{MARKER}-v1@example.com"}

    def test_query_shows_erased_v1_values_and_others_readable(self, erased: ErasedArchive) -> None:
        """`auditlock query` shows the erased subject's v1 values as `[erased]`, another subject's decrypted."""
        status, _, err = erased.cli("query", "--type", "customer.created")
        assert status == 0, err
        assert "finding" not in err
        shown = {e["target_id"]: e["payload"] for e in erased.query("--type", "customer.created")}
        assert shown["42"] == {"name": ERASED, "email": ERASED}
        assert shown["43"] == {"name": f"{MARKER} v1 43", "email": f"{MARKER}-v1@example.com"}
