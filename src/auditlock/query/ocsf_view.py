# ruff: noqa: S608 - SQL text from our own constants and validated database/table identifiers
"""The Athena view `<table>_ocsf`: every archived event as an OCSF record, the same mapping as `query.ocsf`.

The view is generated from `query.ocsf`'s tables (FIXED, RECORD_ACTIVITIES, the classes), so the class,
activity and outcome of an event type are decided in one place. Its columns are the OCSF record flattened
with OCSF's dotted attribute names (`"metadata.uid"`, `"actor.user.uid"`, `"entity_result.data"`): a
SIEM crawler or a CTAS turns them back into nested objects, and each is queryable as it is. Object-valued
attributes with open shapes (`entity.data`, `entity_result.data`, `unmapped.auditlock.payload`) are JSON
text. A value the record would omit is NULL here. It reads `<table>_unique`, so it inherits its
de-duplication and partition pruning (`year`, `month` are kept as columns).

Trino SQL, as Athena expects for views; the tests run it (transpiled) on DuckDB against the same archive
and compare every row with `query.ocsf.to_ocsf`.
"""

from __future__ import annotations

from auditlock.query import ocsf

_ACTION = "regexp_extract(event_type, '[^.]+$')"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _is_record() -> str:
    actions = ", ".join(_quote(a) for a in ocsf.RECORD_ACTIVITIES)
    return f"({_ACTION} IN ({actions}))"


def _by_type(value: str, record: str, other: str) -> str:
    """CASE over the fixed types (`value` an attribute name of ClassActivity/OcsfClass), then records, else other."""
    fixed = "\n".join(f"    WHEN {_quote(t)} THEN {_sql(_attribute(m, value))}" for t, m in ocsf.FIXED.items())
    return (f"CASE event_type\n{fixed}\n    ELSE CASE WHEN {_is_record()} THEN {record} ELSE {other} END\n  END")


def _attribute(mapping: ocsf.ClassActivity, name: str) -> object:
    if hasattr(mapping, name):
        return getattr(mapping, name)
    return getattr(mapping.ocsf_class, name)


def _sql(value: object) -> str:
    return str(value) if isinstance(value, int) else _quote(str(value))


def _record_activity(field: int) -> str:
    whens = "\n".join(f"      WHEN {_quote(action)} THEN {_sql(found[field])}"
                      for action, found in ocsf.RECORD_ACTIVITIES.items())
    return f"CASE {_ACTION}\n{whens}\n    END"


def classification_columns() -> list[tuple[str, str]]:
    """The class, activity, outcome and severity columns (the inner SELECT's)."""
    em, other = ocsf.ENTITY_MANAGEMENT, ocsf.OTHER_API
    return [
        ("class_uid", _by_type("uid", str(em.uid), str(other.ocsf_class.uid))),
        ("class_name", _by_type("name", _quote(em.name), _quote(other.ocsf_class.name))),
        ("category_uid", _by_type("category_uid", str(em.category_uid), str(other.ocsf_class.category_uid))),
        ("category_name", _by_type("category_name", _quote(em.category_name),
                                   _quote(other.ocsf_class.category_name))),
        ("activity_id", _by_type("activity_id", _record_activity(0), str(other.activity_id))),
        ("activity_name", _by_type("activity_name", _record_activity(1), _quote(other.activity_name))),
        ("status_id", _by_type("status_id", _record_activity(2), str(ocsf.SUCCESS))),
    ]


def _changes_side(index: int) -> str:
    changes = "try_cast(json_extract(payload, '$.changes') AS MAP(VARCHAR, ARRAY(JSON)))"
    side = f"transform_values({changes}, (k, v) -> element_at(v, {index}))"
    return f"coalesce(json_format(CAST({side} AS JSON)), '{{}}')"


