"""`auditlock provision`: make the archive bucket match the config — create it, or check and update it.

Read everything first (Object Lock, versioning, lifecycle, public access block, encryption, policy), refuse any
weakening (`checks`), then apply only what differs, in an order that never leaves the bucket less protected
than before: encryption, public access block, Object Lock, lifecycle, policy. A second run finds nothing to do
and says so. Where an S3-compatible server lacks a call (RADOS Gateway 16: default encryption), the step is
reported as a note — never skipped silently, never faked; on AWS (no `endpoint_url`) every failure is an error.
boto3 is imported lazily (through `archive.client`); this module belongs with the `agent` extra.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from auditlock.archive.client import make_s3_client
from auditlock.bucket import checks, ownership, protection
from auditlock.bucket.lifecycle import lifecycle_configuration, normal_rule, object_lock_configuration
from auditlock.config.model import Config
from auditlock.errors import ProvisionError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Error codes meaning "no such configuration" when reading a bucket's settings.
MISSING_CODES = frozenset({"NoSuchLifecycleConfiguration", "NoSuchPublicAccessBlockConfiguration",
                           "ServerSideEncryptionConfigurationNotFoundError", "NoSuchBucketPolicy",
                           "ObjectLockConfigurationNotFoundError"})
# Error codes an S3-compatible server answers for a call it does not implement.
UNSUPPORTED_CODES = frozenset({"NotImplemented", "InvalidArgument", "MethodNotAllowed", "InvalidRequest"})


@dataclass
class BucketState:
    """A bucket's current settings, each None (or empty) where there are none."""

    exists: bool
    lock: dict[str, Any] | None = None
    versioning: str | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    public_access: dict[str, bool] | None = None
    encryption: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None


@dataclass
class Step:
    """One change to make: what, from what to what, and the call that makes it."""

    what: str
    detail: str
    apply: Callable[[], object]
    optional: bool = False  # on an S3-compatible endpoint, "not supported" becomes a note


