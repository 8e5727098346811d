"""`auditlock legal-hold`: holds on every object (and digest) of a period, observed, enforced, released, recorded."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from auditlock.archive.timerange import format_time
from auditlock.cli import main
from tests.support.archive_env import ArchiveEnv
from tests.support.calendar import months_ago, to_ns
from tests.support.s3servers import content_md5
from tests.support.shipping import drain_or_fail
from tests.support.verify_env import verify
from tests.test_lifecycle import TEMPLATE, CfnLoader, resource

OPERATOR = "user#7"
EARLIER, LATER = months_ago(2), months_ago(1)
# The dispute: the first half of LATER. Outside it: EARLIER's object, and LATER's second-half object.
DISPUTE = (format_time(LATER.day(1, "00:00:00")), format_time(LATER.day(15, "00:00:00")))


def ticking(start: Any) -> Iterator[int]:
    """A writer clock from `start`, one millisecond per event."""
    return itertools.count(to_ns(start), 1_000_000)


class HeldArchive:
    """Four batches shipped by the real agent into GOVERNANCE objects: EARLIER; LATER day 3 (two writers, one
    about Order 77 by user#5); LATER day 20 (after the dispute)."""

    def __init__(self, env: ArchiveEnv) -> None:
        self.env = env
        self.client = env.endpoint.client()
        self.objects = {}
        for name, start, fields in (("earlier", EARLIER.day(5), {}), ("in-dispute", LATER.day(3), {}),
                                    ("order-77", LATER.day(4), {"actor": "user#5", "target_id": 77}),
                                    ("after", LATER.day(20), {})):
            before = set(env.archive_keys())
            self.write(start, **fields)
            drain_or_fail(env.config)
            [self.objects[name]] = set(env.archive_keys()) - before

    def write(self, start: Any, actor: str = "user#1", **fields: Any) -> None:
        """Three order.updated events from `start` (on orders 0..2, unless `fields` name a target_id)."""
        ticks = ticking(start)
        records = self.env.write_events(3, actor=actor, clock=lambda: next(ticks), **fields)
        assert {r["retention"] for r in records} == {"standard"}  # GOVERNANCE: a bypass could delete it

    def hold(self, *args: str) -> tuple[int, str, str]:
        """`auditlock legal-hold ARGS --config … --actor OPERATOR` in-process: (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["legal-hold", *args, "--config", str(self.env.config_path), "--actor", OPERATOR])
        return status, out.getvalue(), err.getvalue()

    def held(self, key: str) -> bool:
        """Whether the current version of `key` carries a legal hold, as S3 reports it."""
        try:
            status = self.client.get_object_legal_hold(Bucket=self.env.bucket, Key=key)["LegalHold"].get("Status")
        except ClientError:
            return False
        return status == "ON"

    def digests_listing(self, key: str) -> set[str]:
        """The digests whose objects list `key`."""
        found = set()
        for digest in self.env.stored_keys():
            if "/digests/" in digest:
                body = self.client.get_object(Bucket=self.env.bucket, Key=digest)["Body"].read()
                if key.encode() in body:
                    found.add(digest)
        return found

    def delete_with_bypass(self, key: str) -> None:
        """DELETE the current version of `key` with BypassGovernanceRetention (what an admin could do)."""
        version = self.client.head_object(Bucket=self.env.bucket, Key=key)["VersionId"]
        self.client.delete_object(Bucket=self.env.bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)


@pytest.fixture
def archive(shipping_env: ArchiveEnv) -> HeldArchive:
    """The four-batch archive on a fresh lock bucket (moto, then RADOS Gateway), credentials in the environment."""
    return HeldArchive(shipping_env)


class TestSetObserveRelease:
    def test_set_holds_every_covering_object_and_its_digest(self, archive: HeldArchive) -> None:
        """A hold on the dispute's period is on each object that can hold its events and their digests, no other."""
        status, out, err = archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "matter 17")
        assert status == 0, err
        covering = {archive.objects["in-dispute"], archive.objects["order-77"]}
        digests = set().union(*(archive.digests_listing(key) for key in covering))
        assert digests
        assert out.strip() == f"held: 2 objects and {len(digests)} digests"
        for key in sorted(covering | digests):
            assert archive.held(key), key
        for name in ("earlier", "after"):
            assert not archive.held(archive.objects[name]), name

    def test_delete_refused_even_with_governance_bypass(self, archive: HeldArchive) -> None:
        """While held, a GOVERNANCE object cannot be deleted even with BypassGovernanceRetention; released, it can."""
        key = archive.objects["in-dispute"]
        assert archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "matter 17")[0] == 0
        with pytest.raises(ClientError) as info:
            archive.delete_with_bypass(key)
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert archive.client.head_object(Bucket=archive.env.bucket, Key=key)["ObjectLockLegalHoldStatus"] == "ON"
        status, out, err = archive.hold("release", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "closed")
        assert status == 0, err
        assert out.startswith("released: 2 objects and ")
        assert not archive.held(key)
        archive.delete_with_bypass(key)  # the hold was what refused it: GOVERNANCE alone yields to the bypass

    def test_status_lists_the_holds(self, archive: HeldArchive) -> None:
        """`status` lists each covering key with ON or OFF and counts the held ones."""
        status, out, _ = archive.hold("status", "--from", DISPUTE[0], "--to", DISPUTE[1])
        assert status == 0
        assert out.splitlines()[-1].startswith("0 of ")
        archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "matter 17")
        status, out, _ = archive.hold("status", "--from", DISPUTE[0], "--to", DISPUTE[1])
        lines = out.splitlines()
        assert f"ON   {archive.objects['in-dispute']}" in lines
        held, _, total = lines[-1].partition(" of ")
        assert held == total.split()[0]

    def test_verify_reports_held_objects_and_stays_clean(self, archive: HeldArchive) -> None:
        """verify lists the held objects and digests (count and keys) as information; the archive stays clean."""
        archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "matter 17")
        held = {key for key in archive.env.stored_keys() if archive.held(key)}
        status, report = verify("--config", str(archive.env.config_path))
        assert (status, report["findings"]) == (0, [])
        assert {f"audit/{key}" for key in report["legal_holds"]} == held


