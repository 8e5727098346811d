"""OCSF: every event type maps to a record valid under the published OCSF schema (`ocsf-json-schema`, not a
hand-written one); `auditlock query --format ocsf`, the view's OCSF export and the Athena view `<table>_ocsf`
give the same records, each leading back to its archived original."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import sqlglot
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
from sqlglot import exp

from auditlock.cli import main
from auditlock.handler.event_types import RECORD_ACTIONS, STANDARD_FIELDS
from auditlock.integrations.sqlalchemy import ATTEMPT_OF, SUCCESS_ACTIONS
from auditlock.query import ocsf
from auditlock.query.engine import AuditDatabase
from auditlock.query.ocsf_view import create_ocsf_view
from auditlock.ui.access_log import EXPORTED, LOGIN_FAILED_SUMMARY, SEARCHED, VIEWED
from tests.support.athena_env import duckdb_sql
from tests.support.query_env import QueryEnv
from tests.support.ui_env import UiEnv

SCHEMA_CLASS = {3004: "entity_management", 3002: "authentication", 3001: "account_change", 6003: "api_activity"}
ALL_TIME = {"since": "2000-01-01", "until": "2100-01-01"}
JSON_TEXT_COLUMNS = ("entity.data", "entity_result.data", "unmapped.auditlock.payload", "resources")


@functools.cache
def validator(class_uid: int) -> jsonschema.Draft202012Validator:
    """A validator for one OCSF class, from the published schema of `ocsf.OCSF_VERSION`."""
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=ocsf.OCSF_VERSION))
    return jsonschema.Draft202012Validator(schema.get_class_schema(SCHEMA_CLASS[class_uid]))


def assert_valid(record: dict[str, Any]) -> None:
    """`record` validates against its class's schema (every error listed if not)."""
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator(record["class_uid"]).iter_errors(record)]
    assert not errors, errors


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    """An event as the archive holds it (payload parsed), with overridable fields."""
    base: dict[str, Any] = {
        "schema": "auditlock/1", "event_id": "01936b6e-0000-7000-8000-000000000001", "event_type": event_type,
        "occurred_at": "2026-11-26T20:14:50.123456Z", "actor_id": "user:7", "actor_type": "user",
        "actor_ip": "203.0.113.9", "target_type": "Order", "target_id": "1001", "payload": {},
        "service": "shop", "host": "web-1", "retention": "standard", "trace_id": None, "span_id": None,
        "writer": "w1", "seq": 3, "prev": "0" * 64,
    }
    return {**base, **fields}


def every_event_type() -> list[str]:
    """The standard types, the view's own, and every record-mutation form the integrations write."""
    records = [f"order.{a}" for a in (*RECORD_ACTIONS, *SUCCESS_ACTIONS, *ATTEMPT_OF.values(), "truncated")]
    return sorted({*STANDARD_FIELDS, SEARCHED, VIEWED, EXPORTED, LOGIN_FAILED_SUMMARY, *records,
                   "order.shipped", "auditlock.batch_set_aside"})


class TestEveryTypeIsValidOcsf:
    @pytest.mark.parametrize("event_type", every_event_type())
    def test_with_actor_address_and_target(self, event_type: str) -> None:
        """Each type, with an actor, a client address and a target, is a valid record of its class."""
        record = ocsf.to_ocsf(event(event_type, payload={"changes": {"status": ["new", "paid"]}}),
                              product_version="1.0")
        assert_valid(record)

    @pytest.mark.parametrize("event_type", every_event_type())
    def test_without_actor_address_or_target(self, event_type: str) -> None:
        """Each type stays valid with none of the optional parts (an anonymous, local, untargeted event)."""
        bare = event(event_type, actor_id=None, actor_type=None, actor_ip=None, target_type=None, target_id=None,
                     payload=None, host=None)
        assert_valid(ocsf.to_ocsf(bare, product_version="1.0"))

    @pytest.mark.parametrize("actor_type", ["user", "svc", "job", "db", "api_key"])
    def test_every_actor_kind(self, actor_type: str) -> None:
        """Users, services, jobs and other actor kinds give a valid `actor.user`."""
        record = ocsf.to_ocsf(event("order.updated", actor_id=f"{actor_type}:1", actor_type=actor_type),
                              product_version="1.0")
        assert_valid(record)
        assert record["actor"]["user"]["uid"] == f"{actor_type}:1"


