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
from auditlock.bucket import checks, protection
from auditlock.bucket.lifecycle import lifecycle_configuration
from auditlock.bucket.provision import Provisioner, Report, provision
from auditlock.cli import main
from auditlock.config import Config, build_config
from auditlock.errors import ProvisionError
from tests.support.archive_env import SHORT_CLASSES, ArchiveEnv
from tests.support.s3servers import S3Endpoint, make_lock_bucket, make_plain_bucket

TLS_NOTE = "AuditlockDenyInsecureTransport not set"
ACL_NOTE = "BlockPublicAcls left off"


@pytest.fixture
def endpoint(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """The S3 server of this case, its credentials in the environment (as the CLI and agent find them)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
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
                security_days: int = 2, hot_days: int | None = None) -> Config:
    """A config shipping to `endpoint` (None: AWS) under prefix `audit`, with the given class lengths."""
    standard_class: dict[str, Any] = {"days": standard[0], "mode": standard[1]}
    if hot_days is not None:
        standard_class["hot_days"] = hot_days
    sink: dict[str, Any] = {"bucket": "unused", "prefix": "audit"}
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
        rules = sorted((checks.normal_rule(r) for r in state["lifecycle"]), key=lambda r: r["ID"])
        assert rules == sorted(lifecycle_configuration(config)["Rules"], key=lambda r: r["ID"])
        assert statement_ids(state) == [protection.SID_DELETE]
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
                        and key.startswith(checks.rule_filter(r)[0])
                        and all(tags.get(t["Key"]) == t["Value"] for t in checks.rule_filter(r)[1])]
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
        assert "would change: lifecycle: rules auditlock-retention-security, auditlock-retention-standard" in out
        with pytest.raises(ClientError):
            env.endpoint.client().head_bucket(Bucket=env.bucket)

    def test_lengthening_and_hardening_are_applied(self, endpoint: S3Endpoint, name: str, tmp_path: Path) -> None:
        """A longer default retention, GOVERNANCE -> COMPLIANCE and longer classes are changes, not refusals."""
        client = endpoint.client()
        provision(make_config(tmp_path, endpoint), name)
        report = provision(make_config(tmp_path, endpoint, standard=(3, "COMPLIANCE"), security_days=5), name)
        assert report.changes == [
            "object lock default retention: GOVERNANCE 1 days -> COMPLIANCE 3 days",
            "lifecycle: rules auditlock-retention-security, auditlock-retention-standard",
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
        assert statement_ids(state) == ["OtherDenyWebsite", protection.SID_DELETE]
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
        assert statement_ids(state) == [protection.SID_TLS, protection.SID_DELETE]
        assert Provisioner(make_config(tmp_path, None), name, client).run().changes == []