class TestNarrowedHolds:
    def test_target_holds_only_objects_with_its_events(self, archive: HeldArchive) -> None:
        """--target Order:77 holds the one object holding Order 77's events in the period, not its neighbour."""
        status, out, err = archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--target", "Order:77",
                                        "--reason", "matter 18")
        assert status == 0, err
        assert out.startswith("held: 1 objects and ")
        assert archive.held(archive.objects["order-77"])
        assert not archive.held(archive.objects["in-dispute"])

    def test_by_actor_holds_only_objects_with_their_events(self, archive: HeldArchive) -> None:
        """--by-actor user#5 holds the object holding user#5's events; an actor with none holds nothing."""
        archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--by-actor", "user#5", "--reason", "m")
        assert archive.held(archive.objects["order-77"])
        assert not archive.held(archive.objects["in-dispute"])
        status, out, _ = archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--by-actor", "nobody",
                                      "--reason", "m")
        assert (status, out.strip()) == (0, "held: 0 objects and 0 digests")


class TestWhatCannotBeRuledOut:
    def test_object_without_bounds_is_held_and_named(self, archive: HeldArchive) -> None:
        """An archive object in the period without readable event bounds, listed by no digest, is held, and both
        are said; a key that is no archive object is not touched."""
        stamp = LATER.day(2).strftime("%Y%m%dT%H%M%SZ")
        partition = f"audit/events/year={LATER.year:04d}/month={LATER.month:02d}/"
        odd, foreign = f"{partition}{stamp}-standard-{'ab' * 16}.jsonl.gz", f"{partition}notes.txt"
        for key in (odd, foreign):
            archive.client.put_object(Bucket=archive.env.bucket, Key=key, Body=b"x", ContentMD5=content_md5(b"x"),
                                      ObjectLockMode="GOVERNANCE",
                                      ObjectLockRetainUntilDate=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
        status, out, err = archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "m")
        assert status == 0, err
        assert out.startswith("held: 3 objects and ")
        assert archive.held(odd)
        assert not archive.held(foreign)
        assert f"note: {odd}: no readable event bounds in its metadata; held (cannot be ruled out)" in err
        assert f"note: {odd}: no digest lists it (verify reports it); held all the same" in err