class TestMapping:
    def test_a_mutation_is_entity_management_with_before_and_after(self) -> None:
        """An update is Entity Management `Update`; `entity` holds the before-values, `entity_result` the after."""
        record = ocsf.to_ocsf(event("order.updated", payload={"changes": {"status": ["new", "paid"],
                                                                           "total": [10, 12]}}),
                              product_version="1.0")
        assert (record["class_uid"], record["activity_id"], record["type_uid"]) == (3004, 3, 300403)
        assert record["entity"] == {"type": "Order", "uid": "1001", "data": {"status": "new", "total": 10}}
        assert record["entity_result"] == {"type": "Order", "uid": "1001", "data": {"status": "paid", "total": 12}}

    def test_an_attempt_that_rolled_back_is_a_failure(self) -> None:
        """`order.delete_attempted` is a failed Delete."""
        record = ocsf.to_ocsf(event("order.delete_attempted"), product_version="1.0")
        assert (record["class_uid"], record["activity_id"], record["status_id"]) == (3004, 4, ocsf.FAILURE)

    @pytest.mark.parametrize(("action", "attempt"), sorted(ATTEMPT_OF.items()))
    def test_every_integration_attempt_form_is_the_failed_activity(self, action: str, attempt: str) -> None:
        """Each `*_attempted` form the ORM integrations write is the failed form of its action's activity."""
        done, tried = (ocsf.mapping_of(f"order.{a}") for a in (action, attempt))
        assert (tried.ocsf_class, tried.activity_id) == (done.ocsf_class, done.activity_id)
        assert (done.status_id, tried.status_id) == (ocsf.SUCCESS, ocsf.FAILURE)

    def test_a_failed_login_is_a_failed_logon_of_the_target_account(self) -> None:
        """auth.login_failed → Authentication Logon, Failure, `user` the account tried."""
        record = ocsf.to_ocsf(event("auth.login_failed", actor_id=None, target_type="User", target_id="42"),
                              product_version="1.0")
        assert (record["class_uid"], record["activity_id"], record["status_id"]) == (3002, 1, ocsf.FAILURE)
        assert record["user"] == {"uid": "User:42", "type": "User"}
        assert record["actor"] == {"app_name": "shop"}

    def test_a_role_grant_attaches_a_policy(self) -> None:
        """access.role_granted → Account Change `Attach Policy` with the role as the policy's name."""
        record = ocsf.to_ocsf(event("access.role_granted", payload={"role": "admin"}), product_version="1.0")
        assert (record["class_uid"], record["activity_id"]) == (3001, 7)
        assert record["policy"] == {"name": "admin"}

    def test_a_sensitive_read_is_an_api_read(self) -> None:
        """data.accessed → API Activity `Read` with the target as the resource."""
        record = ocsf.to_ocsf(event("data.accessed"), product_version="1.0")
        assert (record["class_uid"], record["activity_id"]) == (6003, 2)
        assert record["resources"] == [{"type": "Order", "uid": "1001"}]

    def test_the_record_leads_back_to_the_original(self) -> None:
        """`metadata.uid` is the event id; the time is milliseconds; what OCSF has no place for is unmapped."""
        record = ocsf.to_ocsf(event("order.shipped", payload={"carrier": "dhl"}), product_version="2.0")
        assert record["metadata"]["uid"] == "01936b6e-0000-7000-8000-000000000001"
        assert record["metadata"]["product"] == {"name": "auditlock", "vendor_name": "auditlock", "version": "2.0"}
        assert record["time"] == 1795724090123
        assert record["unmapped"]["auditlock"]["payload"] == {"carrier": "dhl"}
        assert record["api"]["operation"] == "order.shipped"

    def test_changes_of_another_shape_give_empty_sides(self) -> None:
        """A `changes` that is not all [before, after] lists (hostile or foreign data) maps to empty data."""
        record = ocsf.to_ocsf(event("order.updated", payload={"changes": {"a": "x", "b": [1, 2]}}),
                              product_version="1.0")
        assert record["entity"]["data"] == {}
        assert record["entity_result"]["data"] == {}