@dataclass
class Report:
    """What a run did (or, with dry_run, would do) and what it could not do."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self, dry_run: bool) -> list[str]:
        """Human-readable lines, "no changes" when there were none."""
        verb = "would change" if dry_run else "changed"
        out = [f"{verb}: {c}" for c in self.changes] or ["no changes"]
        return [*out, *(f"note: {n}" for n in self.notes)]


class Provisioner:
    """Brings one bucket to the configuration of one `Config`."""

    def __init__(self, config: Config, bucket: str, client: S3Client) -> None:
        checks.check_bucket_name(bucket)
        self.config = config
        self.bucket = bucket
        self.client = client
        self.prefix = config.sink.prefix
        endpoint = config.sink.endpoint_url
        self.aws = endpoint is None
        self.plain_http = endpoint is not None and urlsplit(endpoint).scheme == "http"

    def run(self, *, dry_run: bool = False) -> Report:
        """Plan (refusing any weakening before the first write), then apply unless `dry_run`."""
        report = Report()
        state = self.read()
        steps = [] if state.exists else [self._create_step()]
        if not state.exists:
            state = BucketState(exists=False, lock={"ObjectLockEnabled": "Enabled"}, versioning="Enabled")
        self.check(state)
        steps += self.plan(state, report)
        for step in steps:
            if dry_run or self._apply(step, report):
                report.changes.append(f"{step.what}: {step.detail}")
        return report

    # -- reading ------------------------------------------------------------------------------------------

    def read(self) -> BucketState:
        """The bucket's current settings."""
        if not self._exists():
            return BucketState(exists=False)
        b = self.bucket
        lock = self._get(lambda: self.client.get_object_lock_configuration(Bucket=b), "ObjectLockConfiguration")
        versioning = self._get(lambda: self.client.get_bucket_versioning(Bucket=b), "Status")
        lifecycle = self._get(lambda: self.client.get_bucket_lifecycle_configuration(Bucket=b), "Rules")
        public = self._get(lambda: self.client.get_public_access_block(Bucket=b), "PublicAccessBlockConfiguration")
        encryption = self._get(lambda: self.client.get_bucket_encryption(Bucket=b),
                               "ServerSideEncryptionConfiguration")
        policy = self._get(lambda: self.client.get_bucket_policy(Bucket=b), "Policy")
        # RADOS Gateway answers an unset encryption with an empty configuration rather than an error.
        return BucketState(exists=True, lock=lock or None, versioning=versioning, rules=list(lifecycle or []),
                           public_access=public or None, encryption=encryption if encryption else None,
                           policy=json.loads(policy) if policy else None)

    def _exists(self) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415 - boto3 only when provisioning

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            if code in ("403", "AccessDenied"):
                raise ProvisionError(f"bucket {self.bucket!r} exists but these credentials may not use it (403); "
                                     "bucket names are global — choose another, or use the owner's credentials"
                                     ) from exc
            raise self._error("HeadBucket", exc) from exc
        return True

    def _get(self, call: Callable[[], Any], key: str) -> Any:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            return call().get(key)
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise self._error(f"reading {key}", exc) from exc

    # -- checking and planning ----------------------------------------------------------------------------

    def check(self, state: BucketState) -> None:
        """Raise ProvisionError for a bucket we must not use or a change we must not make."""
        wanted = object_lock_configuration(self.config)
        checks.check_lock(self.bucket, state.lock, wanted)
        if state.versioning != "Enabled":
            raise ProvisionError(f"bucket {self.bucket!r}: versioning is {state.versioning or 'off'}, but an Object "
                                 "Lock bucket must keep it Enabled; enable it again (it cannot be suspended)")
        checks.check_lifecycle(self.bucket, self.prefix, self.config.retention.classes, state.rules)
        wanted_rules = lifecycle_configuration(self.config)["Rules"]
        ownership.check_rules(self.bucket, self.prefix, state.rules, wanted_rules)
        ownership.check_policy(self.bucket, self.prefix, state.policy)

    def plan(self, state: BucketState, report: Report) -> list[Step]:
        """The steps that bring `state` to the config, in application order."""
        return [s for s in (self._encryption_step(state), self._public_access_step(state, report),
                            self._lock_step(state), self._lifecycle_step(state), self._policy_step(state, report))
                if s is not None]

    def _create_step(self) -> Step:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "ObjectLockEnabledForBucket": True}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        return Step("bucket", f"new bucket {self.bucket}, Object Lock enabled (versioning on)",
                    lambda: self.client.create_bucket(**arguments))

    def _lock_step(self, state: BucketState) -> Step | None:
        wanted = object_lock_configuration(self.config)
        now = (state.lock or {}).get("Rule", {}).get("DefaultRetention")
        new = wanted["Rule"]["DefaultRetention"]
        if now and _retention(now) == _retention(new):
            return None
        return Step("object lock default retention", f"{_retention(now)} -> {_retention(new)}",
                    lambda: self.client.put_object_lock_configuration(
                        Bucket=self.bucket, ObjectLockConfiguration=wanted))  # type: ignore[arg-type]

    def _lifecycle_step(self, state: BucketState) -> Step | None:
        wanted = lifecycle_configuration(self.config)["Rules"]
        merged = ownership.merged_rules(state.rules, wanted, self.prefix)
        now = {r.get("ID"): normal_rule(r) for r in state.rules}
        changed = [r["ID"] for r in wanted if _canonical(now.get(r["ID"])) != _canonical(r)]
        if not changed and not merged.replaced:
            return None
        detail = "rules " + ", ".join(changed)
        if merged.replaced:
            detail += f" (replacing legacy: {', '.join(merged.replaced)})"
        if merged.kept:
            detail += f" (kept: {', '.join(merged.kept)})"
        return Step("lifecycle", detail, lambda: self.client.put_bucket_lifecycle_configuration(
            Bucket=self.bucket, LifecycleConfiguration={"Rules": merged.rules}))  # type: ignore[typeddict-item]

    def _public_access_step(self, state: BucketState, report: Report) -> Step | None:
        wanted = protection.public_access_block(state.public_access, block_public_acls=self.aws)
        if not wanted["BlockPublicAcls"]:
            report.notes.append("public access block: BlockPublicAcls left off on this S3-compatible endpoint "
                                "(RADOS Gateway then refuses every PutObject); auditlock sends no ACLs — turn it "
                                "on yourself where your server handles it, provision never turns it off")
        now = {flag: bool((state.public_access or {}).get(flag)) for flag in protection.PUBLIC_ACCESS_FLAGS}
        if now == wanted:
            return None
        on = ", ".join(f for f in protection.PUBLIC_ACCESS_FLAGS if wanted[f] and not now[f])
        return Step("public access block", f"turned on {on}", lambda: self.client.put_public_access_block(
            Bucket=self.bucket, PublicAccessBlockConfiguration=wanted))  # type: ignore[arg-type]

    def _encryption_step(self, state: BucketState) -> Step | None:
        wanted = protection.encryption_configuration(self.config.sink.kms_key_id)
        if _encryption(state.encryption) == _encryption(wanted):
            return None
        return Step("default encryption", f"{_encryption(state.encryption)} -> {_encryption(wanted)}",
                    lambda: self.client.put_bucket_encryption(
                        Bucket=self.bucket, ServerSideEncryptionConfiguration=wanted),  # type: ignore[arg-type]
                    optional=True)

    def _policy_step(self, state: BucketState, report: Report) -> Step | None:
        if self.plain_http:
            report.notes.append(f"bucket policy: {protection.SID_TLS} not set — the endpoint "
                                f"{self.config.sink.endpoint_url} is plain HTTP, and the statement would deny "
                                "every request made through it")
        ours = protection.policy_statements(self.bucket, self.prefix, tls_only=not self.plain_http)
        wanted = ownership.merged_policy(self.bucket, self.prefix, state.policy, ours)
        if state.policy is not None and _canonical(state.policy) == _canonical(wanted):
            return None
        sids = ", ".join(s["Sid"] for s in ours)
        return Step("bucket policy", f"statements {sids}", lambda: self.client.put_bucket_policy(
            Bucket=self.bucket, Policy=json.dumps(wanted)), optional=True)

    # -- applying -----------------------------------------------------------------------------------------

    def _apply(self, step: Step, report: Report) -> bool:
        """Run one step; True if it changed the bucket, False if an S3-compatible server does not support it."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            step.apply()
        except ClientError as exc:
            if step.optional and not self.aws and _code(exc) in UNSUPPORTED_CODES:
                report.notes.append(f"{step.what}: not set — the server answered {_code(exc)} "
                                    f"({_message(exc)}); it does not support this setting")
                return False
            raise self._error(step.what, exc) from exc
        return True

    def _error(self, what: str, exc: Exception) -> ProvisionError:
        return ProvisionError(f"bucket {self.bucket!r}: {what} failed: {_code(exc)} ({_message(exc)})")


def provision(config: Config, bucket: str, *, region: str | None = None, dry_run: bool = False) -> Report:
    """Provision `bucket` for `config` with an S3 client for its `[sink]` (region overridable)."""
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    checks.check_bucket_name(bucket)
    sink = replace(config.sink, bucket=bucket, region=region or config.sink.region)
    try:
        return Provisioner(config, bucket, make_s3_client(sink)).run(dry_run=dry_run)
    except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
        raise ProvisionError(f"bucket {bucket!r}: {exc}") from exc


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _message(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Message") or "no message")


def _retention(default: dict[str, Any] | None) -> str:
    if not default:
        return "none"
    years = default.get("Years")
    return f"{default.get('Mode')} {years} years" if years else f"{default.get('Mode')} {default.get('Days')} days"


def _encryption(configuration: dict[str, Any] | None) -> str:
    rules = (configuration or {}).get("Rules") or [{}]
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    if not default:
        return "none"
    key = default.get("KMSMasterKeyID")
    return f"{default.get('SSEAlgorithm')}" + (f" key {key}" if key else "")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
