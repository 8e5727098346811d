"""Scenarios run in a fresh process each (`python -m tests.django_project.scenarios NAME`), so every one starts
Django with the settings its test chose; each prints one JSON object for the test to compare with the spool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {}


def scenario(function: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    SCENARIOS[function.__name__] = function
    return function


@scenario
def crud() -> dict[str, Any]:
    from auditlock import actor
    from tests.django_project.shop.models import Customer, Order

    with actor("user:7"):
        customer = Customer.objects.create(name="Ann", email="ann@example.com")
        order = Order.objects.create(customer=customer, total=Decimal("10.00"), note="SECRET-NOTE-MARKER")
        order_id = order.pk
        order.status = "paid"
        order.save()
        order.save()  # changes nothing: no event
        order.note = "SECRET-NOTE-2"
        order.save()  # a column outside the allowlist changed: an event with no values
        order.status = "shipped"
        order.save(update_fields=["status"])
        order.delete()
    return {"customer": customer.pk, "order": order_id}


@scenario
def rollback() -> dict[str, Any]:
    from django.db import transaction

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:7"):
        order = Order.objects.create()
        try:
            with transaction.atomic():
                order.status = "rolled"
                order.save()
                raise RuntimeError("undo")
        except RuntimeError:
            pass
        with transaction.atomic():
            order.status = "outer"
            order.save()
            try:
                with transaction.atomic():
                    order.total = Decimal("5.00")
                    order.save()
                    raise RuntimeError("undo inner")
            except RuntimeError:
                pass
    return {"order": order.pk}


@scenario
def many_to_many() -> dict[str, Any]:
    from auditlock import actor
    from tests.django_project.shop.models import Order, Tag

    with actor("user:7"):
        red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
        order = Order.objects.create()
        order.tags.add(red, blue)
        red.order_set.remove(order)  # the other side of the relation
        order.tags.clear()
    return {"order": order.pk, "red": red.pk, "blue": blue.pk}


@scenario
def bulk() -> dict[str, Any]:
    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:7"):
        created = Order.objects.bulk_create([Order(note="SECRET-BULK") for _ in range(3)])
        updated = Order.objects.filter(status="new", total__gte=0).update(status="paid")
        for order in created:
            order.total = Decimal("3.00")
        Order.objects.bulk_update(created, ["total"])
        Order.objects.filter(status="paid").delete()
    return {"ids": [o.pk for o in created], "updated": updated}


@scenario
def auth() -> dict[str, Any]:
    from django.contrib.auth.models import Group, Permission, User
    from django.test import Client

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        user = User.objects.create_user("ann", password="first-password")
        staff = Group.objects.create(name="staff")
        user.groups.add(staff)
        staff.user_set.remove(user)  # the other side
        perm = Permission.objects.get(codename="change_order")
        user.user_permissions.add(perm)
        staff.permissions.add(perm)
        user.set_password("second-password")
        user.save()
        order = Order.objects.create()
    client = Client(REMOTE_ADDR="203.0.113.5")
    failed = client.post("/login", {"username": "ann", "password": "wrong", "order": order.pk}).status_code
    ok = client.post("/login", {"username": "ann", "password": "second-password", "order": order.pk}).status_code
    bye = client.post("/logout").status_code
    return {"user": user.pk, "group": staff.pk, "order": order.pk, "hash": user.password,
            "statuses": [failed, ok, bye]}


@scenario
def web() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import AsyncClient, Client

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        user = User.objects.create_user("bob", password="pw")
        sync_order, async_order = Order.objects.create(), Order.objects.create()
    client = Client(REMOTE_ADDR="203.0.113.9")  # not a proxy: its X-Forwarded-For and X-Request-ID are ignored
    client.force_login(user)
    sync = client.post(f"/pay/{sync_order.pk}", HTTP_X_FORWARDED_FOR="10.9.9.9", HTTP_X_REQUEST_ID="req-forged")

    async def pay_async() -> Any:
        async_client = AsyncClient()  # the ASGI test peer is 127.0.0.1, a trusted proxy
        await async_client.aforce_login(user)
        return await async_client.post(f"/apay/{async_order.pk}",
                                       headers={"X-Forwarded-For": "198.51.100.7", "X-Request-ID": "req-async-1"})
    response = asyncio.run(pay_async())
    return {"user": user.pk, "sync_order": sync_order.pk, "async_order": async_order.pk,
            "sync_request_id": sync.headers.get("X-Request-ID"), "async_status": response.status_code,
            "async_request_id": response.headers.get("X-Request-ID")}


@scenario
def transaction_outlives_request() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.test import Client

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        user = User.objects.create_user("dee", password="pw")
        kept, undone = Order.objects.create(), Order.objects.create()
    client = Client()
    client.force_login(user)
    with transaction.atomic():  # as a test case's transaction: it ends after the request did
        client.post(f"/pay/{kept.pk}")
    try:
        with transaction.atomic():
            client.post(f"/pay/{undone.pk}")
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    return {"user": user.pk, "kept": kept.pk, "undone": undone.pk}


@scenario
def anonymous() -> dict[str, Any]:
    from django.test import Client

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        order = Order.objects.create()
    try:
        Client().post(f"/pay/{order.pk}")
    except Exception as exc:
        raised = f"{type(exc).__name__}: {exc}"
    else:
        raised = None
    order.refresh_from_db()
    return {"raised": raised, "status": order.status}


@scenario
def failing_view() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        user = User.objects.create_user("cy", password="pw")
        order = Order.objects.create()
    client = Client(raise_request_exception=False)
    client.force_login(user)
    status = client.post(f"/failing/{order.pk}").status_code
    return {"order": order.pk, "user": user.pk, "status": status}


@scenario
def command() -> dict[str, Any]:
    from django.core.management import call_command

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        orders = [Order.objects.create(status="paid") for _ in range(2)]
    call_command("close_orders")
    return {"orders": [o.pk for o in orders]}


@scenario
def fenced() -> dict[str, Any]:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from auditlock import actor
    from tests.django_project.shop.models import Order

    try:
        call_command("check")
    except SystemCheckError as exc:
        check = str(exc)
    else:
        check = None
    from tests.django_project.shop.models import RushOrder

    def refused(model: Any) -> str | None:
        try:
            with actor("user:admin"):
                model.objects.create()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None
    save, proxy_save = refused(Order), refused(RushOrder)  # a proxy of a fenced model is fenced too
    return {"check": check, "save": save, "proxy_save": proxy_save, "rows": Order.objects.count()}


@scenario
def admin_history() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    from auditlock import actor
    from tests.django_project.shop.models import Order, Restaurant

    with actor("user:admin"):
        boss = User.objects.create_superuser("boss", password="pw")
        clerk = User.objects.create_user("clerk", password="pw", is_staff=True)  # staff, but no permission
        order = Order.objects.create()
        order.status = "<b>paid</b>"
        order.save()
    client = Client(REMOTE_ADDR="203.0.113.4")
    client.force_login(boss)
    page = client.get(f"/admin/shop/order/{order.pk}/audit-history/")
    form = client.get(f"/admin/shop/order/{order.pk}/change/")
    other = Client()
    other.force_login(clerk)
    refused = other.get(f"/admin/shop/order/{order.pk}/audit-history/")
    with actor("user:admin"):
        restaurant = Restaurant.objects.create(name="Luigi's")
    child = client.get(f"/admin/shop/restaurant/{restaurant.pk}/audit-history/")  # its tracked parent's trail
    return {"order": order.pk, "boss": boss.pk, "status": page.status_code, "page": page.content.decode(),
            "form_link": "audit-history/" in form.content.decode(), "clerk_status": refused.status_code,
            "child_status": child.status_code, "child_page": child.content.decode()}


@scenario
def keys_and_inheritance() -> dict[str, Any]:
    import uuid

    from auditlock import actor
    from tests.django_project.shop.models import Car, Item, Place, Restaurant, RushOrder, Sku, Ticket

    with actor("user:7"):
        item = Item.objects.create(name="a")  # UUID key from its default
        item.name = "b"
        item.save()
        preset = Item(id=uuid.uuid4(), name="preset")  # a preset key: _state.adding, not a row yet
        preset.save()
        sku = Sku.objects.create(code="A1", name="x")
        sku.code = "B2"  # a key changed in place: Django inserts a second row
        sku.save()
        restaurant = Restaurant.objects.create(name="Luigi's", serves="pizza")  # tracked parent, untracked child
        restaurant.name = "Mario's"
        restaurant.save()
        restaurant.serves = "pasta"  # the child's own column: the tracked parent's row is unchanged, no event
        restaurant.save()
        place = restaurant.pk
        Restaurant.objects.filter(pk=place).update(name="Bulk")
        restaurant.delete()
        car = Car.objects.create(plate="P1", wheels=3)  # tracked child, untracked parent
        car.plate, car.wheels = "P2", 4
        car.save()
        car_id = car.pk
        car.delete()
        rush = RushOrder.objects.create(status="rush")  # a proxy of the tracked Order
        rush.status = "rushed"
        rush.save()
        ticket = Ticket.objects.create(status="closed")  # hidden by its default manager
        ticket.status = "reopened"
        ticket.save()
        slugged = Item.objects.create(name="slug me")  # a post_save receiver saves it again
    return {"item": str(item.pk), "preset": str(preset.pk), "skus": sorted(Sku.objects.values_list("code", flat=True)),
            "place": place, "places_left": Place.objects.count(), "car": car_id, "rush": rush.pk, "ticket": ticket.pk,
            "slugged": str(slugged.pk)}


@scenario
def expressions_and_querysets() -> dict[str, Any]:
    from django.db import transaction
    from django.db.models import F
    from django.db.models.functions import Now

    from auditlock import actor
    from tests.django_project.shop.models import Document, Order, Sku

    result: dict[str, Any] = {}
    with actor("user:7"):
        order = Order.objects.create(total=Decimal("10.00"))
        order.total = F("total") + 1  # an expression: the event holds the value the database computed
        order.save()
        order.refresh_from_db()
        order.save()  # refreshed: nothing changed, no event
        doc = Document.objects.create(due=Now())  # an expression on insert
        Order.objects.filter(pk=order.pk).update(total=F("total") + 1)
        try:
            Order.objects.all()[:1].update(status="sliced")  # Django refuses: a failed attempt, nothing written
        except TypeError as exc:
            result["sliced"] = str(exc)
        Order.objects.order_by("-total").filter(pk=order.pk).update(status="ordered")
        Order.objects.select_for_update().filter(pk=order.pk).update(status="ordered")  # no transaction needed
        deferred = Order.objects.only("status").get(pk=order.pk)  # Django saves the loaded fields only
        deferred.status = "deferred"
        deferred.save()
        deferred.save(update_fields=[])  # Django saves nothing and sends no signal
        made = Order.objects.get_or_create(status="goc", defaults={"total": Decimal("1.00")})[1]
        updated = Order.objects.update_or_create(status="goc", defaults={"total": Decimal("2.00")})[1]
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            locked.status = "locked"
            locked.save()
        Sku.objects.create(code="A1", name="old")
        upserted = Sku.objects.bulk_create([Sku(code="A1", name="new"), Sku(code="B2", name="b")],
                                           update_conflicts=True, unique_fields=["code"], update_fields=["name"])
        Sku.objects.bulk_create([Sku(code="A1", name="ignored")], ignore_conflicts=True)
    doc.refresh_from_db()
    order.refresh_from_db()
    result.update({"order": order.pk, "total": order.total, "doc": doc.pk, "due": doc.due, "made": made,
                   "updated": updated, "upserted": [s.pk for s in upserted],
                   "skus": dict(Sku.objects.values_list("code", "name"))})
    return result


@scenario
def hostile_values() -> dict[str, Any]:
    import datetime as dt
    import warnings

    from auditlock import actor
    from tests.django_project.shop.models import Document

    due = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    with actor("user:7"):
        doc = Document.objects.create(title="a\x01b\x1b[31m\u2028\r\n", blob=b"\x00\xff",
                                      data={"a": [1, {"b": None, "c": ["\x07"]}]}, due=due, day=due.date())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # Django warns of the naive datetime
            doc.due = due.replace(tzinfo=None)  # naive: stored in the default zone (America/Chicago), 18:00Z
            doc.save()
            doc.due = dt.datetime(2026, 3, 1, 12, 0)  # the same naive value again: no change, no event
            doc.save()
        doc.blob = memoryview(b"\x01\x02")
        doc.attachment = "docs/a.pdf"  # a FieldFile once read back
        doc.took = dt.timedelta(hours=1, minutes=2)
        doc.save()
        try:
            doc.body = "x" * 70_000  # over max_event_bytes: refused before the write
            doc.save()
        except Exception as exc:
            refused = f"{type(exc).__name__}: {exc}"
        else:
            refused = None
    doc.refresh_from_db()
    return {"doc": doc.pk, "refused": refused, "body_len": len(doc.body)}


@scenario
def transactions_everywhere() -> dict[str, Any]:  # run with ATOMIC_REQUESTS and the second database
    import logging

    from django.contrib.auth.models import User
    from django.db import IntegrityError, transaction
    from django.test import Client, TestCase

    from auditlock import actor
    from tests.django_project.shop.models import Order, Sku

    seen: list[str] = []  # on_commit callbacks and audit events, in the order they ran

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(str(record.msg))
    logging.getLogger("auditlock.django").addHandler(Seen())
    with actor("user:7"):
        with transaction.atomic(durable=True):
            order = Order.objects.create(status="durable")
        with transaction.atomic():
            order.status = "l1"
            order.save()
            try:
                with transaction.atomic():
                    order.status = "l2"
                    order.save()
                    with transaction.atomic():  # released into the middle one, which rolls back
                        order.status = "l3"
                        order.save()
                    raise RuntimeError("undo the middle one")
            except RuntimeError:
                pass
            order.refresh_from_db()
        with transaction.atomic():
            order.status = "set_rollback"
            order.save()
            transaction.set_rollback(True)
        with transaction.atomic():
            transaction.on_commit(lambda: seen.append("callback before"))
            order.status = "ordered"
            order.save()
            transaction.on_commit(lambda: seen.append("callback after"))
        with transaction.atomic(using="other"):
            Sku.objects.create(code="S1")
            try:
                with transaction.atomic(using="other"):
                    Sku.objects.create(code="S1")  # IntegrityError, caught by the savepoint
            except IntegrityError:
                pass
            try:
                with transaction.atomic():  # "default" rolls back, "other" commits
                    order.status = "undone"
                    order.save()
                    raise RuntimeError("undo default only")
            except RuntimeError:
                pass
        with transaction.atomic():  # "other" rolls back inside a committing "default"
            order.status = "kept"
            order.save()
            try:
                with transaction.atomic(using="other"):
                    Sku.objects.create(code="S2")
                    raise RuntimeError("undo other only")
            except RuntimeError:
                pass
        with transaction.atomic():  # a TestCase: its transaction rolls back at the end
            with TestCase.captureOnCommitCallbacks(execute=True):
                order.status = "captured_and_run"
                order.save()
            transaction.set_rollback(True)
        with transaction.atomic():
            with TestCase.captureOnCommitCallbacks() as captured:
                order.status = "captured_not_run"
                order.save()
            transaction.set_rollback(True)
        user = User.objects.create_user("eve", password="pw")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    statuses = [client.post(f"/pay_then_fail/{order.pk}").status_code, client.post(f"/pay/{order.pk}").status_code]
    with actor("user:7"), contextlib.suppress(IntegrityError):
        Sku.objects.create(code="S1")  # fails outside any transaction, and nothing audited follows it
    order.refresh_from_db()
    return {"order": order.pk, "user": user.pk, "status": order.status, "statuses": statuses,
            "captured": len(captured), "seen": seen, "skus": sorted(Sku.objects.values_list("code", flat=True))}


@scenario
def async_paths() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import AsyncClient, Client

    from auditlock import actor
    from tests.django_project.shop.models import Order

    with actor("user:admin"):
        user = User.objects.create_user("fay", password="pw")
        threaded, streamed = Order.objects.create(), Order.objects.create()

    async def orm() -> Any:
        with actor("user:7"):
            order = Order(status="async")
            await order.asave()
            order.status = "async2"
            await order.asave()
            rows = await Order.objects.filter(pk=order.pk).aupdate(total=3)
            await order.adelete()
        return rows

    async def view() -> int:
        client = AsyncClient()
        await client.aforce_login(user)
        return (await client.post(f"/apay_threads/{threaded.pk}")).status_code
    rows = asyncio.run(orm())
    status = asyncio.run(view())
    client = Client()
    client.force_login(user)
    response = client.get(f"/stream/{streamed.pk}")
    try:
        body = b"".join(response.streaming_content).decode()
    except Exception as exc:
        body = f"{type(exc).__name__}: {exc}"
    streamed.refresh_from_db()
    return {"user": user.pk, "threaded": threaded.pk, "status": status, "rows": rows,
            "stream": body, "streamed_status": streamed.status, "streamed": streamed.pk}


@scenario
def cascades() -> dict[str, Any]:
    from auditlock import actor
    from tests.django_project.shop.models import Customer, Order, Shelf, Tag, Ticket

    with actor("user:7"):
        customer = Customer.objects.create(name="c")
        first, second = Order.objects.create(customer=customer), Order.objects.create(customer=customer)
        red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
        first.tags.add(red, blue)
        second.tags.add(red)
        tags = {"red": red.pk, "blue": blue.pk}
        red.delete()  # an untracked row a tracked many-to-many field points to
        customer.delete()  # a tracked row whose tracked referrers are SET_NULL
        shelf = Shelf.objects.create()
        tickets = [Ticket.objects.create(shelf=shelf).pk for _ in range(2)]
        Shelf.objects.filter(pk=shelf.pk).delete()  # an untracked row whose cascade deletes tracked rows
        first_id = first.pk
        first.delete()  # a tracked owner: its link rows go with it
    return {"orders": [first_id, second.pk], "tags": tags, "tickets": tickets}


def main() -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    for alias in settings.DATABASES:
        call_command("migrate", run_syncdb=True, verbosity=0, skip_checks=True, database=alias)
    print(json.dumps(SCENARIOS[sys.argv[1]](), default=str))


if __name__ == "__main__":
    main()
