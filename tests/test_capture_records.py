"""Capture's record path (`capture.records`): the records of captured changes are the record builder's, byte for byte.

Real PostgreSQL with `wal_level = logical`: real changes are committed, `--setup` run as a subprocess, the slot's
pgoutput messages peeked, and the same messages recorded twice — once with every event built by the record
builder (`AuditCore.build`, the path every application event takes), once through `CapturedRecords` — and the
serialised records compared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import psycopg
import pytest

from auditlock.capture import database
from auditlock.capture.pgoutput import decode
from auditlock.capture.position import START
from auditlock.capture.recorder import ChangeRecorder
from auditlock.capture.records import CapturedRecords
from auditlock.capture.service import Capture
from auditlock.capture.tables import captured_tables, with_catalog
from auditlock.config import Config, build_config
from auditlock.errors import EventError
from auditlock.handler.context import actor, job
from auditlock.handler.core import AuditCore
from auditlock.integrations.postgres import bind_transaction
from tests.conftest import config_dict
from tests.support.capture_env import DSN_ENV, CaptureEnv
from tests.support.privacy_env import write_toml

CUSTOMERS = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, email text, tier smallint, vip boolean)"
LINES = "CREATE TABLE public.order_lines (order_id integer, line integer, sku text, qty integer, PRIMARY KEY " \
        "(order_id, line))"


@pytest.fixture(autouse=True)
def no_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> ModuleType | None:
    """As in `auditlock capture`'s own process, which never imports OpenTelemetry: another test of this pytest
    process may have (tests/test_integrations_otel.py), and then every record carries trace ids and takes the
    builder (`TestOpenTelemetry` holds that case). The module as imported before the test, if it was."""
    original = sys.modules.get("opentelemetry.trace")
    monkeypatch.delitem(sys.modules, "opentelemetry.trace", raising=False)
    return original


def capture_doc(env: CaptureEnv) -> dict[str, Any]:
    """Three mapped tables: hmac'd and plain fields, erasable fields, a composite key and a column mapping."""
    targets = {
        "Order": {"table": "public.orders", "fields": ["status", "total", "note"], "hmac": ["secret"],
                  "retention": "orders"},
        "Customer": {"table": "public.customers", "fields": ["name", "email", "tier", "vip"],
                     "erasable": ["name", "email"]},
        "OrderLine": {"table": "public.order_lines", "fields": ["sku", "quantity"], "columns": {"qty": "quantity"}},
        "User": {}, "ApiKey": {},
    }
    return config_dict(env.spool, targets=targets, erasure={"store": "file", "dir": str(env.root / "keys")},
                       events={"include": ["order.*", "customer.*", "order_line.*", "auditlock.*"]},
                       capture={"dsn_env": DSN_ENV, "slot": env.slot, "publication": "auditlock_pub",
                                "http_port": 0})


def set_up(env: CaptureEnv) -> Config:
    """Create the extra tables, write the config and run `--setup`; the validated config."""
    env.sql(CUSTOMERS, LINES)
    doc = capture_doc(env)
    write_toml(env.config_path, doc)
    env.dsn_for_capture = env.dsn
    env.setup()
    return build_config(doc)


def commit_changes(env: CaptureEnv) -> None:
    """Inserts, updates (changed, unchanged, to and from NULL), deletes, truncates, schema changes, attributions."""
    with psycopg.connect(env.dsn) as conn:
        for first in (1, 4):  # two transactions of the same attribution: a template outlives its transaction
            conn.execute("INSERT INTO orders VALUES (%s, 'new', 10, 's1', NULL), (%s, 'new', NULL, NULL, 'n'), "
                         "(%s, 'new', 5, 's3', '')", (first, first + 1, first + 2))
            conn.commit()
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")  # total and secret unchanged
        conn.execute("UPDATE orders SET total = NULL, note = 'x', secret = 's9' WHERE id = 1")
        conn.execute("UPDATE orders SET total = 7, note = NULL WHERE id = 2")
        conn.execute("UPDATE orders SET status = status WHERE id = 3")  # nothing allowlisted changed
        conn.execute("DELETE FROM orders WHERE id = 2")
        conn.commit()
        with actor("user:82", ip="203.0.113.9", request_id="req-1"), conn.transaction():
            conn.execute("UPDATE orders SET status = 'sent' WHERE id = 3")  # the session's attribution
            bind_transaction(conn)
            conn.execute("UPDATE orders SET status = 'sent' WHERE id = 4")  # the bound actor's, same transaction
        with job("nightly-import", run_id="run-9"), conn.transaction():
            bind_transaction(conn)
            conn.execute("INSERT INTO order_lines VALUES (1, 1, 'sku-1', 2), (1, 2, 'sku:2%', NULL)")
            conn.execute("UPDATE order_lines SET qty = 3")
        conn.execute("SELECT pg_logical_emit_message(true, 'auditlock.actor', '{\"actor_id\": 5}')")
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com', 2, true), "
                     "(2, NULL, 'bo@example.com', NULL, false)")
        conn.commit()
        conn.execute("UPDATE customers SET tier = 3, name = 'Anne' WHERE id = 1")
        conn.execute("DELETE FROM customers WHERE id = 2")
        conn.commit()
        conn.execute("ALTER TABLE orders ADD COLUMN extra text")
        conn.execute("INSERT INTO orders VALUES (9, 'new', 1, NULL, NULL, 'e')")
        conn.commit()
        conn.execute("TRUNCATE orders, order_lines")
        conn.commit()