class TestQueryFormat:
    def test_every_archived_event_as_ocsf(self, creds: QueryEnv, tmp_path: Path) -> None:
        """`auditlock query --format ocsf` writes one valid record per archived event, by event id."""
        code, out, err = creds.query("--format", "ocsf", "--since", "2000-01-01", cache=tmp_path)
        assert code == 0, err
        records = [orjson.loads(line) for line in out.splitlines()]
        expected = {e["event_id"] for e in creds.query_events("--since", "2000-01-01", cache=tmp_path)}
        assert {r["metadata"]["uid"] for r in records} == expected
        for record in records:
            assert_valid(record)

    def test_ocsf_and_sql_do_not_combine(self, creds: QueryEnv, tmp_path: Path) -> None:
        """--format ocsf maps whole events: with --sql it is a usage error (exit 2)."""
        code, _, err = creds.query("--format", "ocsf", "--sql", "SELECT 1", cache=tmp_path)
        assert code == 2
        assert "--format: ocsf maps whole events" in err


@pytest.fixture
def ui(story: QueryEnv, tmp_path: Path) -> UiEnv:
    """The admin view over the story archive, with a spool of its own."""
    return UiEnv(story, tmp_path / "ui-cache", tmp_path / "ui-spool")


class TestViewExport:
    def test_ocsf_export_is_recorded(self, ui: UiEnv) -> None:
        """The admin view's OCSF export downloads valid records and is itself recorded with its format."""
        with ui.client() as client:
            response = client.get("/export.ocsf", params=ALL_TIME)
        assert response.status_code == 200
        assert response.headers["content-disposition"].endswith('.ocsf.jsonl"')
        records = [orjson.loads(line) for line in response.text.splitlines()]
        assert records
        for record in records:
            assert_valid(record)
        [exported] = ui.recorded(EXPORTED)
        assert exported["payload"]["format"] == "ocsf"
        assert exported["payload"]["results"] == len(records)


class TestAthenaView:
    def test_the_ddl_adds_the_view(self, creds: QueryEnv, capsys: pytest.CaptureFixture[str]) -> None:
        """`athena-ddl --ocsf` prints the database, table, unique view and OCSF view, all valid Athena SQL."""
        assert main(["athena-ddl", "--config", str(creds.archive.config_path), "--ocsf"]) == 0
        statements = sqlglot.parse(capsys.readouterr().out, read="athena")
        names = [s.find(exp.Table).name for s in statements if s]
        assert names == ["auditlock", "events", "events_unique", "events_ocsf"]

    def test_the_view_maps_like_the_query(self, story: QueryEnv, athena: AuditDatabase) -> None:
        """Every row of `events_ocsf` (run on DuckDB) equals `to_ocsf` of the same archived event."""
        athena.connection.execute(duckdb_sql(create_ocsf_view("9.9", database="auditlock", table="events")))
        cursor = athena.connection.execute('SELECT * FROM auditlock.events_ocsf')
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        events = {e["event_id"]: e for e in _archived(athena)}
        assert len(rows) == len(events) > 10
        for row in rows:
            expected = ocsf.to_ocsf(events[row["metadata.uid"]], product_version="9.9")
            assert _nested(row) == expected, row["metadata.uid"]


def _archived(database: AuditDatabase) -> list[dict[str, Any]]:
    cursor = database.connection.execute("SELECT * FROM auditlock.events_unique")
    columns = [d[0] for d in cursor.description]
    out = []
    for row in cursor.fetchall():
        found = dict(zip(columns, row, strict=True))
        found["payload"] = orjson.loads(found["payload"]) if found["payload"] else None
        out.append(found)
    return out


def _nested(row: dict[str, Any]) -> dict[str, Any]:
    """A flattened view row as the nested record: dotted names split, NULLs left out, JSON text parsed."""
    record: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or name in ("year", "month"):
            continue
        *path, leaf = name.split(".")
        node = record
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = orjson.loads(value) if name in JSON_TEXT_COLUMNS else value
    return record