def record_columns(product_version: str) -> list[tuple[str, str]]:
    """The outer SELECT: every OCSF attribute `to_ocsf` writes, flattened, NULL where it would be absent."""
    em, auth, change, api = (c.uid for c in (ocsf.ENTITY_MANAGEMENT, ocsf.AUTHENTICATION, ocsf.ACCOUNT_CHANGE,
                                             ocsf.API_ACTIVITY))
    has_actor = "(actor_id IS NOT NULL AND actor_id <> '')"
    known = ", ".join(_quote(t) for t in ocsf.ACTOR_TYPE_IDS)
    type_ids = " ".join(f"WHEN {_quote(t)} THEN {i}" for t, i in ocsf.ACTOR_TYPE_IDS.items())
    actor_type_id = f"CASE actor_type {type_ids} ELSE {ocsf.OTHER} END"
    actor_type = f"CASE WHEN actor_type IS NOT NULL AND actor_type NOT IN ({known}) THEN actor_type END"
    no_ip = "(actor_ip IS NULL OR actor_ip = '')"
    subject = f"class_uid IN ({auth}, {change})"
    on_target = "target_id IS NOT NULL"
    policy = " ".join(f"WHEN {_quote(t)} THEN CASE WHEN json_format(json_extract(payload, '$.{f}')) LIKE '\"%' "
                      f"THEN json_extract_scalar(payload, '$.{f}') END" for t, f in ocsf.POLICY_FIELDS.items())
    entity_type = "coalesce(target_type, 'unknown')"
    resource = (f"json_format(CAST(CASE WHEN {on_target} THEN MAP(ARRAY['type', 'uid'], ARRAY[{entity_type}, "
                f"target_id]) ELSE MAP(ARRAY['type', 'name'], ARRAY[{entity_type}, {entity_type}]) END AS JSON))")
    return [
        ("class_uid", "class_uid"), ("class_name", "class_name"),
        ("category_uid", "category_uid"), ("category_name", "category_name"),
        ("activity_id", "activity_id"), ("activity_name", "activity_name"),
        ("type_uid", "class_uid * 100 + activity_id"), ("type_name", "class_name || ': ' || activity_name"),
        ("severity_id", str(ocsf.INFORMATIONAL)), ("severity", "'Informational'"),
        ("status_id", "status_id"),
        ("status", f"CASE status_id WHEN {ocsf.SUCCESS} THEN 'Success' ELSE 'Failure' END"),
        ("time", "CAST(floor(to_unixtime(from_iso8601_timestamp(occurred_at)) * 1000) AS BIGINT)"),
        ("metadata.version", _quote(ocsf.OCSF_VERSION)),
        ("metadata.product.name", _quote(ocsf.PRODUCT["name"])),
        ("metadata.product.vendor_name", _quote(ocsf.PRODUCT["vendor_name"])),
        ("metadata.product.version", _quote(product_version)),
        ("metadata.uid", "event_id"), ("metadata.original_time", "occurred_at"),
        ("metadata.log_name", "service"), ("metadata.correlation_uid", "trace_id"),
        ("actor.user.uid", f"CASE WHEN {has_actor} THEN actor_id END"),
        ("actor.user.type_id", f"CASE WHEN {has_actor} THEN {actor_type_id} END"),
        ("actor.user.type", f"CASE WHEN {has_actor} THEN {actor_type} END"),
        ("actor.app_name", f"CASE WHEN NOT {has_actor} THEN coalesce(service, 'auditlock') END"),
        ("src_endpoint.ip", f"CASE WHEN NOT {no_ip} THEN actor_ip END"),
        ("src_endpoint.hostname", f"CASE WHEN {no_ip} AND class_uid = {api} THEN host END"),
        ("src_endpoint.name",
         f"CASE WHEN {no_ip} AND class_uid = {api} AND host IS NULL THEN coalesce(service, 'auditlock') END"),
        *[(f"{side}.{name}", f"CASE WHEN class_uid = {em} THEN {value} END")
          for side in ("entity", "entity_result")
          for name, value in (("type", entity_type), ("uid", "CAST(target_id AS VARCHAR)"),
                              ("name", f"CASE WHEN target_id IS NULL THEN {entity_type} END"))],
        ("entity.data", f"CASE WHEN class_uid = {em} THEN {_changes_side(1)} END"),
        ("entity_result.data", f"CASE WHEN class_uid = {em} THEN {_changes_side(2)} END"),
        ("user.uid", f"CASE WHEN {subject} AND {on_target} THEN target_type || ':' || target_id "
                     f"WHEN {subject} AND {has_actor} THEN actor_id END"),
        ("user.type", f"CASE WHEN {subject} AND {on_target} THEN target_type "
                      f"WHEN {subject} AND {has_actor} THEN {actor_type} END"),
        ("user.type_id", f"CASE WHEN {subject} AND NOT ({on_target}) AND {has_actor} THEN {actor_type_id} END"),
        ("user.name", f"CASE WHEN {subject} AND NOT ({on_target}) AND NOT {has_actor} THEN 'unknown' END"),
        ("policy.name", f"CASE event_type {policy} END"),
        ("is_mfa", f"CASE WHEN class_uid = {auth} AND starts_with(event_type, 'auth.mfa_') THEN true END"),
        ("service.name", f"CASE WHEN class_uid = {auth} THEN coalesce(service, 'auditlock') END"),
        ("api.operation", f"CASE WHEN class_uid = {api} THEN event_type END"),
        ("api.service.name", f"CASE WHEN class_uid = {api} THEN service END"),
        ("resources", f"CASE WHEN class_uid = {api} AND target_type IS NOT NULL THEN '[' || {resource} || ']' END"),
        *[(f"unmapped.auditlock.{name}", f"CAST({name} AS VARCHAR)" if name == "target_id" else name)
          for name in ocsf.UNMAPPED_FIELDS],
        ("unmapped.auditlock.payload", "coalesce(CAST(payload AS VARCHAR), '{}')"),
        ("year", "year"), ("month", "month"),
    ]


def create_ocsf_view(product_version: str, *, database: str, table: str) -> str:
    """`CREATE OR REPLACE VIEW <table>_ocsf` over `<table>_unique` (Trino SQL)."""
    inner = ",\n    ".join(f'{sql} AS "{name}"' for name, sql in classification_columns())
    outer = ",\n  ".join(f'{sql} AS "{name}"' for name, sql in record_columns(product_version))
    return (f'CREATE OR REPLACE VIEW "{database}"."{table}_ocsf" AS\n'
            f"SELECT\n  {outer}\nFROM (\n  SELECT *,\n    {inner}\n  FROM \"{database}\".\"{table}_unique\"\n)")