def peeked(env: CaptureEnv, config: Config) -> tuple[dict[str, Any], list[bytes]]:
    """The mapped tables with their catalog facts, and every pgoutput message the slot holds."""
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        tables = captured_tables(config)
        tables = with_catalog(tables, database.primary_keys(conn, tables), database.table_oids(conn, tables))
        database.flush_committed(conn)
        messages = list(database.peek(conn, env.slot, "auditlock_pub", database.flushed_lsn(conn), 1_000_000))
    return tables, messages


def record(tables: Mapping[str, Any], messages: list[bytes],
           build: Callable[[str, dict[str, Any], tuple[Any, ...]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The records `build` makes of the messages' events, in order."""
    records: list[dict[str, Any]] = []
    recorder = ChangeRecorder(tables, lambda kind, fields, shared: records.append(build(kind, fields, shared)),
                              START)
    for message in messages:
        recorder.take(decode(message))
    return records


def unsealed(line: bytes) -> bytes:
    """A serialised record with every sealed value (`enc:…`, random each time) replaced by a marker."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return "<sealed>" if isinstance(value, str) and value.startswith("enc:") else value
    return orjson.dumps(strip(orjson.loads(line)))


def counted_records(config: Config, tables: Mapping[str, Any]) -> tuple[AuditCore, CapturedRecords, list[str]]:
    """A core for `config` (capture's payload fields registered, as `auditlock capture` does) and template records
    over `tables` whose builder calls are listed, one event type each."""
    Capture(config, serve_http=False)
    core = AuditCore(config)
    calls: list[str] = []

    def counted(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        calls.append(kind)
        return core.build(kind, fields)

    return core, CapturedRecords(counted, core.changes, tables), calls


def both_paths(capture_env: CaptureEnv) -> tuple[list[bytes], list[bytes], int]:
    """The serialised records of the builder path and of the template path, and how often the latter built."""
    config = set_up(capture_env)
    commit_changes(capture_env)
    tables, messages = peeked(capture_env, config)
    core, records, calls = counted_records(config, tables)
    built = [orjson.dumps(r) for r in record(tables, messages, lambda kind, fields, _shared: core.build(kind, fields))]
    templated = [orjson.dumps(r) for r in record(tables, messages, records.build)]
    return built, templated, len(calls)


class TestSameRecords:
    """Captured changes built from templates serialise to the builder's bytes, every rule kept."""

    def test_every_kind_of_change_is_the_builders_record(self, capture_env: CaptureEnv) -> None:
        """Inserts, updates, deletes, truncates, schema changes, hmac, composite keys, attributions: same bytes."""
        built, templated, _ = both_paths(capture_env)
        assert len(built) == 25
        plain = [(b, t) for b, t in zip(built, templated, strict=True) if b"enc:" not in b]
        assert len(plain) == 21
        assert all(b == t for b, t in plain)
        texts = b"\n".join(built)
        for expected in (b'"hmac-sha256:', b'"attribution_problem"', b'"job_run_id":"run-9"', b'"actor_id":"user:82"',
                         b'"target_id":"1:2"', b'.truncated"', b'.schema_changed"', b'"quantity":[2,3]',
                         b'"vip":[null,true]', b'"retention":"orders"'):
            assert expected in texts, expected

    def test_erasable_values_are_sealed_by_the_builder(self, capture_env: CaptureEnv) -> None:
        """A table with erasable fields takes the builder every time: its values sealed, the rest the same."""
        built, templated, _ = both_paths(capture_env)
        sealed = [(b, t) for b, t in zip(built, templated, strict=True) if b"enc:" in b]
        assert len(sealed) == 4
        assert all(b"enc:" in t and b"ann@example.com" not in t for _, t in sealed)
        assert [unsealed(b) for b, _ in sealed] == [unsealed(t) for _, t in sealed]

    def test_templates_spare_the_builder(self, capture_env: CaptureEnv) -> None:
        """The builder runs once per (event type, attribution) of a plain table, not once per row."""
        built, _, calls = both_paths(capture_env)
        assert calls < len(built) - 8


class TestHostileValues:
    """A value the template path cannot copy as it is gets the builder's own rule: the same record or refusal."""

    @staticmethod
    def records_of(tmp_path: Path) -> tuple[AuditCore, CapturedRecords, list[str]]:
        """A core for a config mapping `public.orders` (field `total`), and template records counting its builds."""
        config = build_config(config_dict(tmp_path / "spool", targets={
            "Order": {"table": "public.orders", "fields": ["total"]}, "User": {}, "ApiKey": {}}))
        return counted_records(config, captured_tables(config))

    @staticmethod
    def fields(total: Any, target_id: Any = "1") -> dict[str, Any]:
        """A captured insert of an order whose `total` is `total`."""
        return {"target_type": "Order", "target_id": target_id, "after": {"total": total}, "actor_id": "db:app",
                "actor_type": "db", "commit_lsn": "0/1", "xid": 7, "committed_at": "2026-01-01T00:00:00.000000Z",
                "table": "public.orders", "change_index": 0}

    SHARED = (("actor_id", "db:app"), ("actor_type", "db"))

    def test_out_of_range_integer_is_encoded_as_the_builder_does(self, tmp_path: Path) -> None:
        """An integer beyond 64 bits (a forged int8 text) in a templated row: the builder's record, byte for byte."""
        core, records, calls = self.records_of(tmp_path)
        records.build("order.created", self.fields(1), self.SHARED)
        huge = records.build("order.created", self.fields(2**70), self.SHARED)
        assert calls == ["order.created"]
        assert orjson.dumps(huge) == orjson.dumps(core.build("order.created", self.fields(2**70)))

    def test_unencodable_value_is_refused_as_the_builder_refuses_it(self, tmp_path: Path) -> None:
        """A value no JSON can hold raises the builder's EventError naming the field, template or not."""
        core, records, _ = self.records_of(tmp_path)
        records.build("order.created", self.fields(1), self.SHARED)
        with pytest.raises(EventError, match="total") as templated:
            records.build("order.created", self.fields(object()), self.SHARED)
        with pytest.raises(EventError, match="total") as built:
            core.build("order.created", self.fields(object()))
        assert str(templated.value).split(":")[0] == str(built.value).split(":")[0]

    def test_target_id_that_is_not_a_string_takes_the_builder(self, tmp_path: Path) -> None:
        """A target id of another type is the builder's to judge, not copied into a template."""
        core, records, calls = self.records_of(tmp_path)
        records.build("order.created", self.fields(1), self.SHARED)
        odd = records.build("order.created", self.fields(1, target_id=5), self.SHARED)
        assert calls == ["order.created", "order.created"]
        assert odd == core.build("order.created", self.fields(1, target_id=5))


class TestOpenTelemetry:
    """In a process that imported OpenTelemetry every captured row takes the builder (trace ids vary per event)."""

    def test_every_row_takes_the_builder(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         no_opentelemetry: ModuleType | None) -> None:
        """With `opentelemetry.trace` imported no template serves: the builder runs for each row."""
        if no_opentelemetry is None:
            pytest.importorskip("opentelemetry.trace")  # a first import: it stays imported, as any test's does
        else:
            monkeypatch.setitem(sys.modules, "opentelemetry.trace", no_opentelemetry)  # the same module object
        _core, records, calls = TestHostileValues.records_of(tmp_path)
        for total in (1, 2, 3):
            records.build("order.created", TestHostileValues.fields(total), TestHostileValues.SHARED)
        assert calls == ["order.created"] * 3