class TestRecorded:
    def test_each_action_is_an_audit_event(self, archive: HeldArchive) -> None:
        """set, status and release each write an event by the operator, shipped with the trail."""
        for action in (["set", "--reason", "matter 17"], ["status"], ["release", "--reason", "closed"]):
            assert archive.hold(*action, "--from", DISPUTE[0], "--to", DISPUTE[1])[0] == 0
        drain_or_fail(archive.env.config)
        events = [e for e in archive.env.archive_events() if e["event_type"].startswith("legal_hold.")]
        assert [e["event_type"] for e in events] == ["legal_hold.set", "legal_hold.status_read",
                                                     "legal_hold.released"]
        assert {e["actor_id"] for e in events} == {OPERATOR}
        payload = events[0]["payload"]
        assert payload["scope"] == {"from": DISPUTE[0], "to": DISPUTE[1]}
        assert (payload["reason"], payload["objects"]) == ("matter 17", 2)
        assert archive.objects["in-dispute"] in payload["keys"]

    def test_unrecordable_action_is_not_taken(self, archive: HeldArchive, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the event cannot be written (the spool is unusable) nothing is held, and the cause is named."""
        blocker = archive.env.root / "not-a-dir"
        blocker.write_text("")
        monkeypatch.setenv("AUDITLOCK_SPOOL_DIR", str(blocker / "spool"))
        status, out, err = archive.hold("set", "--from", DISPUTE[0], "--to", DISPUTE[1], "--reason", "m")
        assert (status, out) == (1, "")
        assert "the legal_hold.set event could not be recorded in the audit trail, so nothing was done" in err
        assert not archive.held(archive.objects["in-dispute"])


class TestUsage:
    @pytest.mark.parametrize(("args", "message"), [
        (["set", "--from", "2026-01", "--to", "2026-02"], "argument --reason: set needs a reason"),
        (["set", "--from", "yesterday", "--to", "2026-02", "--reason", "m"], "argument --from"),
        (["status", "--from", "2026-01", "--to", "2026-02", "--target", "Order"], "argument --target: 'Order' is"),
    ])
    def test_bad_flags_exit_2(self, args: list[str], message: str, tmp_path: Path) -> None:
        """A bad flag exits 2 naming it, before the config or the archive is read."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(["legal-hold", *args, "--actor", OPERATOR, "--config", str(tmp_path / "absent.toml")])
        assert status == 2
        assert message in err.getvalue()


class TestIam:
    @staticmethod
    def actions(policy: dict[str, Any]) -> set[str]:
        """Every action a policy's statements (both branches of a condition) allow."""
        found: set[str] = set()
        for statement in policy["PolicyDocument"]["Statement"]:
            for branch in statement["Fn::If"][1:] if "Fn::If" in statement else [statement]:
                if isinstance(branch, dict) and "Action" in branch:
                    action = branch["Action"]
                    found |= {action} if isinstance(action, str) else set(action)
        return found

    def test_operators_get_the_legal_hold_permissions(self) -> None:
        """The legal-hold policy gives Put/GetObjectLegalHold (plus reading and listing) to the operator roles."""
        template = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
        policy = resource(template, "LegalHoldPolicy")
        assert self.actions(policy) == {"s3:PutObjectLegalHold", "s3:GetObjectLegalHold", "s3:GetObject",
                                        "s3:ListBucket", "kms:Decrypt"}
        assert policy["Roles"] == {"Fn::If": ["HasLegalHoldRoles", {"Ref": "LegalHoldRoleNames"},
                                              {"Ref": "AWS::NoValue"}]}

    def test_the_agent_never_gets_them(self) -> None:
        """The agent's policy has no legal-hold action: a hold is an operator's decision."""
        template = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
        assert not {a for a in self.actions(resource(template, "AgentPolicy")) if "LegalHold" in a}
