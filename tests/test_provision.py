"""`auditlock provision` on real S3 servers (moto and RADOS Gateway): a fresh bucket the agent then ships to,
idempotence, and every refusal to weaken — each leaving the bucket as it was."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from auditlock.agent.service import Agent
from auditlock.archive import layout
from auditlock.bucket import protection
from auditlock.bucket.lifecycle import class_rule_id, lifecycle_configuration, normal_rule, rule_filter
from auditlock.bucket.provision import Provisioner, Report, provision
from auditlock.cli import main
from auditlock.config import Config, build_config
from auditlock.errors import ProvisionError
from tests.support.archive_env import SHORT_CLASSES, ArchiveEnv, use_credentials
from tests.support.s3servers import S3Endpoint, make_lock_bucket, make_plain_bucket

TLS_NOTE = "AuditlockDenyInsecureTransport not set"
ACL_NOTE = "BlockPublicAcls left off"


@pytest.fixture
def endpoint(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """The S3 server of this case, its credentials in the environment (as the CLI and agent find them)."""
    use_credentials(monkeypatch, s3)
    return s3


@pytest.fixture
def name() -> str:
    """A bucket name nobody has used yet (buckets are left behind: locked objects cannot be removed)."""
    return f"auditlock-prov-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def env(endpoint: S3Endpoint, name: str, tmp_path: Path) -> ArchiveEnv:
    """A spool and config (classes standard GOVERNANCE 1 day, security COMPLIANCE 2 days) for bucket `name`."""
    return ArchiveEnv.create(tmp_path, endpoint, name, class_days=SHORT_CLASSES)


def make_config(tmp_path: Path, endpoint: S3Endpoint | None, *, standard: tuple[int, str] = (1, "GOVERNANCE"),
                security_days: int = 2, hot_days: int | None = None, prefix: str = "audit") -> Config:
    """A config shipping to `endpoint` (None: AWS) under `prefix`, with the given class lengths."""
    standard_class: dict[str, Any] = {"days": standard[0], "mode": standard[1]}
    if hot_days is not None:
        standard_class["hot_days"] = hot_days
    sink: dict[str, Any] = {"bucket": "unused", "prefix": prefix}
    if endpoint is not None:
        sink |= {"endpoint_url": endpoint.url, "region": endpoint.region}
    return build_config({
        "service": "shop", "spool": {"dir": str(tmp_path / "spool")}, "events": {"include": ["order.*"]},
        "retention": {"default": "standard", "classes": {"standard": standard_class,
                                                         "security": {"days": security_days, "mode": "COMPLIANCE"}}},
        "sink": sink,
    })


def snapshot(endpoint: S3Endpoint, bucket: str) -> dict[str, Any]:
    """Every bucket setting provisioning touches, as the server reports it (None where unset)."""
    client = endpoint.client()
    calls = {
        "lock": lambda: client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"],
        "lifecycle": lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
        "public_access": lambda: client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "encryption": lambda: client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"],
        "policy": lambda: json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"]),
    }
    state: dict[str, Any] = {}
    for key, call in calls.items():
        try:
            state[key] = call()
        except ClientError:
            state[key] = None
    return state


def statement_ids(state: dict[str, Any]) -> list[str]:
    """Sids of the bucket policy's statements."""
    return [s["Sid"] for s in (state["policy"] or {}).get("Statement", [])]


