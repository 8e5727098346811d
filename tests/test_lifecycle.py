"""The bucket configuration derived from the config, and the CloudFormation template kept equal to it: lifecycle
and Object Lock (`auditlock lifecycle`), Glue columns (`auditlock athena-ddl`), named queries (queries.sql)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.bucket import checks, ownership, protection
from auditlock.bucket.lifecycle import (
    bucket_configuration,
    class_rule_id,
    cloudformation_rules,
    lifecycle_configuration,
    normal_rule,
    prefix_id,
)
from auditlock.cli import main
from auditlock.config import Config, build_config, load_config
from auditlock.errors import ProvisionError
from auditlock.query import ddl

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "auditlock.toml"
TEMPLATE = REPO / "deploy" / "cloudformation" / "auditlock-bucket.yaml"
QUERIES = REPO / "deploy" / "athena" / "queries.sql"


# ------------------------------------------------------------------------------------ CloudFormation reading


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short intrinsic tags (!Ref, !Sub, !GetAtt, !If, …)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The template, parsed."""
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)  # a SafeLoader subclass
    return loaded


@pytest.fixture(scope="module")
def example() -> Config:
    """examples/auditlock.toml, loaded."""
    return load_config(EXAMPLE)


def resolve(value: Any, template: dict[str, Any], bucket: str) -> Any:
    """Resolve Ref and Sub with the parameters' defaults (BucketName = `bucket`); other values as they are."""
    params = {name: p.get("Default") for name, p in template["Parameters"].items()}
    params |= {"BucketName": bucket, "ArchiveBucket": bucket, "ArchiveBucket.Arn": f"arn:aws:s3:::{bucket}"}
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return params[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        text = re.sub(r"\$\{(?!!)([^}]+)\}", lambda m: str(params[m.group(1)]), value["Fn::Sub"])
        return text.replace("${!", "${")
    if isinstance(value, dict):
        return {k: resolve(v, template, bucket) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, template, bucket) for v in value]
    return value


def resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A resource's Properties."""
    properties: dict[str, Any] = template["Resources"][name]["Properties"]
    return properties


