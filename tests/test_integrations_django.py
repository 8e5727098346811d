"""The Django integration in a real Django project (tests/django_project), on SQLite and PostgreSQL: model
changes written at commit and as attempts on rollback, many-to-many changes, bulk QuerySet calls, auth and
permission signals, the middleware's actor on sync and async views, management commands as jobs, system checks.

Each scenario runs in a process of its own (Django's settings are per process) and its events are read back
from the spool the process closed."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from auditlock.query.spool import copy_spool_events

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
service = "shop"

[spool]
dir = "{spool}"
durability = "sync"

[events]
include = ["order.*", "customer.*", "user.*", "auth.*", "access.*", "item.*", "sku.*", "place.*", "car.*",
           "ticket.*", "document.*"]

[targets.Order]
fields = ["status", "total", "customer", "tags"]

[targets.Customer]
fields = ["name"]

[targets.User]
fields = ["username", "is_staff"]

[targets.Group]
fields = []

[targets.Item]
fields = ["name"]

[targets.Sku]
fields = ["code", "name"]

[targets.Place]
fields = ["name"]

[targets.Car]
fields = ["wheels", "plate"]

[targets.Ticket]
fields = ["status"]

[targets.Document]
fields = ["title", "body", "blob", "data", "due", "day", "attachment", "took"]

[retention]
default = "standard"

[retention.classes.standard]
days = 30
"""