def objects(endpoint: S3Endpoint, bucket: str) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(key, HEAD response, tags) of every object the agent stored."""
    client = endpoint.client()
    for item in client.list_objects_v2(Bucket=bucket, Prefix="audit/").get("Contents", []):
        head = client.head_object(Bucket=bucket, Key=item["Key"])
        tags = client.get_object_tagging(Bucket=bucket, Key=item["Key"])["TagSet"]
        yield item["Key"], head, {t["Key"]: t["Value"] for t in tags}


class TestFreshBucket:
    def test_provisioned_bucket_takes_the_agents_objects_as_configured(self, env: ArchiveEnv,
                                                                        endpoint: S3Endpoint) -> None:
        """A new bucket gets lock, lifecycle and protection; the agent's objects carry the class's lock and tag,
        and exactly one class rule of the bucket's lifecycle applies to each, expiring it after the class's days."""
        config = env.config
        report = provision(config, env.bucket)
        assert [c.split(":")[0] for c in report.changes][:1] == ["bucket"]
        state = snapshot(endpoint, env.bucket)
        assert state["lock"] == {"ObjectLockEnabled": "Enabled",
                                 "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}} or (
            endpoint.kind == "moto" and state["lock"]["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 1,
                                                                                       "Years": 0})
        rules = sorted((normal_rule(r) for r in state["lifecycle"]), key=lambda r: r["ID"])
        assert rules == sorted(lifecycle_configuration(config)["Rules"], key=lambda r: r["ID"])
        assert statement_ids(state) == [protection.delete_sid("audit")]
        assert any(TLS_NOTE in n for n in report.notes)  # both servers listen on plain HTTP
        assert state["public_access"] == {"BlockPublicAcls": False, "IgnorePublicAcls": True,
                                          "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        self._check_encryption(endpoint, state, report)

        env.write_events(20)
        env.write_events(5, event_type="auth.login_failed")
        assert Agent(config, serve_http=False).run_once().segments_left == 0
        self._check_objects(endpoint, env.bucket, config, rules)

    @staticmethod
    def _check_encryption(endpoint: S3Endpoint, state: dict[str, Any], report: Report) -> None:
        if endpoint.kind == "rgw":
            # RADOS Gateway 16 answers PutBucketEncryption with InvalidArgument: reported, not faked.
            assert any(n.startswith("default encryption: not set") for n in report.notes)
            assert not state["encryption"]
        else:
            [rule] = state["encryption"]["Rules"]
            assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}

    @staticmethod
    def _check_objects(endpoint: S3Endpoint, bucket: str, config: Config, rules: list[dict[str, Any]]) -> None:
        seen = {"events": set(), "digests": set()}
        for key, head, tags in objects(endpoint, bucket):
            name = tags[layout.TAG_RETENTION]
            retention = config.retention.classes[name]
            assert head["ObjectLockMode"] == retention.mode, key
            until = layout.retain_until(head["Metadata"][layout.META_LAST], retention.days)
            assert head["ObjectLockRetainUntilDate"] == until.replace(microsecond=0), key  # HTTP dates: seconds
            applying = [r for r in rules if "Days" in r.get("Expiration", {})
                        and key.startswith(rule_filter(r)[0])
                        and all(tags.get(t["Key"]) == t["Value"] for t in rule_filter(r)[1])]
            assert [r["Expiration"]["Days"] for r in applying] == [retention.days], key
            seen[key.split("/")[1]].add(name)
        assert seen == {"events": {"standard", "security"}, "digests": seen["digests"]}
        assert seen["digests"]  # digests are tagged and locked like the longest-locked object they cover

    def test_second_run_changes_nothing(self, env: ArchiveEnv, capsys: pytest.CaptureFixture[str]) -> None:
        """Provisioning again reads the bucket, finds it as configured, changes nothing and says so."""
        assert main(["provision", "--config", str(env.config_path)]) == 0
        first = capsys.readouterr().out
        assert "changed: bucket: new bucket" in first
        before = snapshot(env.endpoint, env.bucket)
        assert main(["provision", "--config", str(env.config_path), "--bucket", env.bucket]) == 0
        second = capsys.readouterr().out.splitlines()
        assert second[:2] == [f"bucket {env.bucket}:", "  no changes"]
        assert snapshot(env.endpoint, env.bucket) == before

    def test_dry_run_changes_nothing(self, env: ArchiveEnv, capsys: pytest.CaptureFixture[str]) -> None:
        """--dry-run lists what it would do and creates nothing."""
        assert main(["provision", "--config", str(env.config_path), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "would change: bucket: new bucket" in out
        assert (f"would change: lifecycle: rules {class_rule_id('security', 'audit')}, "
                f"{class_rule_id('standard', 'audit')}") in out
        with pytest.raises(ClientError):
            env.endpoint.client().head_bucket(Bucket=env.bucket)

    def test_lengthening_and_hardening_are_applied(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """A longer default retention, GOVERNANCE -> COMPLIANCE and longer classes are changes, not refusals."""
        client = endpoint.client()
        provision(make_config(tmp_path, endpoint), name)
        report = provision(make_config(tmp_path, endpoint, standard=(3, "COMPLIANCE"), security_days=5), name)
        assert report.changes == [
            "object lock default retention: GOVERNANCE 1 days -> COMPLIANCE 3 days",
            f"lifecycle: rules {class_rule_id('security', 'audit')}, {class_rule_id('standard', 'audit')}",
        ]
        default = client.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]["Rule"]
        assert (default["DefaultRetention"]["Mode"], default["DefaultRetention"]["Days"]) == ("COMPLIANCE", 3)


class TestRefusals:
    def test_shorter_default_retention(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """A default retention shorter than the bucket's is refused, naming both; nothing is changed."""
        make_lock_bucket(endpoint.client(), name, default_days=5, mode="GOVERNANCE")
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match=r"refusing to weaken.*5 days -> 1 days.*current GOVERNANCE 5 days, "
                                                 r"wanted GOVERNANCE 1 days"):
            provision(make_config(tmp_path, endpoint), name)
        assert snapshot(endpoint, name) == before

    def test_compliance_to_governance(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """COMPLIANCE is never turned into GOVERNANCE, even with more days."""
        make_lock_bucket(endpoint.client(), name, default_days=1, mode="COMPLIANCE")
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match="mode COMPLIANCE -> GOVERNANCE"):
            provision(make_config(tmp_path, endpoint, standard=(30, "GOVERNANCE")), name)
        assert snapshot(endpoint, name) == before

    def test_bucket_without_object_lock(self, endpoint: S3Endpoint, name: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """An existing bucket without Object Lock is refused with a clear error (exit 1); nothing is set."""
        make_plain_bucket(endpoint.client(), name)
        before = snapshot(endpoint, name)
        config = tmp_path / "auditlock.toml"
        ArchiveEnv.create(tmp_path, endpoint, name)
        assert main(["provision", "--config", str(config)]) == 1
        assert f"bucket {name!r} exists without Object Lock" in capsys.readouterr().err
        assert snapshot(endpoint, name) == before

    def test_class_expiry_shortened(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """A class whose rule would now expire objects sooner than the bucket's rule does is refused."""
        provision(make_config(tmp_path, endpoint, security_days=3), name)
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match=r"class 'security': expiry after 3 days in the bucket, 2 days"):
            provision(make_config(tmp_path, endpoint, security_days=2), name)
        assert snapshot(endpoint, name) == before

    def test_foreign_rule_expiring_early(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """Another rule that would expire audit objects before their class's days is refused, not dropped."""
        client = endpoint.client()
        make_lock_bucket(client, name)
        client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
            {"ID": "tidy-up", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]})
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match=r"rule 'tidy-up' expires objects of class 'security' after 1 days"):
            provision(make_config(tmp_path, endpoint), name)
        assert snapshot(endpoint, name) == before

    @pytest.mark.parametrize(("bad", "problem"), [
        ("Audit_Bucket", "invalid characters 'AB_'"), ("ab", "2 characters"), ("a..b", "two adjacent periods"),
        ("192.168.10.1", "IP address"), ("-audit", "begin and end"), ("audit--x-s3", "reserves"),
    ])
    def test_bad_bucket_name(self, endpoint: S3Endpoint, tmp_path: Path, bad: str, problem: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid bucket name is refused before any request, naming the problem (moto would accept some)."""
        env = ArchiveEnv.create(tmp_path, endpoint, "unused")
        assert main(["provision", "--config", str(env.config_path), f"--bucket={bad}"]) == 1
        err = capsys.readouterr().err
        assert f"bucket name {bad!r}: " in err
        assert problem in err
        assert bad not in [b["Name"] for b in endpoint.client().list_buckets()["Buckets"]]


class TestKeepsWhatIsThere:
    def test_foreign_rules_and_statements_are_kept(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """Rules and policy statements that are not auditlock's stay in place beside ours."""
        client = endpoint.client()
        make_lock_bucket(client, name)
        other_rule = {"ID": "other-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
                      "Expiration": {"Days": 1}}
        client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [other_rule]})
        other_statement = {"Sid": "OtherDenyWebsite", "Effect": "Deny", "Principal": "*",
                           "Action": "s3:PutBucketWebsite", "Resource": f"arn:aws:s3:::{name}"}
        client.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17",
                                                                  "Statement": [other_statement]}))
        report = provision(make_config(tmp_path, endpoint), name)
        assert any("(kept: other-logs)" in c for c in report.changes)
        state = snapshot(endpoint, name)
        assert "other-logs" in [r["ID"] for r in state["lifecycle"]]
        assert statement_ids(state) == ["OtherDenyWebsite", protection.delete_sid("audit")]
        assert provision(make_config(tmp_path, endpoint), name).changes == []