def boto3_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in boto3's shape — written independently of cloudformation_rules."""
    tags = rule.get("TagFilters", [])
    prefix = rule.get("Prefix", "")
    if tags:
        where: dict[str, Any] = {"And": {"Prefix": prefix, "Tags": tags}} if prefix else {"Tag": tags[0]}
    else:
        where = {"Prefix": prefix}
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": where}
    if "Transitions" in rule:
        out["Transitions"] = [{"Days": t["TransitionInDays"], "StorageClass": t["StorageClass"]}
                              for t in rule["Transitions"]]
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if rule.get("ExpiredObjectDeleteMarker"):
        out["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    for key in ("NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
        if key in rule:
            out[key] = rule[key]
    return out


def config_with(**classes: dict[str, Any]) -> Config:
    """A config with the given retention classes (default: the first) and prefix `audit`."""
    return build_config({"service": "s", "spool": {"dir": "/tmp/unused"}, "events": {"include": ["*"]},
                         "retention": {"default": next(iter(classes)), "classes": classes},
                         "sink": {"prefix": "audit"}})


# ------------------------------------------------------------------------------------------------- tests


class TestLifecycle:
    def test_example_config(self, example: Config) -> None:
        """One tag-and-prefix rule per class (transition after hot_days, expiry after days), then housekeeping;
        Object Lock defaults to the default class."""
        document = bucket_configuration(example)
        rules = document["lifecycle"]["Rules"]
        assert document["prefix_id"] == "auditlock2beb854a"
        assert [r["ID"] for r in rules] == ["auditlock-auditlock2beb854a-retention-orders",
                                            "auditlock-auditlock2beb854a-retention-security",
                                            "auditlock-auditlock2beb854a-retention-standard",
                                            "auditlock-auditlock2beb854a-housekeeping"]
        assert rules[0] == {
            "ID": "auditlock-auditlock2beb854a-retention-orders", "Status": "Enabled",
            "Filter": {"And": {"Prefix": "auditlock/", "Tags": [{"Key": "auditlock-retention", "Value": "orders"}]}},
            "Transitions": [{"Days": 90, "StorageClass": "GLACIER_IR"}], "Expiration": {"Days": 3650}}
        assert rules[-1] == {
            "ID": "auditlock-auditlock2beb854a-housekeeping", "Status": "Enabled", "Filter": {"Prefix": "auditlock/"},
            "Expiration": {"ExpiredObjectDeleteMarker": True}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
        assert document["object_lock"] == {"ObjectLockEnabled": "Enabled",
                                           "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 400}}}

    @pytest.mark.parametrize("hot_days", [None, 0, 30])
    def test_no_transition_unless_hot_days_below_days(self, hot_days: int | None) -> None:
        """Without hot_days, with 0, or with hot_days = days, objects stay in STANDARD until they expire."""
        cls: dict[str, Any] = {"days": 30} | ({"hot_days": hot_days} if hot_days is not None else {})
        [rule, _] = lifecycle_configuration(config_with(c=cls))["Rules"]
        assert "Transitions" not in rule
        assert rule["Expiration"] == {"Days": 30}

    def test_empty_prefix_filters_by_tag_alone(self) -> None:
        """With no prefix (a Config built in code) the whole bucket is the archive: a tag filter alone."""
        config = config_with(c={"days": 5})
        config = replace(config, sink=replace(config.sink, prefix=""))
        rule, housekeeping = lifecycle_configuration(config)["Rules"]
        assert rule["Filter"] == {"Tag": {"Key": "auditlock-retention", "Value": "c"}}
        assert housekeeping["Filter"] == {"Prefix": ""}

    def test_cli_prints_the_configuration(self, example: Config, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock lifecycle` prints {"prefix_id", "lifecycle", "object_lock"}; --format cloudformation the
        template's PrefixId and rules."""
        assert main(["lifecycle", "--config", str(EXAMPLE)]) == 0
        assert json.loads(capsys.readouterr().out) == bucket_configuration(example)
        assert main(["lifecycle", "--config", str(EXAMPLE), "--format", "cloudformation"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["PrefixId"] == prefix_id(example.sink.prefix)
        assert [boto3_rule(r) for r in document["Rules"]] == lifecycle_configuration(example)["Rules"]

    def test_cli_bad_config(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid config is reported and exits 1."""
        path = tmp_path / "auditlock.toml"
        path.write_text('service = "s"\n')
        assert main(["lifecycle", "--config", str(path)]) == 1
        assert "auditlock lifecycle:" in capsys.readouterr().err


class TestTemplate:
    def test_lifecycle_rules_equal_auditlock_lifecycle(self, template: dict[str, Any], example: Config) -> None:
        """The template's rules are exactly `auditlock lifecycle` for examples/auditlock.toml."""
        cfn = resolve(resource(template, "ArchiveBucket")["LifecycleConfiguration"]["Rules"], template, "b")
        assert [boto3_rule(r) for r in cfn] == lifecycle_configuration(example)["Rules"]
        assert cfn == cloudformation_rules(lifecycle_configuration(example))

    def test_prefix_id_default_is_the_default_prefixs(self, template: dict[str, Any]) -> None:
        """The PrefixId parameter's default is `prefix_id` of the Prefix parameter's default."""
        parameters = template["Parameters"]
        assert parameters["PrefixId"]["Default"] == prefix_id(parameters["Prefix"]["Default"])
        assert re.fullmatch(parameters["PrefixId"]["AllowedPattern"], prefix_id("a/b" * 100))

    def test_object_lock_equals_auditlock_lifecycle(self, template: dict[str, Any], example: Config) -> None:
        """Object Lock enabled with the default class's retention; versioning on; all public access blocked."""
        bucket = resource(template, "ArchiveBucket")
        assert bucket["ObjectLockEnabled"] is True
        assert bucket["ObjectLockConfiguration"] == bucket_configuration(example)["object_lock"]
        assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
        assert set(bucket["PublicAccessBlockConfiguration"]) == set(protection.PUBLIC_ACCESS_FLAGS)
        assert all(bucket["PublicAccessBlockConfiguration"].values())
        assert template["Resources"]["ArchiveBucket"]["DeletionPolicy"] == "Retain"

    def test_policy_denies_insecure_transport_and_deletion(self, template: dict[str, Any]) -> None:
        """The bucket policy has the statements `auditlock provision` sets, with the same actions."""
        statements = resource(template, "ArchiveBucketPolicy")["PolicyDocument"]["Statement"]
        tls = statements[0]
        assert tls["Sid"] == protection.SID_TLS
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for branch in statements[1]["Fn::If"][1:]:
            assert resolve(branch["Sid"], template, "b") == protection.delete_sid("auditlock")
            assert branch["Action"] == list(protection.DELETE_ACTIONS)
            assert resolve(branch["Resource"], template, "b") == protection.delete_statement("b", "auditlock")[
                "Resource"]

    def test_agent_policy_is_least_privilege(self, template: dict[str, Any]) -> None:
        """The agent may put (with lock and tags), HEAD and list its prefix, and encrypt: nothing else."""
        statements = resource(template, "AgentPolicy")["PolicyDocument"]["Statement"]
        actions = {a for s in statements[:2] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert actions == {"s3:PutObject", "s3:PutObjectRetention", "s3:PutObjectTagging", "s3:GetObject",
                           "s3:ListBucket"}
        kms = statements[2]["Fn::If"][1]
        assert kms["Action"] == ["kms:GenerateDataKey", "kms:Encrypt"]
        text = TEMPLATE.read_text()
        agent = text[text.index("  AgentPolicy:"):text.index("  AthenaResultsBucket:")]
        assert "Delete" not in agent
        assert "Bypass" not in agent

    def test_glue_table_matches_the_ddl(self, template: dict[str, Any], example: Config) -> None:
        """Glue columns, partition keys, location and projection are those of `auditlock athena-ddl`."""
        table = resolve(resource(template, "EventsTable")["TableInput"], template, "shop-audit-archive")
        statement = ddl.create_table("shop-audit-archive", example.sink.prefix)
        body = statement[statement.index("(\n") + 2:statement.index("\n)")]
        ddl_columns = [tuple(re.fullmatch(r"\s*`(\w+)` (\w+),?", line).groups())  # type: ignore[union-attr]
                       for line in body.splitlines()]
        assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == ddl_columns
        partitions = re.search(r"PARTITIONED BY \((.*)\)", statement).group(1)  # type: ignore[union-attr]
        assert [(p["Name"], p["Type"]) for p in table["PartitionKeys"]] == re.findall(r"`(\w+)` (\w+)", partitions)
        assert table["StorageDescriptor"]["Location"] == ddl.events_location("shop-audit-archive", "auditlock")
        assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == ddl.SERDE
        expected = ddl.projection_properties("shop-audit-archive", "auditlock", ddl.DEFAULT_FIRST_YEAR,
                                             ddl.DEFAULT_LAST_YEAR)
        assert {k: v for k, v in table["Parameters"].items() if k in expected} == expected
        assert (template["Resources"]["GlueDatabase"]["Properties"]["DatabaseInput"]["Name"], table["Name"]) == (
            ddl.DEFAULT_DATABASE, ddl.DEFAULT_TABLE)

    def test_named_queries_are_queries_sql(self, template: dict[str, Any]) -> None:
        """One named query per query in deploy/athena/queries.sql, same name and text, plus the view's DDL."""
        named = {r["Properties"]["Name"]: r["Properties"]["QueryString"]
                 for r in template["Resources"].values() if r["Type"] == "AWS::Athena::NamedQuery"}
        view = named.pop("create_events_unique_view")
        assert view == ddl.create_unique_view()
        assert named == parse_queries(QUERIES.read_text())
        assert len(named) == 5

    def test_workgroup_enforces_encrypted_results(self, template: dict[str, Any]) -> None:
        """The workgroup's settings override the client's; results go to the encrypted results bucket."""
        configuration = resource(template, "AthenaWorkGroup")["WorkGroupConfiguration"]
        assert configuration["EnforceWorkGroupConfiguration"] is True
        options = [b["EncryptionOption"] for b in configuration["ResultConfiguration"]["EncryptionConfiguration"]
                   ["Fn::If"][1:]]
        assert options == ["SSE_KMS", "SSE_S3"]


def parse_queries(text: str) -> dict[str, str]:
    """{name: statement without its `;`} of a queries.sql (blocks start with `-- name: X`)."""
    queries = {}
    for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, *lines = block.splitlines()
        sql = "\n".join(line for line in lines if not line.startswith("--")).strip()
        assert sql.endswith(";"), name
        queries[name.strip()] = sql.removesuffix(";")
    return queries


class TestChecks:
    @pytest.mark.parametrize("name", ["abc", "shop-audit-archive", "a.b-c.d", "x" * 63])
    def test_valid_bucket_names(self, name: str) -> None:
        """Valid names pass."""
        checks.check_bucket_name(name)

    @pytest.mark.parametrize(("current", "wanted", "allowed"), [
        ({"Mode": "GOVERNANCE", "Days": 5}, {"Mode": "GOVERNANCE", "Days": 6}, True),
        ({"Mode": "GOVERNANCE", "Days": 5}, {"Mode": "COMPLIANCE", "Days": 5}, True),
        ({"Mode": "GOVERNANCE", "Days": 5}, {"Mode": "GOVERNANCE", "Days": 4}, False),
        ({"Mode": "COMPLIANCE", "Days": 5}, {"Mode": "GOVERNANCE", "Days": 50}, False),
        ({"Mode": "COMPLIANCE", "Years": 1}, {"Mode": "COMPLIANCE", "Days": 365}, False),
        ({"Mode": "COMPLIANCE", "Years": 1}, {"Mode": "COMPLIANCE", "Days": 366}, True),
        ({"Mode": "GOVERNANCE", "Days": 5, "Years": 0}, {"Mode": "GOVERNANCE", "Days": 5}, True),
        (None, {"Mode": "GOVERNANCE", "Days": 1}, True),
    ])
    def test_default_retention_only_lengthens_or_hardens(self, current: dict[str, Any] | None,
                                                         wanted: dict[str, Any], allowed: bool) -> None:
        """Shorter (a year counts up to 366 days) or COMPLIANCE -> GOVERNANCE is refused; the rest is allowed."""
        now = {"ObjectLockEnabled": "Enabled", **({"Rule": {"DefaultRetention": current}} if current else {})}
        new = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": wanted}}
        if allowed:
            checks.check_lock("b", now, new)
        else:
            with pytest.raises(ProvisionError, match="refusing to weaken"):
                checks.check_lock("b", now, new)

    def test_rados_gateway_filter_shape_is_normalised(self) -> None:
        """RADOS Gateway reads an And filter back as {Prefix, Tag}; compared in the shape we write."""
        wanted = lifecycle_configuration(config_with(c={"days": 3}))["Rules"][0]
        read_back = {**wanted, "Filter": {"Prefix": "audit/", "Tag": wanted["Filter"]["And"]["Tags"][0]}}
        assert normal_rule(read_back) == wanted

    @pytest.mark.parametrize(("rule", "refused"), [
        ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 1}}, False),
        ({"ID": "x", "Status": "Disabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}, False),
        ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": "audit/events/"}, "Expiration": {"Days": 1}}, True),
        ({"ID": "x", "Status": "Enabled", "Filter": {"Tag": {"Key": "auditlock-retention", "Value": "other"}},
          "Expiration": {"Days": 1}}, False),
        ({"ID": "x", "Status": "Enabled", "Filter": {"Tag": {"Key": "auditlock-schema", "Value": "1"}},
          "Expiration": {"Days": 1}}, True),
        ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 10}}, False),
        ({"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Date": "2030-01-01"}}, True),
        ({"ID": "auditlock-retention-c", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 11}},
         False),
        ({"ID": "auditlock-retention-c", "Status": "Enabled", "Filter": {"And": {"Prefix": "audit/", "Tags": [
            {"Key": "auditlock-retention", "Value": "c"}]}}, "Expiration": {"Days": 11}}, True),
        ({"ID": class_rule_id("c", "audit"), "Status": "Enabled", "Filter": {"Prefix": "audit/"},
          "Expiration": {"Days": 11}}, True),
    ])
    def test_rules_that_would_expire_early(self, rule: dict[str, Any], refused: bool) -> None:
        """A rule that can match objects of a class under the prefix must not expire them before its days."""
        classes = config_with(c={"days": 10}).retention.classes
        if refused:
            with pytest.raises(ProvisionError, match="expire audit objects early"):
                checks.check_lifecycle("b", "audit", classes, [rule])
        else:
            checks.check_lifecycle("b", "audit", classes, [rule])


class TestOwnership:
    def test_prefix_id_is_short_stable_alphanumeric_and_distinct(self) -> None:
        """`a/b` and `ab` differ; a 1000-character prefix gives a short id; a long class name a legal rule ID."""
        assert prefix_id("auditlock") == "auditlock2beb854a"
        assert prefix_id("a/b") != prefix_id("ab")
        assert prefix_id("/a/b/") == prefix_id("a/b")
        long = prefix_id("x" * 1000)
        assert long.isalnum()
        assert len(long) == 32
        assert prefix_id("").startswith("bucket")
        assert len(class_rule_id("c" * 300, "x" * 1000)) == 255
        assert class_rule_id("c" * 300, "p") != class_rule_id("c" * 301, "p")

    @pytest.mark.parametrize(("legacy", "replaced"), [
        ({}, True),
        ({"Condition": {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::1:role/admin"]}}}, True),
        ({"Action": "s3:DeleteObject"}, True),
        ({"Action": ["s3:DeleteObject", "s3:PutObject"]}, False),
        ({"Resource": "arn:aws:s3:::b/other/*"}, False),
        ({"Effect": "Allow"}, False),
    ])
    def test_legacy_delete_statement_replaced_only_by_a_stronger_one(self, legacy: dict[str, Any],
                                                                     replaced: bool) -> None:
        """The legacy deny-delete statement over exactly our objects gives way to ours; any other is kept."""
        statement = {**protection.delete_statement("b", "audit"), "Sid": protection.SID_DELETE, **legacy}
        ours = protection.policy_statements("b", "audit", tls_only=True)
        merged = ownership.merged_policy("b", "audit", {"Statement": [statement]}, ours)
        assert (statement not in merged["Statement"]) is replaced
        assert merged["Statement"] == (ours if replaced else [statement, *ours])

    def test_legacy_rule_of_another_prefix_is_kept(self) -> None:
        """A legacy class rule filtering on another prefix is kept beside ours, never replaced."""
        config = config_with(c={"days": 5})
        theirs = {**lifecycle_configuration(replace(config, sink=replace(config.sink, prefix="other")))["Rules"][0],
                  "ID": "auditlock-retention-c"}
        wanted = lifecycle_configuration(config)["Rules"]
        merged = ownership.merged_rules([theirs], wanted, "audit")
        assert (merged.rules, merged.replaced, merged.kept) == ([*wanted, theirs], [], ["auditlock-retention-c"])