class Project:
    """One scenario run of the test project against a database, and the events it left in its spool."""

    def __init__(self, root: Path, database: str, config: str = CONFIG) -> None:
        self.spool = root / "spool"
        self.config = root / "auditlock.toml"
        self.config.write_text(config.format(spool=self.spool))
        self.database = database

    def run(self, name: str, *, models: dict[str, str] | None = None, **settings: str) -> dict[str, Any]:
        """Run scenario `name` (`settings`: AUDITLOCK_TEST_* variables of the project's settings); its JSON result."""
        env = {**os.environ, "AUDITLOCK_CONFIG": str(self.config), "AUDITLOCK_TEST_DB": self.database,
               "PYTHONPATH": str(ROOT), **{f"AUDITLOCK_TEST_{key.upper()}": value for key, value in settings.items()}}
        if models is not None:
            env["AUDITLOCK_TEST_MODELS"] = json.dumps(models)
        done = subprocess.run([sys.executable, "-m", "tests.django_project.scenarios", name], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def events(self, *prefixes: str) -> list[dict[str, Any]]:
        """The spool's events (those whose type starts with one of `prefixes`, if given), in write order."""
        out = io.BytesIO()
        copy_spool_events(self.spool, out)
        events = [orjson.loads(line) for line in out.getvalue().splitlines()]
        events.sort(key=lambda e: (e["occurred_at"], e["writer"], e["seq"]))
        return [e for e in events if not prefixes or e["event_type"].startswith(prefixes)]

    def spool_bytes(self) -> bytes:
        """Every byte of every file in the spool."""
        return b"".join(p.read_bytes() for p in sorted(self.spool.rglob("*")) if p.is_file())


def changes(event: dict[str, Any]) -> dict[str, Any]:
    """An event's `payload.changes`."""
    return event["payload"].get("changes", {})


@pytest.fixture(params=["sqlite", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    """The project on SQLite (a file) or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return Project(tmp_path, f"sqlite:{tmp_path / 'db.sqlite3'}")
    url = urlsplit(request.getfixturevalue("postgres_url"))
    return Project(tmp_path, f"postgres:{url.hostname}:{url.port}:{url.path.lstrip('/')}")


class TestModelChanges:
    def test_create_update_delete_with_allowlisted_values(self, project: Project) -> None:
        """created / updated / deleted with allowlisted before/after only; a save that changes nothing writes
        nothing; a column outside the allowlist never reaches the spool bytes."""
        ids = project.run("crud")
        order = str(ids["order"])
        events = project.events("order.", "customer.")
        assert [e["event_type"] for e in events] == ["customer.created", "order.created", "order.updated",
                                                     "order.updated", "order.updated", "order.deleted"]
        assert all(e["actor_id"] == "user:7" for e in events)
        created, paid, noted, shipped, deleted = events[1:]
        assert created["target_id"] == order
        assert changes(created) == {"status": [None, "new"], "total": [None, "10.00"],
                                    "customer": [None, ids["customer"]]}
        assert changes(paid) == {"status": ["new", "paid"]}
        assert changes(noted) == {}
        assert changes(shipped) == {"status": ["paid", "shipped"]}
        assert changes(deleted)["status"] == ["shipped", None]
        assert b"SECRET-NOTE" not in project.spool_bytes()

    def test_rolled_back_changes_are_attempts(self, project: Project) -> None:
        """A change in a transaction or savepoint that rolls back is `update_attempted` (rolled_back); the
        committed one is `updated`."""
        project.run("rollback")
        events = project.events("order.")
        kinds = [(e["event_type"], e["payload"].get("outcome"), changes(e)) for e in events]
        assert kinds[0][0] == "order.created"
        assert ("order.update_attempted", "rolled_back", {"status": ["new", "rolled"]}) in kinds
        assert ("order.update_attempted", "rolled_back", {"total": ["0.00", "5.00"]}) in kinds
        assert ("order.updated", None, {"status": ["new", "outer"]}) in kinds
        assert len(kinds) == 4

    def test_a_failing_request_leaves_an_attempt(self, project: Project) -> None:
        """A view whose atomic block raises: its change is rolled back and recorded as an attempt by the user."""
        ids = project.run("failing_view")
        [attempt] = project.events("order.update")
        assert (attempt["event_type"], attempt["payload"]["outcome"]) == ("order.update_attempted", "rolled_back")
        assert attempt["actor_id"] == f"user:{ids['user']}"


class TestKeysAndInheritance:
    def test_keys_inheritance_proxies_and_managers(self, project: Project) -> None:
        """UUID and char keys (preset, changed in place), a tracked parent saved through its untracked child, a
        tracked child, a proxy and a model whose default manager hides the row are all recorded; a post_save
        receiver saving the object again records both saves."""
        ids = project.run("keys_and_inheritance")
        seen = [(e["event_type"], e["target_type"], e["target_id"], changes(e))
                for e in project.events("item.", "sku.", "place.", "car.", "order.", "ticket.")
                if not e["event_type"].startswith("place.bulk")]
        item, preset, place, car = ids["item"], ids["preset"], str(ids["place"]), str(ids["car"])
        seen, tail = seen[:-2], seen[-2:]
        assert seen == [
            ("item.created", "Item", item, {"name": [None, "a"]}),
            ("item.updated", "Item", item, {"name": ["a", "b"]}),
            ("item.created", "Item", preset, {"name": [None, "preset"]}),
            ("sku.created", "Sku", "A1", {"code": [None, "A1"], "name": [None, "x"]}),
            ("sku.created", "Sku", "B2", {"code": [None, "B2"], "name": [None, "x"]}),
            ("place.created", "Place", place, {"name": [None, "Luigi's"]}),
            ("place.updated", "Place", place, {"name": ["Luigi's", "Mario's"]}),
            ("place.deleted", "Place", place, {"name": ["Mario's", None]}),
            ("car.created", "Car", car, {"wheels": [None, 3], "plate": [None, "P1"]}),
            ("car.updated", "Car", car, {"wheels": [3, 4], "plate": ["P1", "P2"]}),
            ("car.deleted", "Car", car, {"wheels": [4, None], "plate": ["P2", None]}),
            ("order.created", "Order", str(ids["rush"]), {"customer": [None, None], "status": [None, "rush"],
                                                          "total": [None, 0]}),
            ("order.updated", "Order", str(ids["rush"]), {"status": ["rush", "rushed"]}),
            ("ticket.created", "Ticket", str(ids["ticket"]), {"status": [None, "closed"]}),
            ("ticket.updated", "Ticket", str(ids["ticket"]), {"status": ["closed", "reopened"]}),
        ]
        assert tail == [("item.created", "Item", ids["slugged"], {"name": [None, "slug me"]}),  # no failed attempt
                        ("item.updated", "Item", ids["slugged"], {"name": ["slug me", "slugged"]})]
        assert ids["skus"] == ["A1", "B2"]
        [bulk] = project.events("place.bulk")
        assert (bulk["payload"]["columns"], bulk["payload"]["ids"]) == (["name"], [place])


class TestExpressionsAndQuerySets:
    def test_expressions_querysets_and_conflicts(self, project: Project) -> None:
        """An F() or Now() value is recorded as the value the database computed (never the expression, no
        crash); update() with F(), slices refused as failed attempts, ordered and select_for_update() querysets
        (no transaction needed), deferred fields, update_fields=[], get_or_create/update_or_create,
        select_for_update, bulk_create on conflict."""
        ids = project.run("expressions_and_querysets")
        order = str(ids["order"])
        mine = [e for e in project.events("order.", "document.", "sku.") if e.get("target_id") in (order, None)
                or e["event_type"].startswith(("document.", "sku."))]
        kinds = [(e["event_type"], changes(e) if "changes" in e["payload"] else e["payload"].get("columns"))
                 for e in mine]
        assert kinds[:2] == [("order.created", {"customer": [None, None], "status": [None, "new"],
                                                "total": [None, "10.00"]}),
                             ("order.updated", {"total": ["10.00", "11.00"]})]
        [doc] = project.events("document.")
        assert doc["event_type"] == "document.created"
        assert dt.datetime.fromisoformat(changes(doc)["due"][1]) == dt.datetime.fromisoformat(ids["due"])
        bulk = [e for e in mine if e["event_type"].startswith("order.bulk")]
        assert [(e["event_type"], e["payload"]["columns"], e["payload"].get("outcome")) for e in bulk] == [
            ("order.bulk_updated", ["total"], None),
            ("order.bulk_update_attempted", ["status"], "failed"),
            ("order.bulk_updated", ["status"], None),
            ("order.bulk_updated", ["status"], None)]
        assert bulk[1]["payload"]["error"] == "TypeError"
        assert "slice" in ids["sliced"]
        updates = [changes(e) for e in mine if e["event_type"] == "order.updated"]
        assert updates == [{"total": ["10.00", "11.00"]}, {"status": ["ordered", "deferred"]},
                           {"status": ["deferred", "locked"]}]
        goc = [e for e in project.events("order.") if e.get("target_id") not in (order, None)]
        assert [(e["event_type"], changes(e).get("total")) for e in goc] == [
            ("order.created", [None, "1.00"]), ("order.updated", ["1.00", "2.00"])]
        assert (ids["made"], ids["updated"], ids["total"]) == (True, False, "12.00")
        skus = [(e["event_type"], e["payload"].get("on_conflict"), e["payload"].get("ids"),
                 e["payload"].get("ids_unknown")) for e in project.events("sku.")]
        assert skus == [("sku.created", None, None, None), ("sku.bulk_created", "update", ["A1", "B2"], None),
                        ("sku.bulk_created", "ignore", ["A1"], None)]  # given keys, written or skipped
        assert ids["skus"] == {"A1": "new", "B2": "b"}


class TestHostileValues:
    def test_control_characters_binary_json_datetimes_and_huge_values(self, project: Project) -> None:
        """Control characters and nested JSON kept exactly, bytes as base64, a naive datetime as the instant Django
        stores (the default zone's; saving it again is no change), a file as its name, a duration in ISO 8601; a
        value too large for an event refuses the save."""
        ids = project.run("hostile_values")
        events = project.events("document.")
        assert [e["event_type"] for e in events] == ["document.created", "document.updated", "document.updated"]
        created, moved, blob = (changes(e) for e in events)
        assert created["title"] == [None, "a\x01b\x1b[31m\u2028\r\n"]
        assert created["data"] == [None, {"a": [1, {"b": None, "c": ["\x07"]}]}]
        assert (created["blob"], created["due"], created["day"]) == (
            [None, "AP8="], [None, "2026-03-01T12:00:00.000000Z"], [None, "2026-03-01"])
        assert moved == {"due": ["2026-03-01T12:00:00.000000Z", "2026-03-01T18:00:00.000000Z"]}
        assert blob == {"blob": ["AP8=", "AQI="], "attachment": ["", "docs/a.pdf"], "took": [None, "P0DT01H02M00S"]}
        assert ids["refused"].startswith("EventError")
        assert "max_event_bytes" in ids["refused"]
        assert ids["body_len"] == 0


class TestTransactions:
    def test_savepoints_two_databases_atomic_requests_and_test_cases(self, project: Project) -> None:
        """durable blocks, three-deep savepoints with the middle one rolled back, set_rollback, an IntegrityError
        caught by a savepoint, on_commit order, two databases rolling back apart, captureOnCommitCallbacks,
        ATOMIC_REQUESTS, and a statement failing outside any transaction at the end of the process."""
        ids = project.run("transactions_everywhere", atomic_requests="1",
                          other_db=str(project.spool.parent / "other.sqlite3"))
        order, user = str(ids["order"]), f"user:{ids['user']}"
        seen = [(e["event_type"], e["payload"].get("outcome"), changes(e).get("status", [None, None])[1],
                 e["target_id"]) for e in project.events("order.", "sku.")]
        assert seen == [
            ("order.created", None, "durable", order),
            ("order.update_attempted", "rolled_back", "l2", order),
            ("order.update_attempted", "rolled_back", "l3", order),
            ("order.updated", None, "l1", order),
            ("order.update_attempted", "rolled_back", "set_rollback", order),
            ("order.updated", None, "ordered", order),
            ("sku.create_attempted", "failed", None, "S1"),
            ("order.update_attempted", "rolled_back", "undone", order),
            ("sku.created", None, None, "S1"),
            ("sku.create_attempted", "rolled_back", None, "S2"),
            ("order.updated", None, "kept", order),
            ("order.updated", None, "captured_and_run", order),  # the test asked for its callbacks to run
            ("order.update_attempted", "rolled_back", "captured_not_run", order),
            ("order.update_attempted", "rolled_back", "paid_then_failed", order),  # ATOMIC_REQUESTS
            ("order.updated", None, "paid", order),
            ("sku.create_attempted", "failed", None, "S1"),  # left by the last statement, written at exit
        ]
        requests = project.events("order.update")[-2:]
        assert [e["actor_id"] for e in requests] == [user, user]
        assert ids["seen"][ids["seen"].index("callback before"):][:3] == [
            "callback before", "order.updated", "callback after"]
        assert (ids["status"], ids["statuses"], ids["captured"], ids["skus"]) == ("paid", [500, 200], 1, ["S1"])


class TestAsync:
    def test_async_orm_threads_and_streaming(self, project: Project) -> None:
        """asave/aupdate/adelete, an async view's sync_to_async calls on Django's thread and a pool thread, all
        attributed; a change made while a streaming body is produced is refused, not lost (the row is unchanged)."""
        ids = project.run("async_paths")
        mine = [(e["event_type"], e["actor_id"]) for e in project.events("order.")
                if e["actor_id"] == "user:7"]
        assert mine == [("order.created", "user:7"), ("order.updated", "user:7"), ("order.bulk_updated", "user:7"),
                        ("order.deleted", "user:7")]
        assert ids["rows"] == 1
        threaded = [(e["event_type"], changes(e).get("status", changes(e).get("total")), e["actor_id"])
                    for e in project.events("order.") if e.get("target_id") == str(ids["threaded"])
                    or (e["event_type"] == "order.bulk_updated" and e["payload"]["ids"] == [str(ids["threaded"])])]
        user = f"user:{ids['user']}"
        assert threaded[1:] == [("order.updated", ["new", "thread_sensitive"], user),
                                ("order.updated", ["thread_sensitive", "thread_pool"], user),
                                ("order.bulk_updated", None, user)]
        assert ids["status"] == 200
        assert ids["stream"].startswith("EventError")
        assert ids["streamed_status"] == "new"
        assert [e for e in project.events("order.") if e.get("target_id") == str(ids["streamed"])][1:] == []


class TestCascades:
    def test_cascades_set_null_and_deleted_link_targets(self, project: Project) -> None:
        """A deleted tag leaves an `updated` of each order that lost it; SET_NULL referrers are a bulk update;
        tracked rows deleted by an untracked row's cascade are `deleted`; a deleted owner is one `deleted`."""
        ids = project.run("cascades")
        first, second = (str(i) for i in ids["orders"])
        red, blue = ids["tags"]["red"], ids["tags"]["blue"]
        after_links = project.events("order.", "customer.", "ticket.")[5:]  # after the creations and links
        seen = [(e["event_type"], e.get("target_id"), changes(e).get("tags") or e["payload"].get("columns"))
                for e in after_links]
        tickets = [str(t) for t in ids["tickets"]]
        assert seen[:4] == [
            ("order.updated", first, [sorted([red, blue], key=str), [blue]]),
            ("order.updated", second, [[red], []]),
            ("order.bulk_updated", None, ["customer"]),
            ("customer.deleted", seen[3][1], None),
        ]
        assert sorted(after_links[2]["payload"]["ids"]) == sorted([first, second])
        assert sorted(seen[4:8]) == sorted([("ticket.created", t, None) for t in tickets]
                                           + [("ticket.deleted", t, None) for t in tickets])
        assert seen[8:] == [("order.deleted", first, None)]


class TestManyToMany:
    def test_either_side_of_the_relation(self, project: Project) -> None:
        """add, remove from the other side and clear are `updated` events with the id sets before and after."""
        ids = project.run("many_to_many")
        tag_changes = [changes(e)["tags"] for e in project.events("order.updated")]
        red, blue = ids["red"], ids["blue"]
        assert tag_changes == [[[], sorted([red, blue], key=str)], [sorted([red, blue], key=str), [blue]],
                               [[blue], []]]


class TestBulk:
    def test_bulk_calls_are_bulk_events(self, project: Project) -> None:
        """bulk_create, update() and bulk_update are one bulk event each with columns, criteria, row count and
        ids; QuerySet.delete() is a deleted event per row."""
        ids = project.run("bulk")
        keys = sorted(str(i) for i in ids["ids"])
        events = project.events("order.")
        assert [e["event_type"] for e in events if ".bulk" in e["event_type"]] == [
            "order.bulk_created", "order.bulk_updated", "order.bulk_updated"]  # bulk_update's own update() calls
        created, updated, bulk_updated = events[:3]                             # are not recorded twice
        assert created["event_type"] == "order.bulk_created"
        assert sorted(created["payload"]["ids"]) == keys
        assert created["payload"]["rowcount"] == 3
        assert updated["event_type"] == "order.bulk_updated"
        assert updated["payload"]["columns"] == ["status"]
        assert updated["payload"]["criteria"] == "status__exact AND total__gte"
        assert sorted(updated["payload"]["ids"]) == keys
        assert bulk_updated["payload"]["columns"] == ["total"]
        deleted = [e for e in events if e["event_type"] == "order.deleted"]
        assert sorted(e["target_id"] for e in deleted) == keys
        assert b"SECRET-BULK" not in project.spool_bytes()


class TestAuthEvents:
    def test_logins_passwords_groups_and_permissions(self, project: Project) -> None:
        """Failed and successful logins, logout, a password change (never the hash), group grants/revokes from
        either side, user and group permission changes; the login makes the user the request's actor."""
        ids = project.run("auth")
        user = str(ids["user"])
        assert ids["statuses"] == [401, 200, 200]
        by_type = {}
        for event in project.events("auth.", "access."):
            by_type.setdefault(event["event_type"], []).append(event)
        [changed] = by_type["auth.password_changed"]
        assert (changed["target_id"], changed["actor_id"]) == (user, "user:admin")
        assert [e["payload"]["role"] for e in by_type["access.role_granted"]] == ["staff"]
        assert [e["payload"]["role"] for e in by_type["access.role_revoked"]] == ["staff"]
        perms = [(e["target_type"], e["payload"]["permission"], e["payload"]["change"])
                 for e in by_type["access.permission_changed"]]
        assert perms == [("User", "shop.change_order", "granted"), ("Group", "shop.change_order", "granted")]
        [failed] = by_type["auth.login_failed"]
        assert (failed["actor_id"], failed["actor_ip"]) == ("anonymous", "203.0.113.5")
        [login] = by_type["auth.login_succeeded"]
        assert (login["actor_id"], login["target_id"], login["payload"]["method"]) == (
            f"user:{user}", user, "ModelBackend")
        [logout] = by_type["auth.logout"]
        assert logout["target_id"] == user
        [after_login] = project.events("order.updated")
        assert after_login["actor_id"] == f"user:{user}"
        assert ids["hash"].encode() not in project.spool_bytes()
        assert b"second-password" not in project.spool_bytes()


class TestMiddleware:
    def test_sync_and_async_views_are_attributed(self, project: Project) -> None:
        """The logged-in user is the actor on a sync and an async view; X-Forwarded-For and X-Request-ID count
        only from a trusted proxy; the request id is echoed."""
        ids = project.run("web")
        by_target = {e["target_id"]: e for e in project.events("order.updated")}
        sync, async_ = by_target[str(ids["sync_order"])], by_target[str(ids["async_order"])]
        assert sync["actor_id"] == async_["actor_id"] == f"user:{ids['user']}"
        assert sync["actor_ip"] == "203.0.113.9"
        assert sync["payload"]["request_id"] == ids["sync_request_id"] != "req-forged"
        assert (async_["actor_ip"], async_["payload"]["request_id"]) == ("198.51.100.7", "req-async-1")
        assert ids["async_request_id"] == "req-async-1"

    def test_the_actor_holds_when_the_transaction_outlives_the_request(self, project: Project) -> None:
        """A request's change committed or rolled back after the request ended (as in a TestCase) keeps the
        request's user as its actor (found trying the integration in a public Django project)."""
        ids = project.run("transaction_outlives_request")
        events = {e["target_id"]: e for e in project.events("order.update")}
        kept, undone = events[str(ids["kept"])], events[str(ids["undone"])]
        assert kept["event_type"] == "order.updated"
        assert undone["event_type"] == "order.update_attempted"
        assert kept["actor_id"] == undone["actor_id"] == f"user:{ids['user']}"

    def test_an_anonymous_change_is_refused_before_the_database(self, project: Project) -> None:
        """A change from an anonymous request raises EventError naming the fix, and the row is unchanged."""
        result = project.run("anonymous")
        assert result["raised"].startswith("EventError")
        assert result["status"] == "new"
        assert project.events("order.updated") == []


class TestCommands:
    def test_a_management_command_is_a_job(self, project: Project) -> None:
        """Changes made by `close_orders` carry actor job:close_orders and a run id."""
        project.run("command")
        closing = project.events("order.updated")
        assert [e["actor_id"] for e in closing] == ["job:close_orders"] * 2
        assert len({e["payload"]["job_run_id"] for e in closing}) == 1


class TestChecks:
    def test_a_model_without_a_target_fails_the_checks_and_its_saves(self, project: Project) -> None:
        """`manage.py check` fails with auditlock.E001 naming the missing section, and a save is refused."""
        result = project.run("fenced", models={"shop.Order": "Purchase"})
        assert "auditlock.E001" in result["check"]
        assert "[targets.Purchase]" in result["check"]
        assert result["save"].startswith("EventError")
        assert result["proxy_save"].startswith("EventError")
        assert result["rows"] == 0


class TestAdminHistory:
    def test_the_history_page_shows_the_trail_and_records_who_looked(self, project: Project) -> None:
        """A superuser sees the object's events (escaped) with a link from the change form; the look is
        recorded as audit_log.searched by that user; a staff user without permission is refused, unrecorded."""
        result = project.run("admin_history")
        assert result["status"] == 200
        assert result["form_link"]
        page = result["page"]
        assert "order.created" in page
        assert "order.updated" in page
        assert "&lt;b&gt;paid&lt;/b&gt;" in page
        assert "<b>paid</b>" not in page
        assert result["clerk_status"] == 403
        assert result["child_status"] == 200  # an untracked child's admin shows its tracked parent's trail
        assert "place.created" in result["child_page"]
        looked, _child = project.events("audit_log.")
        assert (looked["event_type"], looked["actor_id"]) == ("audit_log.searched", f"user:{result['boss']}")
        assert looked["payload"]["filters"] == {"target_type": "Order", "target_id": str(result["order"])}
        assert looked["payload"]["results"] == 2