class TestAwsMode:
    def test_without_endpoint_every_protection_is_set(self, moto_s3: S3Endpoint, name: str, tmp_path: Path) -> None:
        """With no endpoint_url (AWS), all four public-access flags and the TLS-only statement are set, with no
        notes (moto stands in for AWS here; it stores but does not enforce policies)."""
        client = moto_s3.client()
        report = Provisioner(make_config(tmp_path, None), name, client).run()
        assert report.notes == []
        state = snapshot(moto_s3, name)
        assert all(state["public_access"].values())
        assert statement_ids(state) == [protection.SID_TLS, protection.delete_sid("audit")]
        assert Provisioner(make_config(tmp_path, None), name, client).run().changes == []


def prefixed_env(root: Path, endpoint: S3Endpoint, bucket: str, prefix: str) -> ArchiveEnv:
    """An ArchiveEnv under `root` whose config ships to `prefix` of `bucket`."""
    root.mkdir()
    env = ArchiveEnv.create(root, endpoint, bucket)
    text = env.config_path.read_text()
    env.config_path.write_text(text.replace('prefix = "audit"', f'prefix = "{prefix}"'))
    return env


def rules_of(state: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules filtering on `prefix`/, in the shape we write, by ID."""
    return sorted((normal_rule(r) for r in state["lifecycle"] if rule_filter(r)[0] == f"{prefix}/"),
                  key=lambda r: r["ID"])


def delete_statements(state: dict[str, Any]) -> dict[str, Any]:
    """{Sid: Resource} of the policy's deny-delete statements."""
    return {s["Sid"]: s["Resource"] for s in state["policy"]["Statement"]
            if s["Sid"].startswith(protection.SID_DELETE)}


def legacy_rules(prefix: str, standard_days: int) -> list[dict[str, Any]]:
    """The rules an older auditlock wrote for `prefix` (IDs not per prefix)."""
    def tagged(name: str, days: int) -> dict[str, Any]:
        return {"ID": f"auditlock-retention-{name}", "Status": "Enabled", "Expiration": {"Days": days},
                "Filter": {"And": {"Prefix": f"{prefix}/", "Tags": [{"Key": layout.TAG_RETENTION, "Value": name}]}}}
    housekeeping = {"ID": "auditlock-housekeeping", "Status": "Enabled", "Filter": {"Prefix": f"{prefix}/"},
                    "Expiration": {"ExpiredObjectDeleteMarker": True},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
    return [tagged("standard", standard_days), tagged("security", 2), housekeeping]


def legacy_delete_statement(bucket: str, prefix: str) -> dict[str, Any]:
    """The deny-delete statement an older auditlock wrote for `prefix` (Sid not per prefix)."""
    return {**protection.delete_statement(bucket, prefix), "Sid": protection.SID_DELETE}


class TestSharedBucket:
    def test_two_prefixes_keep_their_own_rules_and_statements(self, endpoint: S3Endpoint, name: str,
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
        """Two services provisioned one after the other into one bucket each keep their rules and deny-delete
        statement; provisioning either again prints "no changes"."""
        first = prefixed_env(tmp_path / "a", endpoint, name, "svc-a")
        second = prefixed_env(tmp_path / "b", endpoint, name, "svc-b")
        assert main(["provision", "--config", str(first.config_path)]) == 0
        after_first = snapshot(endpoint, name)
        assert main(["provision", "--config", str(second.config_path)]) == 0
        state = snapshot(endpoint, name)
        assert rules_of(state, "svc-a") == rules_of(after_first, "svc-a")
        for prefix, env in (("svc-a", first), ("svc-b", second)):
            wanted = lifecycle_configuration(env.config)["Rules"]
            assert rules_of(state, prefix) == sorted(wanted, key=lambda r: r["ID"])
        assert delete_statements(state) == {protection.delete_sid(p): f"arn:aws:s3:::{name}/{p}/*"
                                            for p in ("svc-a", "svc-b")}
        capsys.readouterr()
        for env in (first, second):
            assert main(["provision", "--config", str(env.config_path)]) == 0
            assert capsys.readouterr().out.splitlines()[:2] == [f"bucket {name}:", "  no changes"]
        assert snapshot(endpoint, name) == state

    def test_legacy_rules_belong_to_the_prefix_they_filter_on(self, endpoint: S3Endpoint, name: str,
                                                              tmp_path: Path) -> None:
        """Rules and the statement an older auditlock wrote for one prefix are kept when another prefix is
        provisioned, and replaced by per-prefix ones (as long) when their own prefix is provisioned again."""
        client = endpoint.client()
        make_lock_bucket(client, name)
        legacy = legacy_rules("audit", standard_days=1)
        client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": legacy})
        client.put_bucket_policy(Bucket=name, Policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [legacy_delete_statement(name, "audit")]}))
        provision(make_config(tmp_path, endpoint, prefix="other"), name)
        state = snapshot(endpoint, name)
        assert rules_of(state, "audit") == sorted(legacy, key=lambda r: r["ID"])
        assert delete_statements(state) == {protection.SID_DELETE: f"arn:aws:s3:::{name}/audit/*",
                                            protection.delete_sid("other"): f"arn:aws:s3:::{name}/other/*"}
        report = provision(make_config(tmp_path, endpoint), name)
        assert any("replacing legacy: auditlock-housekeeping, auditlock-retention-security, "
                   "auditlock-retention-standard" in c for c in report.changes)
        state = snapshot(endpoint, name)
        wanted = lifecycle_configuration(make_config(tmp_path, endpoint))["Rules"]
        assert rules_of(state, "audit") == sorted(wanted, key=lambda r: r["ID"])
        assert set(delete_statements(state)) == {protection.delete_sid("audit"), protection.delete_sid("other")}
        assert provision(make_config(tmp_path, endpoint), name).changes == []

    def test_legacy_rule_is_not_replaced_by_a_shorter_one(self, endpoint: S3Endpoint, name: str,
                                                          tmp_path: Path) -> None:
        """A legacy class rule of our prefix that expires later than the config's class is refused, like ours."""
        client = endpoint.client()
        make_lock_bucket(client, name)
        client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={
            "Rules": legacy_rules("audit", standard_days=5)})
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match=r"class 'standard': expiry after 5 days in the bucket, 1 days"):
            provision(make_config(tmp_path, endpoint), name)
        assert snapshot(endpoint, name) == before

    def test_rule_with_our_id_on_another_prefix_is_refused(self, endpoint: S3Endpoint, name: str,
                                                           tmp_path: Path) -> None:
        """A rule carrying an ID we would write but filtering on another prefix is not replaced: refused."""
        client = endpoint.client()
        make_lock_bucket(client, name)
        taken = {"ID": class_rule_id("standard", "audit"), "Status": "Enabled", "Filter": {"Prefix": "other/"},
                 "Expiration": {"Days": 30}}
        client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [taken]})
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match=r"would remove or weaken another prefix's rules: rule "
                                                 rf"'{taken['ID']}' filters on prefix 'other/'"):
            provision(make_config(tmp_path, endpoint), name)
        assert snapshot(endpoint, name) == before

    def test_statement_with_our_sid_over_other_objects_is_refused(self, endpoint: S3Endpoint, name: str,
                                                                  tmp_path: Path) -> None:
        """A deny-delete statement with our Sid over another prefix's objects is not replaced: refused."""
        client = endpoint.client()
        make_lock_bucket(client, name)
        taken = {**protection.delete_statement(name, "other"), "Sid": protection.delete_sid("audit")}
        client.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [taken]}))
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match="would remove another prefix's deletion protection"):
            provision(make_config(tmp_path, endpoint), name)
        assert snapshot(endpoint, name) == before

    def test_enclosing_prefix_may_not_expire_anothers_objects_early(self, endpoint: S3Endpoint, name: str,
                                                                    tmp_path: Path) -> None:
        """A prefix enclosing another's may not add class rules that expire the other's objects sooner."""
        provision(make_config(tmp_path, endpoint, prefix="audit/inner", security_days=5), name)
        before = snapshot(endpoint, name)
        with pytest.raises(ProvisionError, match=r"would expire objects of class 'security' under 'audit/inner/' "
                                                 r"after 2 days, before the 5 days"):
            provision(make_config(tmp_path, endpoint, security_days=2), name)
        assert snapshot(endpoint, name) == before
