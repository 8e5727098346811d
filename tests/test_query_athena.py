"""Athena: the DDL parses (sqlglot `athena`) and matches the schema; the named queries in
deploy/athena/queries.sql, transpiled to DuckDB, return what `auditlock query` returns; `auditlock hash`."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from auditlock.archive.timerange import format_time
from auditlock.cli import main
from auditlock.handler.encode import hmac_value
from auditlock.query import ddl
from auditlock.query.columns import EVENT_COLUMNS, EVENT_NAMES
from auditlock.query.engine import AuditDatabase
from auditlock.spool.format import EVENT_KEYS
from tests.conftest import HMAC_KEY
from tests.support.calendar import occurred_at
from tests.support.query_env import ALICE, LAST, OLDEST, QueryEnv

QUERIES = Path(__file__).resolve().parents[1] / "deploy" / "athena" / "queries.sql"
PERIOD = (occurred_at(OLDEST.start), occurred_at(LAST.end))  # the story's three past months
PARTITIONS = (f"{OLDEST.year}", f"{LAST.year}", f"{OLDEST.year}{OLDEST.mm}", f"{LAST.year}{LAST.mm}")


def named_queries() -> dict[str, tuple[list[str], str]]:
    """name -> (parameter names, SQL) from queries.sql (`-- name:` blocks, `-- params:` lists)."""
    blocks = re.split(r"^-- name: ", QUERIES.read_text(), flags=re.MULTILINE)[1:]
    out = {}
    for block in blocks:
        name, _, rest = block.partition("\n")
        params = re.search(r"^-- params: (.*(?:\n--         .*)*)", rest, flags=re.MULTILINE)
        assert params is not None, f"{name}: no params line"
        names = [p.strip() for p in params[1].replace("\n--", " ").split(",")]
        sql = "\n".join(line for line in rest.splitlines() if not line.startswith("--")).strip().rstrip(";")
        out[name.strip()] = (names, sql)
    return out


def hive_type(name: str) -> exp.DataType.Type:
    """The parsed type of an Athena (Hive DDL) type name."""
    return exp.DataType.build(name, dialect="hive").this


def properties(create: exp.Create) -> dict[str, str]:
    """TBLPROPERTIES of a parsed CREATE TABLE."""
    props = create.args["properties"].expressions
    return {p.this.name: p.args["value"].name for p in props if type(p) is exp.Property}


class TestDdl:
    def test_table_columns_and_partitions(self) -> None:
        """The table parses as Athena DDL; its columns are the auditlock/1 fields, partitioned by year, month."""
        create = sqlglot.parse_one(ddl.create_table("archive-bucket", "audit"), read="athena")
        assert isinstance(create, exp.Create)
        assert create.args["exists"] is True
        schema = create.this
        assert (schema.this.db, schema.this.name) == ("auditlock", "events")
        columns = [(c.name, c.args["kind"].this) for c in schema.expressions]
        assert columns == [(name, hive_type(athena)) for name, _, athena in EVENT_COLUMNS]
        assert [c[0] for c in columns] == list(EVENT_KEYS)
        [partitioned] = [p for p in create.args["properties"].expressions
                         if isinstance(p, exp.PartitionedByProperty)]
        assert [(c.name, c.args["kind"].this) for c in partitioned.this.expressions] == [
            ("year", hive_type("string")), ("month", hive_type("string"))]

    def test_serde_location_and_projection(self) -> None:
        """JSON SerDe, the events location, and projection properties exactly as the archive is laid out."""
        create = sqlglot.parse_one(ddl.create_table("archive-bucket", "audit", first_year=2025, last_year=2040),
                                   read="athena")
        found = create.args["properties"].expressions
        [serde] = [p for p in found if isinstance(p, exp.RowFormatSerdeProperty)]
        [location] = [p for p in found if isinstance(p, exp.LocationProperty)]
        assert serde.this.name == "org.openx.data.jsonserde.JsonSerDe"
        assert location.this.name == "s3://archive-bucket/audit/events/"
        assert properties(create) == {
            "projection.enabled": "true",
            "projection.year.type": "integer",
            "projection.year.range": "2025,2040",
            "projection.month.type": "integer",
            "projection.month.range": "1,12",
            "projection.month.digits": "2",
            "storage.location.template": "s3://archive-bucket/audit/events/year=${year}/month=${month}",
        }

    def test_unique_view(self) -> None:
        """The view parses as Trino SQL and keeps one row per event_id, windowed by year, month, event_id."""
        view = sqlglot.parse_one(ddl.create_unique_view(database="audits", table="trail"), read="athena")
        assert isinstance(view, exp.Create)
        assert (view.this.db, view.this.name) == ("audits", "trail_unique")
        outer = view.expression
        assert [c.name for c in outer.expressions] == [*EVENT_NAMES, "year", "month"]
        window = outer.find(exp.Window)
        assert window is not None
        assert [p.name for p in window.args["partition_by"]] == ["year", "month", "event_id"]
        assert outer.find(exp.Table).sql("athena") == '"audits"."trail"'

    def test_command_prints_every_statement(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock athena-ddl` prints parseable statements for the config's bucket and prefix."""
        config = _config_file(tmp_path)
        assert main(["athena-ddl", "--config", str(config), "--database", "sec", "--table", "trail"]) == 0
        statements = sqlglot.parse(capsys.readouterr().out, read="athena")
        kinds = [(s.args["kind"], ".".join(p.name for p in s.find(exp.Table).parts)) for s in statements if s]
        assert kinds == [("DATABASE", "sec"), ("TABLE", "sec.trail"), ("VIEW", "sec.trail_unique")]

    def test_bad_names_are_usage_errors(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad --table or year range exits 2 naming the flag."""
        config = str(_config_file(tmp_path))
        with pytest.raises(SystemExit) as info:
            main(["athena-ddl", "--config", config, "--table", "Bad-Name"])
        assert info.value.code == 2
        assert "argument --table: 'Bad-Name' is not an Athena name" in capsys.readouterr().err
        assert main(["athena-ddl", "--config", config, "--first-year", "2030", "--last-year", "2029"]) == 2
        assert "argument --first-year: 2030 is after --last-year 2029" in capsys.readouterr().err


class TestHash:
    def test_hash_matches_the_stored_form(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock hash VALUE` prints exactly what the handler stores for an hmac field."""
        assert main(["hash", "--config", str(_config_file(tmp_path)), ALICE]) == 0
        assert capsys.readouterr().out == hmac_value(HMAC_KEY.encode(), ALICE) + "\n"

    def test_missing_key_is_an_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the key, hash exits 1 and names the variable."""
        monkeypatch.delenv("AUDITLOCK_TEST_HMAC")
        assert main(["hash", "--config", str(_config_file(tmp_path)), "x"]) == 1
        assert "AUDITLOCK_TEST_HMAC is not set" in capsys.readouterr().err


class TestNamedQueries:
    def test_every_question_is_there(self) -> None:
        """queries.sql holds the five questions, each with as many parameters as `?` and partition predicates."""
        queries = named_queries()
        assert set(queries) == {"record_history", "actor_activity", "failed_logins", "permission_changes",
                                "data_subject"}
        for name, (params, sql) in queries.items():
            assert sql.count("?") == len(params), name
            assert "year BETWEEN ? AND ? AND year || month BETWEEN ? AND ?" in sql, name
            sqlglot.parse_one(sql, read="athena")

    def test_record_history(self, story: QueryEnv, athena: AuditDatabase, tmp_path: Path) -> None:
        """Who changed Order 1001: the same events as the equivalent `auditlock query`."""
        rows = run_named(athena, "record_history", "Order", "1001", *PARTITIONS, *PERIOD)
        cli = story.query_events("--target-type", "Order", "--target-id", "1001", "--type", "*.created",
                                 "--type", "*.updated", "--type", "*.deleted", *period_flags(), cache=tmp_path)
        assert ids(rows) == [e["event_id"] for e in cli]
        assert len(rows) == 4

    def test_actor_activity(self, story: QueryEnv, athena: AuditDatabase, tmp_path: Path) -> None:
        """Everything user#2 did in the period."""
        rows = run_named(athena, "actor_activity", "user#2", *PARTITIONS, *PERIOD)
        cli = story.query_events("--actor", "user#2", *period_flags(), cache=tmp_path)
        assert ids(rows) == [e["event_id"] for e in cli]
        assert len(rows) == 2

    def test_failed_logins(self, story: QueryEnv, athena: AuditDatabase, tmp_path: Path) -> None:
        """Failed logins in the last 24 hours."""
        now = dt.datetime.now(dt.UTC)
        since = now - dt.timedelta(hours=24)
        months = (since.strftime("%Y"), now.strftime("%Y"), since.strftime("%Y%m"), now.strftime("%Y%m"))
        rows = run_named(athena, "failed_logins", *months, format_time(since))
        cli = story.query_events("--type", "auth.login_failed", "--since", format_time(since), cache=tmp_path)
        assert ids(rows) == [e["event_id"] for e in cli]
        assert [r["reason"] for r in rows] == ["bad_otp", "bad_password"]

    def test_permission_changes(self, story: QueryEnv, athena: AuditDatabase, tmp_path: Path) -> None:
        """Every permission change in the period."""
        rows = run_named(athena, "permission_changes", *PARTITIONS, *PERIOD)
        cli = story.query_events("--type", "access.*", *period_flags(), cache=tmp_path)
        assert ids(rows) == [e["event_id"] for e in cli]
        assert [r["role"] or r["permission"] for r in rows] == ["admin", "refund", "admin"]

    def test_data_subject(self, story: QueryEnv, athena: AuditDatabase, tmp_path: Path) -> None:
        """Everything about Alice: the union of three `auditlock query` runs, newest first."""
        # Every key's form, comma-separated (`auditlock hash VALUE | paste -sd,`); an unknown key's form is harmless.
        hashed = ",".join([hmac_value(b"another-key-0123456789", ALICE, "k2"), hmac_value(HMAC_KEY.encode(), ALICE)])
        rows = run_named(athena, "data_subject", "user#7", "Customer", "7", hashed, "$.email",
                         hashed, "$.changes.email[0]", hashed, "$.changes.email[1]", *PARTITIONS, *PERIOD)
        union: dict[str, dict[str, Any]] = {}
        for flags in (["--actor", "user#7"], ["--target-type", "Customer", "--target-id", "7"],
                      ["--hmac-field", f"email={ALICE}"]):
            union.update({e["event_id"]: e for e in story.query_events(*flags, *period_flags(), cache=tmp_path)})
        expected = sorted(union.values(), key=lambda e: (e["occurred_at"], e["event_id"]), reverse=True)
        assert ids(rows) == [e["event_id"] for e in expected]
        assert {r["event_type"] for r in rows} == {"customer.created", "customer.updated"}


def run_named(database: AuditDatabase, name: str, *params: str) -> list[dict[str, Any]]:
    """Transpile a named query from Athena to DuckDB and run it with `params`."""
    names, sql = named_queries()[name]
    assert len(params) == len(names)
    duck = sqlglot.transpile(sql, read="athena", write="duckdb")[0]
    cursor = database.connection.execute(duck, list(params))
    columns = [d[0] for d in cursor.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    """The event ids of result rows, in order."""
    return [r["event_id"] for r in rows]


def period_flags() -> list[str]:
    """--since/--until for PERIOD."""
    return ["--since", PERIOD[0], "--until", PERIOD[1]]


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "auditlock.toml"
    path.write_text(f"""
service = "shop"
[spool]
dir = "{tmp_path / 'spool'}"
[events]
include = ["order.*"]
[targets.Customer]
hmac = ["email"]
[hmac]
key_env = "AUDITLOCK_TEST_HMAC"
[retention]
default = "standard"
[retention.classes.standard]
days = 30
[sink]
bucket = "archive-bucket"
prefix = "audit"
""")
    return path
